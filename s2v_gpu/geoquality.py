"""Geometric quality of the output in the terms the field uses: KARIOS's and ESA's.

ESA's open geometric assessment tool (KARIOS) reports, for an image pair, the mean, the standard
deviation and the RMSE of the displacement along each axis and its CE90; ESA states Sentinel-2's
multi-temporal registration as a CE95. Here the displacements are the per-patch residual
misregistrations measured after our registration (``patches.tsv``: a feature at q in VENuS is at
q + (dx, dy) in Sentinel-2), of the patches whose measurement converged. CE90 and CE95 are the
radii that hold 90 % and 95 % of the residual vectors (empirical percentiles, linear interpolation
between ranks), in metres and in low-resolution pixels (10 m or 20 m, the band group's).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GEO_STATS", "GROUP_RESOLUTION_M", "geo_columns", "geometric_quality"]

#: statistic -> what it is (the column names of pairs_details.tsv add the group: geo10_rmse_m)
GEO_STATS = {
    "n": "patches the statistics rest on (converged measurements)",
    "mean_dx_m": "mean residual along x (east), m", "mean_dy_m": "mean residual along y (north), m",
    "std_dx_m": "standard deviation along x, m", "std_dy_m": "standard deviation along y, m",
    "rmse_m": "root mean square of the residual vector's length, m",
    "ce90_m": "radius holding 90 % of the residual vectors, m", "ce95_m": "radius holding 95 %, m",
    "ce90_px": "CE90 in low-resolution pixels", "ce95_px": "CE95 in low-resolution pixels",
}
#: band group -> its Sentinel-2 resolution (the low-resolution pixel of the CE in pixels)
GROUP_RESOLUTION_M = {"res10": 10.0, "res20": 20.0}


def geometric_quality(dx, dy, resolution_m: float) -> dict[str, float]:
    """The statistics of :data:`GEO_STATS` for residual vectors ``(dx, dy)`` in metres.

    Args:
        dx: residuals along x, one per patch (any 1-d sequence; NaNs are left out).
        dy: residuals along y, same length.
        resolution_m: the low-resolution pixel, for ``ce90_px`` and ``ce95_px``.

    Returns:
        The statistics (NaN when no patch is left; standard deviations with ``n - 1``).
    """
    dx, dy = np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64)
    keep = np.isfinite(dx) & np.isfinite(dy)
    dx, dy = dx[keep], dy[keep]
    n = int(dx.size)
    if n == 0:
        return {"n": 0, **{k: math.nan for k in GEO_STATS if k != "n"}}
    radial = np.hypot(dx, dy)
    ce90, ce95 = (float(np.percentile(radial, q)) for q in (90, 95))
    return {"n": n, "mean_dx_m": float(dx.mean()), "mean_dy_m": float(dy.mean()),
            "std_dx_m": float(dx.std(ddof=1)) if n > 1 else math.nan,
            "std_dy_m": float(dy.std(ddof=1)) if n > 1 else math.nan,
            "rmse_m": float(np.sqrt(np.mean(radial**2))), "ce90_m": ce90, "ce95_m": ce95,
            "ce90_px": ce90 / resolution_m, "ce95_px": ce95 / resolution_m}


def geo_columns(patches: dict) -> dict[str, str]:
    """The ``pairs_details.tsv`` cells of one pair from its per-patch residuals (``res10_dx_m``... and
    ``res10_converged``...: tensors or arrays), both band groups, formatted as the table writes them."""
    cells = {}
    for group, res in GROUP_RESOLUTION_M.items():
        ok = np.asarray(patches[f"{group}_converged"], dtype=bool)
        stats = geometric_quality(np.asarray(patches[f"{group}_dx_m"])[ok], np.asarray(patches[f"{group}_dy_m"])[ok],
                                  res)
        for key, value in stats.items():
            cells[f"geo{group[3:]}_{key}"] = str(value) if key == "n" else f"{value:.4f}"
    return cells
