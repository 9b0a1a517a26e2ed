"""A PyTorch Dataset over a generated folder or the published SEN2VENuS download (same layout).

Everything goes through each site's ``index.csv``: file names are taken from it, so both the clean
names and the published release's quirks (``NARYN_C_``, ``b4b5b6b8a``) work. Tensors are loaded
lazily with ``torch.load(mmap=True)`` the first time a pair is touched in a worker, so a DataLoader
with workers does not read every file up front.

A sample is a dict::

    {"site": str, "pair_id": str, "patch": int,
     "s2_10m": (4, 128, 128), "venus_05m_10mbands": (4, 256, 256),      # group "10m"
     "s2_20m": (4, 64, 64),   "venus_05m_20mbands": (4, 256, 256)}      # group "20m"

as float32 reflectance (int16 / 10000).
"""

from __future__ import annotations

import bisect
import random
import sqlite3
import struct
import warnings
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .layout import FILE_COLUMNS, SCALE, SWIR_COLUMN, pair_id_of_row
from .survey import SiteSurvey, survey_sites

GROUP_FILES = {
    "10m": {"s2_10m": "tensor_10m_b2b3b4b8", "venus_05m_10mbands": "tensor_05m_b2b3b4b8"},
    "20m": {"s2_20m": "tensor_20m_b5b6b7b8a", "venus_05m_20mbands": "tensor_05m_b5b6b7b8a"},
    # format=v2 (pipeline.swir_20m): Sentinel-2 B11 B12 at 20 m, without a VENuS counterpart
    "swir": {"s2_20m_b11b12": SWIR_COLUMN},
}


@dataclass(frozen=True)
class PairEntry:
    site: str
    pair_id: str
    folder: Path
    files: dict[str, str]
    n: int


def read_index(root: str | Path, sites: list[str] | None = None) -> list[PairEntry]:
    """Pairs listed by the ``index.csv`` of every site folder under ``root`` (or of ``root`` itself),
    each pair once: copies of a site folder and folders of another site's rows are left out with a
    warning (:func:`s2v_gpu.survey.survey_sites`); a merged root ``index.csv`` is not read twice."""
    return entries_of(survey_sites(root), sites)


def entries_of(survey: SiteSurvey, sites: list[str] | None = None) -> list[PairEntry]:
    """The :class:`PairEntry` of every row a survey counts (of ``sites`` only, when given)."""
    entries = []
    for folder, rows in survey.rows.items():  # file names checked: never outside the folder
        entries += [entry_of_row(folder, row) for row in rows if sites is None or row["vns_site"] in sites]
    return entries


def entry_of_row(folder: Path, row: dict) -> PairEntry:
    """The :class:`PairEntry` of one (checked) ``index.csv`` row of a site folder."""
    files = {c: row[c] for c in FILE_COLUMNS + [SWIR_COLUMN] if row.get(c)}
    return PairEntry(row["vns_site"], pair_id_of_row(row), Path(folder), files, int(row["nb_patches"]))


def patch_geometries(gpkg: Path) -> tuple[str | None, list[tuple[float, float, float, float]]]:
    """The CRS (``"EPSG:32631"``) and the ``(left, bottom, right, top)`` of each patch, in tensor order,
    read with the standard library: a GeoPackage is SQLite and stores each polygon's envelope."""
    with closing(sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)) as db:
        table, srs = db.execute("SELECT table_name, srs_id FROM gpkg_geometry_columns").fetchone()
        org = db.execute("SELECT organization, organization_coordsys_id FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
                         (srs,)).fetchone()
        rows = db.execute(f'SELECT geom FROM "{table}" ORDER BY patch').fetchall()
    bounds = []
    for (blob,) in rows:
        order = "<" if blob[3] & 1 else ">"
        if (blob[3] >> 1) & 7 == 0:
            raise ValueError(f"{gpkg}: a geometry without its envelope")
        minx, maxx, miny, maxy = struct.unpack(f"{order}4d", blob[8:40])
        bounds.append((minx, miny, maxx, maxy))
    crs = f"{org[0]}:{org[1]}" if org and org[0] and org[0].upper() != "NONE" else None
    return crs, bounds


class Sen2VenusDataset(Dataset):
    """Patches of the chosen band groups from a SEN2VENuS-layout folder.

    Args:
        root: a dataset folder (site sub-folders) or one site folder.
        groups: ``("10m",)``, ``("20m",)`` or both.
        pairs: restrict to these entries (see :func:`read_index` and the split helpers).
        transforms: called on each sample dict (augmentations), its result returned.
        geo: add ``"crs"`` and ``"bounds"`` (left, bottom, right, top of the 5 m patch) to each sample,
            read from the pair's GeoPackage (standard library only).
        split: ``"train"``, ``"val"`` or ``"test"``: only the pairs ``ROOT/split.csv`` puts there
            (written by ``s2v-gpu-split``, whole sites by default).

    Folders and pairs not counted (copies of a site folder, another site's rows, a pair already
    counted) are in ``left_out`` and named in a warning.
    """

    def __init__(self, root: str | Path, groups: tuple[str, ...] = ("10m", "20m"),
                 pairs: list[PairEntry] | None = None, transforms: Callable[[dict], dict] | None = None,
                 geo: bool = False, split: str | None = None) -> None:
        unknown = set(groups) - set(GROUP_FILES)
        if unknown:
            raise ValueError(f"unknown band groups {sorted(unknown)}; choose from {sorted(GROUP_FILES)}")
        self.root, self.groups, self.transforms, self.geo = Path(root), tuple(groups), transforms, geo
        self.left_out = []
        if pairs is None:
            survey = survey_sites(root)
            self.left_out = survey.left_out
            if survey.left_out:  # warnings, not only logs: a training script rarely configures logging
                warnings.warn(f"{root}: not counted: " + "; ".join(f"{x.path.name} ({x.reason})"
                                                                  for x in survey.left_out), stacklevel=2)
            pairs = entries_of(survey)
        self.pairs = list(pairs)
        if split is not None:
            self.pairs = _of_split(self.root, self.pairs, split)
        missing = [e.pair_id for e in self.pairs for g in self.groups for c in GROUP_FILES[g].values()
                   if c not in e.files]
        if missing:
            raise ValueError(f"{root}: the pairs {sorted(set(missing))[:3]}... have no file for the groups "
                             f"{self.groups} (the swir group needs a dataset built with format=v2)")
        self._offsets = []
        total = 0
        for entry in self.pairs:
            self._offsets.append(total)
            total += entry.n
        self._len = total
        self._cache: dict[tuple[int, str], torch.Tensor] = {}
        self._geo: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (f"Sen2VenusDataset(root={str(self.root)!r}, groups={self.groups}, pairs={len(self.pairs)}, "
                f"sites={len({p.site for p in self.pairs})}, patches={self._len})")

    def __getstate__(self) -> dict:
        # DataLoader workers get the index, not the memory-mapped tensors the parent has touched
        return {**self.__dict__, "_cache": {}, "_geo": {}}

    def _tensor(self, k: int, column: str) -> torch.Tensor:
        key = (k, column)
        if key not in self._cache:
            entry = self.pairs[k]
            self._cache[key] = torch.load(entry.folder / entry.files[column], mmap=True, weights_only=True)
        return self._cache[key]

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        k = bisect.bisect_right(self._offsets, i) - 1  # the pair holding patch i
        entry, j = self.pairs[k], i - self._offsets[k]
        sample = {"site": entry.site, "pair_id": entry.pair_id, "patch": j}
        for group in self.groups:
            for key, column in GROUP_FILES[group].items():
                sample[key] = self._tensor(k, column)[j].float() / SCALE
        if self.geo:
            if k not in self._geo:
                self._geo[k] = patch_geometries(entry.folder / entry.files["patches_gpkg"])
            crs, bounds = self._geo[k]
            sample.update(crs=crs, bounds=bounds[j])
        return self.transforms(sample) if self.transforms else sample


def _of_split(root: Path, pairs: list[PairEntry], split: str) -> list[PairEntry]:
    """The pairs that ``ROOT/split.csv`` puts in ``split`` (see :mod:`s2v_gpu.split`).

    Raises:
        ValueError: an unknown split name, or pairs the table does not list (made before the split).
    """
    from .split import SPLITS, read_split

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}")
    table = read_split(root)
    unlisted = [p.pair_id for p in pairs if p.pair_id not in table]
    if unlisted:
        raise ValueError(f"{root / 'split.csv'}: does not list {unlisted[:3]} ({len(unlisted)} pairs): the dataset "
                         "changed since the split was written; write it again with s2v-gpu-split")
    return [p for p in pairs if table[p.pair_id] == split]


def split_by_pairs(pairs: list[PairEntry], test_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Hold whole pairs out of training (the paper: keep separate pairs for testing)."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * test_fraction)) if order else 0
    return order[n_test:], order[:n_test]


def split_by_sites(pairs: list[PairEntry], test_sites: list[str]) -> tuple[list, list]:
    """Hold whole sites out of training (the paper: or even sites)."""
    test = [p for p in pairs if p.site in test_sites]
    return [p for p in pairs if p.site not in test_sites], test
