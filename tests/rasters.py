"""Rewriting the rasters of a product copy for the hostile-input tests (real GeoTIFFs, through rasterio)."""

import numpy as np
import rasterio


def rewrite_band(path, dtype, values=None, nodata=None) -> np.ndarray:
    """Rewrite band 1 of ``path`` as ``dtype`` (its own values, or ``values``) with the GeoTIFF no-data
    tag ``nodata`` (None: no tag); the grid, CRS and layout are kept. Returns the values it held."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
    profile.update(dtype=dtype, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((data if values is None else values).astype(dtype)[None])
    return data
