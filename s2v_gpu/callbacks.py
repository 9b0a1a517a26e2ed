"""Hydra callbacks: a sweep summary (how each swept value changed the patch counts)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("s2v_gpu.sweep")


class SweepSummary(Callback):
    """After a multirun, gather each job's ``summary.json`` into ``sweep_summary.tsv`` in the sweep
    folder and log it as a table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        for summary_file in sorted(sweep_dir.glob("*/summary.json")):
            s = json.loads(summary_file.read_text())
            overrides_file = summary_file.parent / ".hydra" / "overrides.yaml"
            overrides = ""
            if overrides_file.exists():
                overrides = " ".join(line[2:].strip() for line in overrides_file.read_text().splitlines()
                                     if line.startswith("- "))
            rows.append((summary_file.parent.name, overrides, s.get("site", ""), s.get("pairs_in_dataset", 0),
                         s.get("patches_in_dataset", 0), s.get("skipped", 0), s.get("failed", 0)))
        if not rows:
            return
        header = ("job", "overrides", "site", "pairs", "patches", "skipped", "failed")
        lines = ["\t".join(header)] + ["\t".join(str(v) for v in r) for r in rows]
        (sweep_dir / "sweep_summary.tsv").write_text("\n".join(lines) + "\n")
        log.info("sweep summary (%s):\n%s", sweep_dir / "sweep_summary.tsv", "\n".join(lines))
