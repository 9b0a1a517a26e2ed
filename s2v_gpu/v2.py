"""``format=v2``: a site's patches as georeferenced GeoTIFFs, the layout of SEN2VENuS version 2.

At the end of a run, ``SITE/v2/`` receives ``{SITE}.zip`` (one folder per pair, five GeoTIFFs per
patch: int16 reflectance x 10000, DEFLATE inside the TIFF, stored uncompressed in the zip so GDAL
reads members directly, CRS and transform of the patch, band names, scale 1e-4) and ``index.csv``
(comma-separated, one row per patch) whose columns ``b2b3b4b8_10m``, ``b2b3b4b8_05m``,
``b5b6b7b8a_20m``, ``b5b6b7b8a_05m``, ``b11b12_20m`` are GDAL paths ``/vsizip/{SITE}.zip/...``
relative to ``SITE/v2/`` (CESBIO's training code reads them through GDAL), beside the pair, the
patch, the products and the residual misregistration of each patch. Built from the site's tensors,
so it is exactly the same data; the zip is rewritten whole (atomically) at each run.
"""

from __future__ import annotations

import csv
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from .bands import GROUP_10M, GROUP_20M
from .dataset import patch_geometries
from .layout import (
    RESIDUAL_COLUMNS,
    SCALE,
    SWIR_COLUMN,
    V2_DIR,
    pair_id_of_row,
    read_index_rows,
    read_patches,
)
from .licences import REST, SENTINEL2, VENUS, Licence, licence_of_file
from .ownership import site_owned_folder
from .writer import atomic_write

log = logging.getLogger(__name__)

#: v2 column -> (our index column, resolution of the patch (m), band names)
V2_COLUMNS = {
    "b2b3b4b8_10m": ("tensor_10m_b2b3b4b8", 10.0, GROUP_10M["s2"]),
    "b2b3b4b8_05m": ("tensor_05m_b2b3b4b8", 5.0, GROUP_10M["s2"]),
    "b5b6b7b8a_20m": ("tensor_20m_b5b6b7b8a", 20.0, GROUP_20M["s2"]),
    "b5b6b7b8a_05m": ("tensor_05m_b5b6b7b8a", 5.0, GROUP_20M["s2"]),
    "b11b12_20m": (SWIR_COLUMN, 20.0, ("B11", "B12")),
}
ID_COLUMNS = ["pair_id", "patch", "vns_site", "date", "s2_tile", "venus_product_id", "sentinel2_product_id"]
#: the licence of each sensor's files, after CESBIO's columns (SPDX identifiers; see s2v_gpu.licences)
LICENCE_COLUMNS = {"venus_licence": VENUS.spdx, "sentinel2_licence": SENTINEL2.spdx}
INDEX_V2 = [*V2_COLUMNS, *ID_COLUMNS, *RESIDUAL_COLUMNS, *LICENCE_COLUMNS]


def geotiff(values: np.ndarray, crs: str, left: float, top: float, res: float, bands: tuple[str, ...],
            licence: Licence = REST) -> bytes:
    """One patch ``(C, H, W)`` int16 as GeoTIFF bytes (north-up, ``res`` metres), its licence in its
    metadata (``LICENSE``, ``LICENSE_URL`` and the TIFF Copyright tag holding the attribution)."""
    profile = {"driver": "GTiff", "width": values.shape[2], "height": values.shape[1], "count": values.shape[0],
               "dtype": "int16", "crs": crs, "transform": from_origin(left, top, res, res), "compress": "deflate"}
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(values)
            dst.descriptions = tuple(f"{b} reflectance x {SCALE:g}" for b in bands)
            dst.scales = (1 / SCALE,) * len(bands)
            dst.update_tags(LICENSE=licence.spdx, LICENSE_URL=licence.url, TIFFTAG_COPYRIGHT=licence.attribution)
        return mem.read()


def _pair_members(z: zipfile.ZipFile, site_dir: Path, row: dict, residuals: dict, zip_name: str) -> list[dict]:
    """Write one pair's GeoTIFFs into ``z``; returns its index rows."""
    pid = pair_id_of_row(row)
    crs, bounds = patch_geometries(site_dir / row["patches_gpkg"])
    tensors = {c: torch.load(site_dir / row[col], mmap=True, weights_only=True) for c, (col, _, _) in
               V2_COLUMNS.items()}
    rows = []
    for k, (left, _bottom, _right, top) in enumerate(bounds):
        out = {"pair_id": pid, "patch": k, **{c: row[c] for c in ID_COLUMNS[2:]}, **residuals.get((pid, k), {}),
               **LICENCE_COLUMNS}
        for column, (_, res, bands) in V2_COLUMNS.items():
            member = f"{pid}/{pid}_{k:04d}_{column}.tif"
            z.writestr(member, geotiff(tensors[column][k].numpy(), crs, left, top, res, bands,
                                       licence_of_file(member)))
            out[column] = f"/vsizip/{zip_name}/{member}"
        rows.append(out)
    return rows


def export_site_v2(site_dir: Path) -> Path:
    """Write ``SITE/v2/{SITE}.zip`` and ``SITE/v2/index.csv`` from the site's tensors; returns the index.

    Raises:
        ValueError: the site was built without ``pipeline.swir_20m`` (no B11 B12 tensors).
    """
    site_dir = Path(site_dir)
    index = read_index_rows(site_dir, required=True)
    if any(not r.get(SWIR_COLUMN) for r in index):
        raise ValueError(f"{site_dir}: built without Sentinel-2 B11 B12 (pipeline.swir_20m=false); format=v2 needs "
                         "them: rebuild with format=v2")
    table, _ = read_patches(site_dir)
    residuals = {(r["pair_id"], int(r["patch"])): {c: r[c] for c in RESIDUAL_COLUMNS} for r in table}
    owned = site_owned_folder(site_dir, V2_DIR)
    out, zip_name = owned.folder, f"{site_dir.name}.zip"
    owned.claim([zip_name, "index.csv"])  # both refused before either is written: nothing half replaced
    rows: list[dict] = []

    def write_zip(tmp: Path) -> None:
        rows.clear()
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for row in index:
                rows.extend(_pair_members(z, site_dir, row, residuals, zip_name))

    atomic_write(out / zip_name, write_zip)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_V2, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "index.csv", lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    log.info("format v2: %d patches of %d pairs in %s", len(rows), len(index), out / zip_name)
    return out / "index.csv"


__all__ = ["INDEX_V2", "V2_COLUMNS", "export_site_v2", "geotiff"]
