"""Writing the SEN2VENuS layout (dataset out): int16 tensors, patch GeoPackages, index.csv.

Layout per site folder (paper Table 3 and Table 4):

- ``{id}_05m_b2b3b4b8.pt``, ``{id}_10m_b2b3b4b8.pt``, ``{id}_05m_b5b6b7b8a.pt``,
  ``{id}_20m_b5b6b7b8a.pt``: int16 tensors ``[n, 4, H, W]``, reflectance x 10000, ``torch.load``-able;
- ``{id}_patches.gpkg``: one polygon per patch, in tensor order, with the pair id and patch index;
- ``index.csv``: tab-separated, one row per pair, the columns of Table 4 exactly;
- ``pairs_details.tsv``: what the paper does not record (shift, matches, spread, fit coefficients,
  patches dropped by each rule, timings); ``summary.json``: the outcome of every pair of the last run.

Every file is written under a temporary name and renamed into place; a pair's five files go first,
its index row last, so a pair is complete exactly when its row is in ``index.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import fiona
import torch
from fiona.crs import CRS as FionaCRS

from .pipeline import PairResult

log = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "venus_product_id", "sentinel2_product_id", "tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8",
    "tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", "s2_tile", "vns_site", "date", "venus_zenith_angle",
    "patches_gpkg", "nb_patches",
]
SCALE = 10000.0
TMP_PREFIX = ".tmp-"


def pair_file_names(site: str, tile: str, date: str, layout: str = "clean") -> dict[str, str]:
    """File names of one pair. ``clean``: ``{site}_{tile}_{date}``, red-edge files ``b5b6b7b8a`` (the
    paper). ``published``: the Zenodo release's quirks (site cut or padded to 8 characters with ``_``,
    red-edge files named ``b4b5b6b8a`` although they hold B5 B6 B7 B8A)."""
    if layout == "published":
        site = site[:8].ljust(8, "_")
        red = "b4b5b6b8a"
    else:
        red = "b5b6b7b8a"
    pid = f"{site}_{tile}_{date}"
    return {
        "pair_id": pid,
        "tensor_05m_b2b3b4b8": f"{pid}_05m_b2b3b4b8.pt",
        "tensor_10m_b2b3b4b8": f"{pid}_10m_b2b3b4b8.pt",
        "tensor_05m_b5b6b7b8a": f"{pid}_05m_{red}.pt",
        "tensor_20m_b5b6b7b8a": f"{pid}_20m_{red}.pt",
        "patches_gpkg": f"{pid}_patches.gpkg",
    }


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


#: Elements converted at a time by :func:`to_int16` (a chunk's temporaries stay in cache).
INT16_CHUNK = 2**22


def to_int16(x: torch.Tensor) -> torch.Tensor:
    """Reflectance ``(N, ...)`` -> int16 x 10000 on the CPU (rounded, clipped to the int16 range),
    by chunks of the first dimension."""
    out = torch.empty(x.shape, dtype=torch.int16, device=x.device)
    step = max(1, INT16_CHUNK // max(1, x[:1].numel()))
    for i in range(0, x.shape[0], step):
        out[i:i + step] = (x[i:i + step] * SCALE).round_().clamp_(-32768, 32767)
    return out.cpu().contiguous()


def write_tensor(path: Path, tensor: torch.Tensor) -> None:
    """torch.save through a file object: the archive's inner folder is then always ``archive`` (from a
    path, torch names it after the file, here a temporary name), so equal tensors give equal bytes."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(tensor, fh)

    atomic_write(path, write)


def write_patches_gpkg(path: Path, result: PairResult, pair_id: str) -> None:
    schema = {"geometry": "Polygon", "properties": {"pair_id": "str", "patch": "int", "grid_index": "int"}}

    def write(tmp: Path) -> None:
        with fiona.open(tmp, "w", driver="GPKG", schema=schema, crs=FionaCRS.from_wkt(result.crs.to_wkt()),
                        layer="patches") as dst:
            for k, ((left, bottom, right, top), grid_index) in enumerate(zip(result.bounds, result.patch_index)):
                ring = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
                dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]},
                           "properties": {"pair_id": pair_id, "patch": k, "grid_index": int(grid_index)}})

    atomic_write(path, write)


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def read_tsv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def write_pair(site_dir: Path, result: PairResult, names: dict[str, str]) -> None:
    """Write the four tensors and the GeoPackage of a pair (each atomically)."""
    write_tensor(site_dir / names["tensor_05m_b2b3b4b8"], to_int16(result.v05_10))
    write_tensor(site_dir / names["tensor_10m_b2b3b4b8"], to_int16(result.s2_10))
    write_tensor(site_dir / names["tensor_05m_b5b6b7b8a"], to_int16(result.v05_20))
    write_tensor(site_dir / names["tensor_20m_b5b6b7b8a"], to_int16(result.s2_20))
    write_patches_gpkg(site_dir / names["patches_gpkg"], result, names["pair_id"])


def clean_stale(site_dir: Path, complete_ids: set[str]) -> list[Path]:
    """Remove temporary files and the files of pairs that are not in the index (an interrupted pair).

    Returns:
        The removed paths.
    """
    removed = []
    if not site_dir.is_dir():
        return removed
    for f in site_dir.iterdir():
        stale = f.name.startswith(TMP_PREFIX)
        if not stale and (f.suffix in (".pt", ".gpkg")):
            pid = f.name.rsplit("_", 2)[0] if f.suffix == ".pt" else f.name[: -len("_patches.gpkg")]
            stale = pid not in complete_ids
        if stale:
            f.unlink()
            removed.append(f)
            log.info("removed %s (left by an interrupted run)", f)
    return removed
