"""Which folders under a dataset root are sites, and each pair counted once.

A site folder is known by what it records, not by its name. A backup copy made with a file manager
(``SYNTH-1 copy``), a copy under another site's name or a folder renamed by hand still holds the
manifest (and the rows) of the site it was made for: it is left out, named, with the reason. Among
the folders kept, a pair (by its id, and by its couple of VENuS and Sentinel-2 products) is counted
once: the first folder in name order keeps it, and every other copy is named in a warning.

The aggregate (``s2v-gpu-aggregate``), the PyTorch Dataset, the report and the dataset card all read
a root through :func:`survey_sites`, so their counts agree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .layout import (
    INDEX_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    REPORT_DIR,
    STAC_DIR,
    V2_DIR,
    TableError,
    UnsafeNameError,
    pair_id_of_row,
    read_index_rows,
)

__all__ = ["LeftOut", "SiteSurvey", "survey_sites"]

log = logging.getLogger(__name__)

#: folders a dataset root holds that are not sites: the aggregate's own outputs and the sweep cache
ROOT_OUTPUT_DIRS = {REPORT_DIR, STAC_DIR}


@dataclass(frozen=True)
class LeftOut:
    """A folder (or one of its pairs) not counted, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SiteSurvey:
    """The site folders of a root and their rows, each pair once.

    Attributes:
        rows: per kept folder, its index rows (duplicates of pairs already counted removed).
        left_out: folders and pairs not counted, with the reason.
        busy: kept folders that a running job holds (their complete pairs are counted as of now).
    """

    rows: dict[Path, list[dict]] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)

    @property
    def folders(self) -> list[Path]:
        return list(self.rows)


def recorded_site(folder: Path) -> str | None:
    """The site a folder's ``manifest.json`` records, None without a manifest.

    Raises:
        ValueError: the manifest exists but cannot be read as one.
    """
    path = folder / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        site = json.loads(path.read_text(encoding="utf-8")).get("site")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable manifest ({exc})") from exc
    if not isinstance(site, str):
        raise ValueError(f"{path}: records no site")
    return site


def is_being_written(folder: Path) -> bool:
    """Whether a run holds the folder's lock now (a shared lock is refused while it does); the lock
    file is opened read-only and never created."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _why_not_ours(folder: Path, require_manifest: bool) -> str | None:
    """Why ``folder`` is not counted as the site its name says, from its manifest alone, or None."""
    try:
        site = recorded_site(folder)
    except ValueError as exc:
        return str(exc)
    if site is None:
        return f"no {MANIFEST_FILE}: not a site folder written by s2v_gpu" if require_manifest else None
    if site != folder.name:
        return f"its manifest records the site {site}: a copy or a renamed folder (only {site}/ is counted)"
    return None


def _why_not_its_rows(folder: Path, rows: list[dict]) -> str | None:
    """A folder without a manifest (the published download, named after its site, as ours): why its
    rows are not of the site its name says, or None."""
    if (folder / MANIFEST_FILE).exists():
        return None
    others = sorted({r["vns_site"] for r in rows} - {folder.name})
    if others:
        return f"its rows are of the site {others[0]}, not {folder.name}: a copy or a renamed folder"
    return None


def _candidate_folders(root: Path) -> tuple[list[Path], list[LeftOut]]:
    """Sub-folders of ``root`` that may be sites, in name order, and those left out at sight."""
    candidates, left_out = [], []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or (path.name in ROOT_OUTPUT_DIRS and not (path / INDEX_FILE).exists()):
            continue
        if path.is_symlink():
            left_out.append(LeftOut(path, "a symbolic link: not followed"))
        elif not path.is_dir():
            continue
        elif not (path / INDEX_FILE).is_file():
            left_out.append(LeftOut(path, f"no {INDEX_FILE}: empty or not a site folder"))
        else:
            candidates.append(path)
    return candidates, left_out


def survey_sites(root: str | Path, require_manifest: bool | None = None, check_busy: bool = False) -> SiteSurvey:
    """The site folders under ``root`` (or ``root`` itself when it is a site folder).

    Args:
        root: a dataset root or one site folder.
        require_manifest: count only folders written by s2v_gpu (True), or also folders without a
            manifest whose rows are of their own site (False: the published download). None (the
            default): True as soon as one folder under ``root`` has a manifest, so a folder of
            someone else's beside ours never counts, for the aggregate, the report or the Dataset.
        check_busy: note the folders a running job holds (the aggregate; a run's own report would
            find its own lock).

    Returns:
        The survey; every folder and pair left out is also logged as a warning.
    """
    root = Path(root)
    subs = [p for p in root.glob(f"*/{INDEX_FILE}") if p.parent.name != V2_DIR]  # a site's v2/ is no site
    if (root / INDEX_FILE).is_file() and not subs:
        candidates, left_out = [root], []
    else:
        candidates, left_out = _candidate_folders(root)
    if require_manifest is None:
        require_manifest = any((folder / MANIFEST_FILE).exists() for folder in candidates)
    survey = SiteSurvey(left_out=left_out)
    seen: dict[object, Path] = {}
    for folder in candidates:
        why = None if folder == root else _why_not_ours(folder, require_manifest)
        if why is None:
            try:
                rows = read_index_rows(folder)
            except (TableError, UnsafeNameError) as exc:
                why = str(exc)
            else:
                why = None if folder == root else _why_not_its_rows(folder, rows)
        if why:
            survey.left_out.append(LeftOut(folder, why))
            continue
        survey.rows[folder] = _first_copies(folder, rows, seen, survey.left_out)
        if check_busy and is_being_written(folder):
            survey.busy.append(folder)
    for item in survey.left_out:
        _warn_once(f"{item.path}: left out: {item.reason}")
    for folder in survey.busy:
        _warn_once(f"{folder}: a running job is writing it: its pairs complete now are counted")
    return survey


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning per process: the aggregate, its report and its card survey the same root."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _first_copies(folder: Path, rows: list[dict], seen: dict[object, Path], left_out: list[LeftOut]) -> list[dict]:
    """``rows`` without the pairs another folder already holds (by pair id or product couple)."""
    kept = []
    for row in rows:
        keys = (pair_id_of_row(row), (row["venus_product_id"], row["sentinel2_product_id"]))
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            left_out.append(LeftOut(folder, f"the pair {keys[0]} is already counted from {first}"))
            continue
        for k in keys:
            seen[k] = folder
        kept.append(row)
    return kept
