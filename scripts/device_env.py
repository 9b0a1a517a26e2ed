"""The machine a device check ran on, and the check's one-line summary (used by device_check.sh).

    python scripts/device_env.py OUT.json          # GPU model, torch / CUDA versions, CPU count
    python scripts/device_env.py --summary OUTDIR  # one line from OUTDIR/steps.tsv and the bench JSON
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from pathlib import Path


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "gpu": None, "gpu_memory_gb": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
    try:
        import kornia
        import rasterio

        env.update(kornia=kornia.__version__, rasterio=rasterio.__version__, gdal=rasterio.__gdal_version__)
    except ImportError as exc:
        env["import_error"] = str(exc)
    return env


def summary(out: Path) -> str:
    steps = list(csv.DictReader((out / "steps.tsv").open(), delimiter="\t")) if (out / "steps.tsv").exists() else []
    failed = [f"{s['step']} {s['status']}" for s in steps if s["status"] != "ok"]
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else {}
    parts = [f"device_check: {env.get('gpu') or 'cpu'} torch {env.get('torch', '?')}"]
    for name in ("bench_quarter", "bench_full"):
        path = out / f"{name}.json"
        if path.exists():
            b = json.loads(path.read_text())
            generated = f"generated in {b['generation_s']:.0f}s, " if b.get("generation_s") is not None else ""
            parts.append(f"{name} {b['size_px']}px: {generated}pipeline {b['pipeline_s']:.2f}s = "
                         f"{b['pipeline_over_io_floor']:.2f}x floor, registration {b['registration_s']:.2f}s"
                         f" (OpenCV ref {b['reference_registration_s']:.2f}s, like for like "
                         f"{b.get('same_budget_registration_s', float('nan')):.2f}s)")
    parts.append(f"steps ok {len(steps) - len(failed)}/{len(steps)}" + (f" [{'; '.join(failed)}]" if failed else ""))
    return " | ".join(parts)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--summary"]:
        print(summary(Path(argv[1])))
        return 0
    Path(argv[0]).write_text(json.dumps(environment(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
