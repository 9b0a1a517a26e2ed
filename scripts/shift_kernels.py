"""Positional bias of sub-pixel shift kernels on real Sentinel-2 texture (how the shift kernel was chosen).

    python scripts/shift_kernels.py [--shared ../shared]

For each candidate kernel and fractional shift t, the image is shifted by t along x (out(p) =
image(p + t)) and compared with the same shift made by a quintic spline (scipy.ndimage, order 5):
the residual translation between the two (one Gauss-Newton step over the interior) is the kernel's
positional bias in pixels. Images: the real T33UUU B03 crops and the T38KPD L2A stacks (10 bands) of
``shared/data/real``. Prints the worst |bias| over t and images, per kernel, and the bias at
t = 0.25 / 0.5 / 0.75.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from s2v_gpu.resample import KERNELS, shift_1d

T = [0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9]


def real_images(shared: Path) -> list[np.ndarray]:
    real = shared / "data" / "real"
    out = []
    for f in sorted((real / "s2_pair_t33uuu").glob("*.jp2")):
        with rasterio.open(f) as src:  # 512 px around the place where AROSICS publishes the shift
            col, row = ~src.transform * (339611.0, 5856426.0)
            window = Window(int(col) - 256, int(row) - 256, 512, 512)
            out.append(src.read(1, window=window).astype(np.float64))
    for f in sorted((real / "s2_stacks_t38kpd").glob("*_FRE_STACK.tif")):
        with rasterio.open(f) as src:
            out += [b.astype(np.float64) for b in src.read()[[0, 1, 2, 6]]]  # B2 B3 B4 B8 (native 10 m)
    return out


def reference_shift(image: np.ndarray, t: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.shift(image, (0.0, -t), order=5, mode="mirror")


def positional_bias(candidate: np.ndarray, reference: np.ndarray, border: int = 12) -> float:
    """The x translation d minimising ||candidate(p) - reference(p + d)||^2 (one Gauss-Newton step)."""
    c, r = candidate[border:-border, border:-border], reference[border:-border, border:-border]
    g = np.gradient(reference, axis=1)[border:-border, border:-border]
    return float(((c - r) * g).sum() / (g * g).sum())


def measure(images: list[np.ndarray], kernels=None) -> dict[str, dict[float, float]]:
    """Worst |bias| over the images at each t, per kernel (px)."""
    out = {}
    for name in kernels or KERNELS:
        out[name] = {}
        for t in T:
            biases = []
            for img in images:
                x = torch.from_numpy(img)[None, None]
                shifted = shift_1d(x, t, dim=3, kernel=name)[0, 0].numpy()
                biases.append(positional_bias(shifted, reference_shift(img, t)))
            out[name][t] = max(biases, key=abs)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = parser.parse_args(argv)
    images = real_images(Path(args.shared))
    if not images:
        print(f"no real images under {args.shared}/data/real", file=sys.stderr)
        return 2
    results = measure(images)
    print(f"{'kernel':<14}{'max |bias| px':>14}{'t=0.25':>10}{'t=0.5':>10}{'t=0.75':>10}")
    for name, by_t in results.items():
        worst = max(abs(v) for v in by_t.values())
        print(f"{name:<14}{worst:>14.4f}{by_t[0.25]:>10.4f}{by_t[0.5]:>10.4f}{by_t[0.75]:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
