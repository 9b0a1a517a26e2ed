"""``python -m s2v_gpu.report paths.dataset=DATASET [report.n_patches=200 ...]``: the Hydra entry point
(exit 1 when the folder holds no pair, 2 for a configuration error)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .metrics import ReportConfig

log = logging.getLogger("s2v_gpu.report")


@dataclass
class ReportPaths:
    dataset: str = "dataset"
    out: str | None = None  # default: <dataset>/report


@dataclass
class ReportAppConfig:
    paths: ReportPaths = field(default_factory=ReportPaths)
    report: ReportConfig = field(default_factory=ReportConfig)


def report_app(action: Callable) -> None:
    """Run ``action(dataset, report_config, out)`` as a Hydra app on the ``report`` config."""
    from ..app import hydra_app

    def job(cfg: ReportAppConfig) -> int:
        try:
            action(cfg.paths.dataset, cfg.report, cfg.paths.out)
        except FileNotFoundError as exc:
            log.error("%s", exc)
            return 1
        return 0

    hydra_app("report", ReportAppConfig, job)


def main() -> None:
    from .build import build_report

    report_app(build_report)


if __name__ == "__main__":
    sys.exit(main())
