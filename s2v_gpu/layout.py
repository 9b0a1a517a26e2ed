"""The SEN2VENuS dataset layout, in one light module: file names, table columns, the int16 scale, pair
ids and the rules that keep names from becoming paths.

Both sides use it: the writer (:mod:`s2v_gpu.writer`) and the readers (:mod:`s2v_gpu.dataset`, the
report, the aggregation). It imports nothing heavier than the standard library, so importing the
PyTorch Dataset does not load the producer (Kornia, rasterio, fiona).

Layout per site folder (paper Tables 3 and 4):

- ``{id}_05m_b2b3b4b8.pt``, ``{id}_10m_b2b3b4b8.pt``, ``{id}_05m_b5b6b7b8a.pt``,
  ``{id}_20m_b5b6b7b8a.pt``: int16 tensors ``[n, 4, H, W]``, reflectance x :data:`SCALE`;
- ``{id}_patches.gpkg``: one polygon per patch, in tensor order;
- ``index.csv`` (tab-separated, the columns of Table 4 exactly), ``pairs_details.tsv`` (what the
  paper does not record), ``patches.tsv`` (per patch: its measured residual misregistration),
  ``summary.json`` (the last run), ``manifest.json`` (what made the folder and which files the runs
  wrote).
"""

from __future__ import annotations

import csv
import enum
import re
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .geoquality import GEO_STATS

#: int16 files hold reflectance x SCALE.
SCALE = 10000.0


def encode_int16(x: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Reflectance ``x`` (float, any shape) -> the values the int16 files store, still as float: x SCALE,
    rounded half to even, clipped to the int16 range (the one rule every tensor file follows). ``in_place``:
    ``x`` itself is overwritten (a temporary the caller no longer needs)."""
    return (x.mul_(SCALE) if in_place else x * SCALE).round_().clamp_(-32768, 32767)


#: Elements converted at a time by :func:`to_int16` (a chunk's temporaries stay in cache).
INT16_CHUNK = 2**22


def to_int16(x: torch.Tensor) -> torch.Tensor:
    """Reflectance ``(N, ...)`` -> int16 x 10000 on the CPU (rounded, clipped to the int16 range),
    by chunks of the first dimension."""
    out = torch.empty(x.shape, dtype=torch.int16, device=x.device)
    step = max(1, INT16_CHUNK // max(1, x[:1].numel()))
    for i in range(0, x.shape[0], step):
        out[i:i + step] = encode_int16(x[i:i + step])
    return out.cpu().contiguous()


#: The columns of the paper's Table 4, in order.
INDEX_COLUMNS = [
    "venus_product_id", "sentinel2_product_id", "tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8",
    "tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", "s2_tile", "vns_site", "date", "venus_zenith_angle",
    "patches_gpkg", "nb_patches",
]
#: With ``pipeline.swir_20m`` (format=v2): Sentinel-2 B11 B12 at 20 m, a column after Table 4's.
SWIR_COLUMN = "tensor_20m_b11b12"
#: Index columns naming a tensor file, and every column naming a file of the pair.
TENSOR_COLUMNS = INDEX_COLUMNS[2:6]
FILE_COLUMNS = TENSOR_COLUMNS + ["patches_gpkg"]

INDEX_FILE = "index.csv"
DETAILS_FILE = "pairs_details.tsv"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
#: the quality report's folder inside a site (or dataset) folder
STAC_DIR = "stac"
#: format=v2: the site's per-patch GeoTIFFs (one zip) and their index, CESBIO's columns
V2_DIR = "v2"
CARD_FILE = "DATASET_CARD.md"
REPORT_DIR = "report"
LOCK_FILE = ".s2v_gpu.lock"
#: The release ships one per site folder; the community loader checks for it.
LICENCE_FILE = "LICENCE"

#: Site names and pair ids: letters, digits, ``-`` and ``_`` (the Theia naming rules), never ``.``
#: or a separator, so a name taken from a product can never become another path.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: ``{site}_{tile}_{YYYY-MM-DD}``, with ``-HHMMSS`` (the VENuS acquisition time) when a site has more
#: than one pair on that day.
PAIR_ID_RE = re.compile(
    r"^(?P<site>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<tile>\d{2}[A-Z]{3})_(?P<date>\d{4}-\d{2}-\d{2})(?:-(?P<time>\d{6}))?$"
)
_SUFFIXES = ("_05m_b2b3b4b8.pt", "_10m_b2b3b4b8.pt", "_05m_b5b6b7b8a.pt", "_20m_b5b6b7b8a.pt",
             "_05m_b4b5b6b8a.pt", "_20m_b4b5b6b8a.pt", "_20m_b11b12.pt", "_patches.gpkg")


class Layout(enum.StrEnum):
    """``clean``: the paper's names. ``published``: the Zenodo release's quirks (an 8-character site
    prefix, red-edge files named ``b4b5b6b8a``, a ``LICENCE`` per site, the per-site zenith angle)."""

    clean = "clean"
    published = "published"


class UnsafeNameError(ValueError):
    """A name taken from an input (product, index, configuration) is not a plain file or folder name."""


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a safe site name or pair id, else raise :class:`UnsafeNameError`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UnsafeNameError(f"{what} {name!r} is not a valid name (letters, digits, '-' and '_' only, "
                              "at most 64 characters)")
    return name


def check_file_name(name: str, what: str) -> str:
    """A file name listed in a table: ``{pair id}{layout suffix}``, so no folder, no ``..``."""
    suffix = next((s for s in _SUFFIXES if isinstance(name, str) and name.endswith(s)), None)
    if suffix is None or not PAIR_ID_RE.match(name[: -len(suffix)]):
        raise UnsafeNameError(f"{what} {name!r} is not a file name of the layout")
    return name


def published_prefix(venus_product: str) -> str:
    """The release's 8-character site prefix: the first 8 characters of ``{site}_{letter}_V{x}-{y}`` in
    the VENuS product name (``NARYN_C_V2-2`` -> ``NARYN_C_``, ``ALSACE_C_V2-2`` -> ``ALSACE_C``,
    ``BAMBENW2_C_V2-2`` -> ``BAMBENW2``), as the old sensorsio slice that named the release did."""
    if "_L2A_" not in venus_product:
        raise UnsafeNameError(f"{venus_product!r} is not a VENuS L2A product name")
    return venus_product.split("_L2A_", 1)[1][:8]


def pair_id(site: str, tile: str, date: str, time: str | None = None) -> str:
    """``{site}_{tile}_{date}`` (paper section 3.3), ``-{HHMMSS}`` appended for the extra pairs of a day."""
    pid = f"{site}_{tile}_{date}" + (f"-{time}" if time else "")
    if not PAIR_ID_RE.match(pid):
        raise UnsafeNameError(f"pair id {pid!r} is not of the form SITE_TILE_YYYY-MM-DD[-HHMMSS]")
    return pid


def parse_pair_id(pid: str) -> dict[str, str | None]:
    """``{"site", "tile", "date", "time"}`` of a pair id (clean or published prefix)."""
    m = PAIR_ID_RE.match(pid)
    if m is None:
        raise UnsafeNameError(f"{pid!r} is not a pair id (SITE_TILE_YYYY-MM-DD[-HHMMSS])")
    return m.groupdict()


def pair_file_names(pid: str, layout: Layout | str = Layout.clean, prefix: str | None = None) -> dict[str, str]:
    """File names of one pair, keyed by index column (and ``pair_id``). ``published``: ``prefix``
    (see :func:`published_prefix`) replaces the site in the names, red-edge files say ``b4b5b6b8a``."""
    if Layout(layout) is Layout.published:
        parts = parse_pair_id(pid)
        pid = pair_id(check_name(prefix or parts["site"], "published prefix"), parts["tile"], parts["date"],
                      parts["time"])
        red = "b4b5b6b8a"
    else:
        red = "b5b6b7b8a"
    return {
        "pair_id": pid,
        "tensor_05m_b2b3b4b8": f"{pid}_05m_b2b3b4b8.pt",
        "tensor_10m_b2b3b4b8": f"{pid}_10m_b2b3b4b8.pt",
        "tensor_05m_b5b6b7b8a": f"{pid}_05m_{red}.pt",
        "tensor_20m_b5b6b7b8a": f"{pid}_20m_{red}.pt",
        SWIR_COLUMN: f"{pid}_20m_b11b12.pt",
        "patches_gpkg": f"{pid}_patches.gpkg",
    }


def pair_id_of_row(row: dict) -> str:
    """The pair id of an index row (taken from its GeoPackage name, which every layout shares)."""
    return check_file_name(row["patches_gpkg"], "patches_gpkg")[: -len("_patches.gpkg")]


@dataclass
class DetailsRow:
    """One row of ``pairs_details.tsv``: what the paper does not record about a pair."""

    pair_id: str
    venus_product_id: str
    dt_minutes: str
    shift_dx_m: str
    shift_dy_m: str
    registration_mode: str
    n_matches: int
    shift_spread_m: str
    median_dx_m: str
    median_dy_m: str
    patches_total: int
    dropped_invalid: int
    fit_excluded: int
    dropped_selection: int
    dropped_outlier: int
    dropped_residual: int
    patches_kept: int
    res10_median_m: str
    res10_p95_m: str
    res20_median_m: str
    res20_p95_m: str
    w_10m: str
    w_20m: str
    device: str
    seconds: str
    timings: str
    config_hash: str
    software: str


#: columns added to ``pairs_details.tsv`` after its first release, at its end: the local model's drop
#: count, then the geometric quality of each band group (:mod:`s2v_gpu.geoquality`). A table written
#: before them reads with them empty, and a resumed folder's table is rewritten with them.
DETAIL_COLUMNS_ADDED = ["dropped_local"] + [f"geo{g}_{k}" for g in ("10", "20") for k in GEO_STATS]
DETAIL_COLUMNS = [f.name for f in fields(DetailsRow)] + DETAIL_COLUMNS_ADDED
#: the drop rules of a pair, in the order they act: ``patches_total`` = ``patches_kept`` + their sum
DROP_COLUMNS = ["dropped_invalid", "dropped_selection", "dropped_local", "dropped_outlier", "dropped_residual"]

#: Per kept patch (``patches.tsv``, one row per patch of every pair, in tensor order; also the
#: attributes of the GeoPackages): the residual misregistration of each band group after the
#: registration (metres, x east / y north: a feature at q in VENuS is at q + (dx, dy) in Sentinel-2),
#: the texture and RMSE of its measurement, and whether it converged; with the local registration
#: model, the mean displacement applied to the patch on top of the global shift (metres), whether it
#: was supported by enough tiles (``local_trusted``; an untrusted patch keeps the global shift) and
#: the part of the displacement that the patch's own measured translation set (``local_patch_*``, 0
#: where the field alone was applied).
RESIDUAL_COLUMNS = ["res10_dx_m", "res10_dy_m", "res20_dx_m", "res20_dy_m", "res10_texture", "res20_texture",
                    "res10_rmse", "res20_rmse", "res10_converged", "res20_converged", "local_dx_m", "local_dy_m",
                    "local_trusted", "local_patch_dx_m", "local_patch_dy_m"]
PATCH_COLUMNS = ["pair_id", "patch", "grid_index", *RESIDUAL_COLUMNS]
#: columns added to ``patches.tsv`` after its first release, at its end: a table written before them
#: reads with them 0 (what those versions applied) and a resumed folder's table is rewritten with them
PATCH_COLUMNS_ADDED = ["local_patch_dx_m", "local_patch_dy_m"]
PATCHES_FILE = "patches.tsv"


class TableError(ValueError):
    """An output table is not what the layout writes (format, columns, names)."""


def read_patches(site_dir: Path) -> tuple[list[dict], bool]:
    """The rows of a site folder's ``patches.tsv`` (an append-only table: a line cut by a crash is
    ignored), and whether its header is the current one (False: written before
    :data:`PATCH_COLUMNS_ADDED`, which read as 0).

    Raises:
        TableError: the file is something else.
    """
    path = Path(site_dir) / PATCHES_FILE
    required = PATCH_COLUMNS[: len(PATCH_COLUMNS) - len(PATCH_COLUMNS_ADDED)]
    rows = read_table(path, required, drop_partial_last_line=True)
    if not path.exists():
        return rows, True
    with path.open(encoding="utf-8", errors="replace") as f:
        current = f.readline().rstrip("\n").split("\t")[: len(PATCH_COLUMNS)] == PATCH_COLUMNS
    for row in rows:
        for column in PATCH_COLUMNS_ADDED:
            row.setdefault(column, "0")
    return rows, current


def read_table(path: Path, columns: list[str], required: bool = False,
               drop_partial_last_line: bool = False) -> list[dict]:
    """Rows of a tab-separated table written by the layout, checked: UTF-8 text, the header holds
    ``columns`` (in order, extra columns after them allowed), every row as long as the header.
    ``drop_partial_last_line``: an append-only table may end with a line cut by a crash (no newline):
    it is ignored.

    Raises:
        TableError: the file is something else (the message names it and what is wrong).
    """
    path = Path(path)
    if not path.exists():
        if required:
            raise TableError(f"{path}: missing")
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise TableError(f"{path}: not a UTF-8 text table ({exc})") from exc
    if "\x00" in text:
        raise TableError(f"{path}: binary content, not a tab-separated table")
    if drop_partial_last_line and text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(text.splitlines(), delimiter="\t")
    header = next(reader, None)
    if header is None:
        return []
    if header[: len(columns)] != columns:
        raise TableError(f"{path}: not a tab-separated table with the columns {', '.join(columns)} "
                         f"(header read: {header[:4]}...)")
    rows = []
    for n, values in enumerate(reader, start=2):
        if len(values) != len(header):
            raise TableError(f"{path}: line {n} has {len(values)} fields, the header {len(header)}")
        rows.append(dict(zip(header, values)))
    return rows


def site_folders(root: Path) -> list[Path]:
    """The site folders under ``root`` (sub-folders with an ``index.csv``; a site's own ``v2/`` index is
    not a site), or ``[root]`` when ``root`` is itself a site folder."""
    root = Path(root)
    subs = sorted(p.parent for p in root.glob(f"*/{INDEX_FILE}") if p.parent.name != V2_DIR)
    return [root] if (root / INDEX_FILE).exists() and not subs else subs


def read_index_rows(site_dir: Path, required: bool = False) -> list[dict]:
    """The rows of a site's ``index.csv``, every file name checked to be a plain name of the layout
    (no folder, no ``..``): a row can never point outside its site folder.

    Raises:
        TableError: bad format or columns; UnsafeNameError: a file name that is not the layout's.
    """
    rows = read_table(Path(site_dir) / INDEX_FILE, INDEX_COLUMNS, required)
    for r in rows:
        for c in FILE_COLUMNS + ([SWIR_COLUMN] if r.get(SWIR_COLUMN) else []):
            check_file_name(r[c], f"{Path(site_dir) / INDEX_FILE}: {c}")
    return rows
