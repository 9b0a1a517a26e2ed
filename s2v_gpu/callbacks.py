"""Hydra callbacks: a sweep summary (how each swept value changed the patch counts, and which jobs
failed or wrote nothing, with the reason)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("s2v_gpu.sweep")

#: Jobs of the last multirun that failed or wrote nothing ("job N: reason"); the app exits 1 if any.
SWEEP_FAILED: list[str] = []


def record_job(output_dir: Path, status: str, reason: str = "", summary: dict | None = None) -> None:
    """Write a job's ``summary.json`` into its Hydra output folder (``status``: ok, empty, refused)."""
    from .writer import write_json

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "summary.json", {"status": status, "reason": reason, **(summary or {})})


class SweepSummary(Callback):
    """After a multirun, gather each job's ``summary.json`` into ``sweep_summary.tsv`` in the sweep
    folder, log it as a table, and mark the sweep failed when a job failed or wrote nothing."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = []
        SWEEP_FAILED.clear()
        for job_dir in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()):
            summary_file = job_dir / "summary.json"
            s = json.loads(summary_file.read_text()) if summary_file.exists() else {
                "status": "failed", "reason": "the job wrote no summary (see its log)"}
            overrides_file = job_dir / ".hydra" / "overrides.yaml"
            overrides = ""
            if overrides_file.exists():
                overrides = " ".join(line[2:].strip() for line in overrides_file.read_text().splitlines()
                                     if line.startswith("- "))
            status = s.get("status", "ok")
            if status != "ok":
                SWEEP_FAILED.append(f"job {job_dir.name} ({overrides}): {status}: {s.get('reason', '')}")
            rows.append((job_dir.name, overrides, s.get("site", ""), s.get("pairs_in_dataset", 0),
                         s.get("patches_in_dataset", 0), s.get("skipped", 0), s.get("failed", 0), status,
                         s.get("reason", "").replace("\t", " ").replace("\n", " ")))
        if not rows:
            return
        header = ("job", "overrides", "site", "pairs", "patches", "skipped", "failed", "status", "reason")
        lines = ["\t".join(header)] + ["\t".join(str(v) for v in r) for r in rows]
        (sweep_dir / "sweep_summary.tsv").write_text("\n".join(lines) + "\n")
        log.info("sweep summary (%s):\n%s", sweep_dir / "sweep_summary.tsv", "\n".join(lines))
