"""``s2v-gpu-split paths.dataset=ROOT [split.by=site] [split.fractions=...]``: a leak-free split of a dataset.

Patches of one site, and even more of one date, are strongly correlated: a split that draws patches
at random puts near-copies on both sides. The split is made of whole **sites** by default, or of whole
pairs (``split.by=pair``: every patch of a pair on one side, but sites shared between the sides: a
warning says so). It is seeded and deterministic: the units (sites or pair ids) are sorted, shuffled
with ``random.Random(split.seed)`` and laid end to end by their patches; each goes to the split (train,
val, test, in that order, each given its fraction of the patches) where its middle falls. The table
``ROOT/split.csv`` (tab-separated: ``pair_id``, ``vns_site``, ``nb_patches``, ``split``) lies beside the
index; ``Sen2VenusDataset(root,
split="train")`` reads it and the dataset card states it with its counts. The folders and pairs
counted are those of :func:`s2v_gpu.survey.survey_sites`: a copied site folder never lands on both sides.

Exit status: 0 when written, 1 when the root holds no pair, 2 for a configuration error or a
``split.csv`` in the way that the project did not write.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from .layout import pair_id_of_row, read_table
from .ownership import OwnedFolder
from .survey import survey_sites
from .writer import write_tsv

__all__ = ["SPLIT_COLUMNS", "SPLIT_FILE", "SPLITS", "SplitAppConfig", "SplitBy", "SplitConfig", "assign_splits",
           "read_split", "write_split"]

log = logging.getLogger("s2v_gpu.split")

SPLIT_FILE = "split.csv"
SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["pair_id", "vns_site", "nb_patches", "split"]


class SplitBy(enum.StrEnum):
    """``site``: whole sites on each side (no leak). ``pair``: whole pairs (sites shared: a leak)."""

    site = "site"
    pair = "pair"


@dataclass
class SplitConfig:
    by: SplitBy = SplitBy.site
    #: shares of the patches for train, val and test (they must add up to 1)
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0


@dataclass
class SplitPaths:
    dataset: str = "dataset"


@dataclass
class SplitAppConfig:
    paths: SplitPaths = field(default_factory=SplitPaths)
    split: SplitConfig = field(default_factory=SplitConfig)


def validate_split(cfg: SplitConfig) -> None:
    """Refuse fractions that are not three finite shares adding up to 1, naming the key.

    Raises:
        ConfigError: the first problem found.
    """
    from .config import refuse_failed

    f = list(cfg.fractions)
    refuse_failed([
        (len(f) == 3, f"split.fractions={f} must hold three shares: train, val, test"),
        (all(math.isfinite(x) and 0 <= x <= 1 for x in f), f"split.fractions={f} must be finite shares in [0, 1]"),
        (abs(sum(f) - 1) < 1e-6 if len(f) == 3 else True, f"split.fractions={f} must add up to 1"),
    ])


def assign_splits(units: dict[str, int], fractions: list[float], seed: int) -> dict[str, str]:
    """``unit -> split`` for units weighing ``units[u]`` patches (see the module for the rule)."""
    order = sorted(units)
    random.Random(seed).shuffle(order)
    total = sum(units.values()) or 1
    bounds = [sum(fractions[: k + 1]) * total for k in range(len(SPLITS))]
    out, done = {}, 0
    for unit in order:
        middle = done + units[unit] / 2  # the split whose share of the patches the unit's middle falls in
        out[unit] = SPLITS[next((k for k, b in enumerate(bounds) if middle < b), len(SPLITS) - 1)]
        done += units[unit]
    return out


def write_split(root: str | Path, cfg: SplitConfig | None = None) -> Path:
    """Write ``ROOT/split.csv``; returns its path.

    Raises:
        FileNotFoundError: no pair under ``root``.
        ForeignFileError: a ``split.csv`` is there that the project did not write.
    """
    root, cfg = Path(root), cfg or SplitConfig()
    by = SplitBy(cfg.by)
    rows = [(r, pair_id_of_row(r)) for rs in survey_sites(root).rows.values() for r in rs]
    if not rows:
        raise FileNotFoundError(f"{root}: no site folder with a pair to split")
    owned = OwnedFolder(root)
    owned.claim([SPLIT_FILE])
    by_site = by is SplitBy.site
    units: dict[str, int] = {}
    for r, pid in rows:
        key = r["vns_site"] if by_site else pid
        units[key] = units.get(key, 0) + int(r["nb_patches"])
    chosen = assign_splits(units, list(cfg.fractions), cfg.seed)
    table = [{"pair_id": pid, "vns_site": r["vns_site"], "nb_patches": r["nb_patches"],
              "split": chosen[r["vns_site"] if by_site else pid]} for r, pid in rows]
    write_tsv(root / SPLIT_FILE, sorted(table, key=lambda t: t["pair_id"]), SPLIT_COLUMNS)
    _log_counts(table, list(cfg.fractions), by)
    return root / SPLIT_FILE


def _log_counts(table: list[dict], fractions: list[float], by: SplitBy) -> None:
    for name, fraction in zip(SPLITS, fractions):
        part = [t for t in table if t["split"] == name]
        if fraction > 0 and not part:
            log.warning("split: %s is empty (too few %ss for the fractions %s)", name, by.value, fractions)
        log.info("split %s: %d sites, %d pairs, %d patches", name, len({t["vns_site"] for t in part}), len(part),
                 sum(int(t["nb_patches"]) for t in part))
    if by is SplitBy.pair:
        log.warning("split.by=pair: the sides share sites, whose patches are correlated (same landscapes, often "
                    "the same season): test scores will be optimistic; split.by=site holds whole sites out")


def read_split(root: str | Path) -> dict[str, str]:
    """``pair_id -> split`` from ``ROOT/split.csv``.

    Raises:
        FileNotFoundError: no split was written (run ``s2v-gpu-split``).
        TableError: the file is not the split table.
    """
    path = Path(root) / SPLIT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no split of this dataset; write one with s2v-gpu-split "
                                f"paths.dataset={root}")
    return {r["pair_id"]: r["split"] for r in read_table(path, SPLIT_COLUMNS)}


def main() -> None:
    """The console entry point (``s2v-gpu-split``)."""
    from .app import hydra_app
    from .ownership import ForeignFileError

    def job(cfg: SplitAppConfig) -> int:
        validate_split(cfg.split)
        try:
            write_split(cfg.paths.dataset, cfg.split)
        except FileNotFoundError as exc:
            log.error("%s", exc)
            return 1
        return 0

    hydra_app("split", SplitAppConfig, job, refusals=(ForeignFileError,))


if __name__ == "__main__":
    main()
