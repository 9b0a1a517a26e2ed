"""``python -m s2v_gpu.report paths.dataset=DATASET [report.n_patches=200 ...]``: the Hydra entry point
(exit 1 when the folder holds no pair, 2 for a configuration error or a file in the way that the
project did not write, named on one line)."""

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


def validate_report(cfg: ReportConfig) -> None:
    """Refuse values that would crash the report half-way or flag nothing / everything, naming the key.

    Raises:
        ConfigError: the first problem found.
    """
    import math

    from ..config import refuse_failed

    refuse_failed([
        (cfg.n_patches >= 1, f"report.n_patches={cfg.n_patches} must be >= 1"),
        (cfg.max_pairs >= 1, f"report.max_pairs={cfg.max_pairs} must be >= 1"),
        (math.isfinite(cfg.max_mae) and cfg.max_mae > 0, f"report.max_mae={cfg.max_mae} must be a finite number > 0"),
        (math.isfinite(cfg.max_rmse) and cfg.max_rmse > 0,
         f"report.max_rmse={cfg.max_rmse} must be a finite number > 0"),
        (cfg.weak_min_matches >= 0, f"report.weak_min_matches={cfg.weak_min_matches} must be >= 0"),
        (math.isfinite(cfg.weak_max_spread_m) and cfg.weak_max_spread_m > 0,
         f"report.weak_max_spread_m={cfg.weak_max_spread_m} must be a finite number > 0"),
        (cfg.sample_patches >= 1, f"report.sample_patches={cfg.sample_patches} must be >= 1 (patches in the figure)"),
        (10 <= cfg.dpi <= 600, f"report.dpi={cfg.dpi} must be in [10, 600]"),
    ])


def report_app(action: Callable) -> None:
    """Run ``action(dataset, report_config, out)`` as a Hydra app on the ``report`` config."""
    from ..app import hydra_app

    def job(cfg: ReportAppConfig) -> int:
        validate_report(cfg.report)
        try:
            action(cfg.paths.dataset, cfg.report, cfg.paths.out)
        except FileNotFoundError as exc:
            log.error("%s", exc)
            return 1
        return 0

    from ..ownership import ForeignFileError

    hydra_app("report", ReportAppConfig, job, refusals=(ForeignFileError,))


def main() -> None:
    from .build import build_report

    report_app(build_report)


if __name__ == "__main__":
    sys.exit(main())
