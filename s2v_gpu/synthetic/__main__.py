"""``python -m s2v_gpu.synthetic OUT [--preset tiny|demo|full] [--zip] [--seed N] [--size-px N] [--device D]``

Writes a synthetic Theia archive (VENuS site + Sentinel-2 tile window, several dates) and its
``ground_truth.json`` into OUT.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from .config import preset
from .generate import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2v_gpu.synthetic", description=__doc__.splitlines()[2])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    parser.add_argument("--zip", action="store_true", help="write Theia .zip archives instead of folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size-px", type=int, default=None, help="VENuS site size in 5 m pixels")
    parser.add_argument("--site", default=None, help="site name (default SYNTH-1)")
    parser.add_argument("--s2-epsg", type=int, default=None, help="Sentinel-2 CRS (a neighbouring UTM zone)")
    parser.add_argument("--device", default="cpu",
                        help="where the landscape is rendered (cpu, cuda: same products, a full site in seconds)")
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"zip": args.zip, "seed": args.seed}
    for key, value in (("size_px", args.size_px), ("site", args.site), ("s2_epsg", args.s2_epsg)):
        if value is not None:
            overrides[key] = value
    start = time.perf_counter()
    archive = generate(preset(args.preset, **overrides), args.out, device)
    logging.getLogger("s2v_gpu.synthetic").info(
        "%d products written to %s in %.1f s", len(archive.products), archive.root, time.perf_counter() - start
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
