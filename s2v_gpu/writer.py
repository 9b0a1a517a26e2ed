"""The writer of a site folder (dataset out): it owns the folder for the length of a run.

What it guarantees (each tested in ``tests/test_writer.py`` and ``tests/test_safety.py``):

- **Confinement**: every path it writes or deletes is a plain layout name proven to lie directly in
  the site folder, itself a validated name directly in the dataset folder (no ``..``, no symlink).
- **Ownership**: ``manifest.json`` lists every file the runs wrote. A pair's names are recorded as
  *pending* before its first byte is written; the clean-up after an interruption removes exactly
  those names (and their temporary twins), never a file found by its extension. A file that exists
  but is not the writer's is never overwritten: the pair fails with a message naming it.
- **One writer per folder**: an advisory ``flock`` on ``.s2v_gpu.lock`` held for the run (released by
  the kernel on any exit, so a dead run leaves no stale lock); a second run is refused with the
  holder's pid, host and start time.
- **One configuration per folder**: the manifest holds the hash of the configuration that shapes
  the tensors; a resume with another hash is refused (``overwrite=true`` rebuilds, removing only the
  writer's files).
- **Atomic files, index last**: each file goes through a temporary name and a rename; a pair is
  complete exactly when its row is in ``index.csv``.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import fiona
import torch
from fiona.crs import CRS as FionaCRS

from .errors import S2VError
from .geoquality import geo_columns
from .layout import (
    CARD_FILE,
    DETAIL_COLUMNS,
    DETAIL_COLUMNS_ADDED,
    DETAILS_FILE,
    INDEX_COLUMNS,
    INDEX_FILE,
    LICENCE_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    PATCH_COLUMNS,
    PATCHES_FILE,
    REPORT_DIR,
    RESIDUAL_COLUMNS,
    STAC_DIR,
    SUMMARY_FILE,
    SWIR_COLUMN,
    V2_DIR,
    Layout,
    TableError,
    UnsafeNameError,
    check_file_name,
    check_name,
    pair_id_of_row,
    read_index_rows,
    read_patches,
    read_table,
    to_int16,
)
from .licences import licence_text
from .ownership import ForeignFileError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-s2v-"
MANIFEST_FORMAT = 1
#: The release's licence notice: each file under the licence of the sensor it derives from.
LICENCE_TEXT = licence_text()


#: The files of a site folder that are not a pair's (:meth:`SiteWriter.write_extra`).
EXTRA_FILES = (LICENCE_FILE, CARD_FILE)


class OutputFolderError(S2VError, RuntimeError):
    """The output folder cannot be used as asked (another configuration, another writer, files that
    are not ours, damaged tables); nothing was written. The message says what to do."""


class WriteError(S2VError, OSError):
    """A file of the layout could not be written (full disk, permissions): the message names it."""


# ------------------------------------------------------------------------------------------ files
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``. Failures
    become :class:`WriteError` naming ``path`` and the real cause (a full disk says so)."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp.exists():
            tmp.unlink()
        if isinstance(exc, Exception) and not isinstance(exc, WriteError):
            raise _write_error(path, exc) from exc
        raise


def _write_error(path: Path, exc: Exception) -> WriteError:
    code = getattr(exc, "errno", None)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if code == errno.ENOSPC or (free is not None and free < 1 << 20):
        return WriteError(errno.ENOSPC, f"{path}: No space left on device "
                          f"({free if free is not None else '?'} bytes free); free space and rerun to resume")
    limit = _file_size_limit()
    # torch.save reports a refused write as "unexpected pos" (its writer saw fewer bytes land than it sent)
    if code == errno.EFBIG or (limit is not None and "unexpected pos" in str(exc)):
        return WriteError(errno.EFBIG, f"{path}: File too large: the file grew past the process's file size limit "
                          f"({limit if limit is not None else '?'} bytes, ulimit -f) or the disk filled; raise the "
                          "limit or free space and rerun to resume")
    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
    return WriteError(code or errno.EIO, f"{path}: cannot write ({type(exc).__name__}: {reason})")


def _file_size_limit() -> int | None:
    """The soft limit on the size of a file this process writes (``ulimit -f``), None when unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def write_tensor(path: Path, tensor: torch.Tensor) -> None:
    """torch.save through a file object: the archive's inner folder is then always ``archive`` (from a
    path, torch names it after the file, here a temporary name), so equal tensors give equal bytes."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(tensor, fh)

    atomic_write(path, write)


def write_patches_gpkg(path: Path, bounds, grid_index, crs, pair_id: str,
                       extra: dict[str, list] | None = None) -> None:
    """One polygon per patch, in tensor order: ``pair_id``, ``patch``, ``grid_index`` and ``extra``
    columns (name -> one value per patch: bools are written as int, the rest as float)."""
    extra = {k: list(v) for k, v in (extra or {}).items()}
    kinds = {k: "int" if v and isinstance(v[0], bool) else "float" for k, v in extra.items()}
    schema = {"geometry": "Polygon", "properties": {"pair_id": "str", "patch": "int", "grid_index": "int", **kinds}}

    def write(tmp: Path) -> None:
        with fiona.open(tmp, "w", driver="GPKG", schema=schema, crs=FionaCRS.from_wkt(crs.to_wkt()),
                        layer="patches") as dst:
            records = []
            for k, ((left, bottom, right, top), g) in enumerate(zip(bounds, grid_index)):
                ring = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
                props = {"pair_id": pair_id, "patch": k, "grid_index": int(g),
                         **{name: (int if kinds[name] == "int" else float)(values[k])
                            for name, values in extra.items()}}
                records.append({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
            dst.writerecords(records)  # one call: one transaction (a call per feature costs twice the CPU)

    atomic_write(path, write)


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


# ----------------------------------------------------------------------------------------- folder
def site_folder(dataset_root: Path, site: str) -> Path:
    """``dataset_root/site``, proven to be a real folder directly inside ``dataset_root``.

    Raises:
        OutputFolderError: an unsafe site name, a symlink, or a path that resolves elsewhere.
    """
    try:
        check_name(site, "site")
    except UnsafeNameError as exc:
        raise OutputFolderError(f"{exc}: refusing to use it as a folder name") from exc
    root = Path(dataset_root)
    site_dir = root / site
    if site_dir.is_symlink():
        raise OutputFolderError(f"{site_dir} is a symbolic link: the run writes only into real folders")
    try:
        site_dir.mkdir(parents=True, exist_ok=True)
        probe = site_dir / f"{TMP_PREFIX}probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputFolderError(f"paths.dataset: cannot write into {site_dir} ({exc.strerror or exc}); "
                                "choose a writable paths.dataset") from exc
    if site_dir.resolve().parent != root.resolve():
        raise OutputFolderError(f"{site_dir} resolves to {site_dir.resolve()}, outside {root.resolve()}")
    return site_dir


def own_subfolder(parent: Path, name: str) -> Path:
    """``parent/name`` (``report``, ``stac``, ``v2``, the sweep cache), created if missing, proven a real
    folder: a symbolic link planted there would send our writes outside the output folder.

    Raises:
        OutputFolderError: a symlink or a file in the way.
    """
    path = Path(parent) / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputFolderError(f"{path} is a symbolic link or not a folder: the run writes only into real "
                                "folders of its own; remove it or choose a new paths.dataset")
    path.mkdir(parents=True, exist_ok=True)
    return path


class FolderLock:
    """An advisory exclusive lock on a site folder (``flock``: released by the kernel when the process
    ends, however it ends, so a dead run never leaves a stale lock)."""

    def __init__(self, site_dir: Path) -> None:
        self.path = site_dir / LOCK_FILE
        self._fh = None

    def acquire(self) -> None:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputFolderError(f"{self.path.parent} is being written by another run ({holder}); wait for it "
                                    "to end or choose another paths.dataset") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class SiteWriter:
    """Owns a site folder for one run (use as a context manager: it holds the folder's lock).

    Args:
        dataset_root: ``paths.dataset`` (or a sweep's folder under it).
        site: the site name (validated: it becomes the folder name).
        layout: file naming (:class:`~s2v_gpu.layout.Layout`).
        config_hash: hash of the configuration that shapes the tensors.
        method: that configuration, recorded in the manifest (and diffed when a resume differs).
        provenance: software versions, recorded in the manifest.
        overwrite: a folder made with another configuration is rebuilt (its writer-made files
            removed) instead of refused.
    """

    def __init__(self, dataset_root: Path, site: str, layout: Layout, config_hash: str, method: dict,
                 provenance: dict, overwrite: bool = False) -> None:
        self.root, self.site, self.layout = Path(dataset_root), site, Layout(layout)
        self.config_hash, self.method, self.provenance, self.overwrite = config_hash, method, provenance, overwrite
        self.site_dir = self.root / site
        swir = bool((method or {}).get("pipeline", {}).get("swir_20m"))
        self.index_columns = INDEX_COLUMNS + ([SWIR_COLUMN] if swir else [])
        self.index_rows: list[dict] = []
        self.details: dict[str, dict] = {}
        self.manifest: dict = {}
        self._lock: FolderLock | None = None

    # -------------------------------------------------------------------------------- open / close
    def __enter__(self) -> SiteWriter:
        self.site_dir = site_folder(self.root, self.site)
        self._lock = FolderLock(self.site_dir)
        self._lock.acquire()
        try:
            self._load()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()

    def _path(self, name: str) -> Path:
        """A file of the folder: a plain name (the layout's names are checked where they are made)."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise OutputFolderError(f"{name!r} is not a plain file name; refusing to touch it")
        return self.site_dir / name

    def _new_manifest(self) -> dict:
        return {"format": MANIFEST_FORMAT, "site": self.site, "layout": self.layout.value,
                "config_hash": self.config_hash, "method": self.method, "software": self.provenance,
                "pairs": {}, "pending": {}, "files": []}

    def _read_manifest(self) -> dict | None:
        path = self.site_dir / MANIFEST_FILE
        if not path.exists():
            return None
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
            ok = (m.get("format") == MANIFEST_FORMAT and isinstance(m.get("pairs"), dict)
                  and isinstance(m.get("pending"), dict) and isinstance(m.get("files"), list))
        except (ValueError, OSError, AttributeError) as exc:
            raise OutputFolderError(f"{path}: damaged ({exc}); the folder's files cannot be proven ours: "
                                    "choose a new paths.dataset") from exc
        if not ok:
            raise OutputFolderError(f"{path}: not a manifest of this version (format {m.get('format')!r}); "
                                    "choose a new paths.dataset")
        # every name it lists must be one the writer makes: a tampered manifest never names other files
        try:
            for names in list(m["pairs"].values()) + list(m["pending"].values()):
                for name in names:
                    check_file_name(name, "file")
        except (UnsafeNameError, TypeError, AttributeError) as exc:
            raise OutputFolderError(f"{path}: lists a name that is not a file of the layout ({exc}); "
                                    "choose a new paths.dataset") from exc
        if any(name not in EXTRA_FILES for name in m["files"]):
            raise OutputFolderError(f"{path}: lists files the writer does not make ({m['files']}); "
                                    "choose a new paths.dataset")
        return m

    def _load(self) -> None:
        m = self._read_manifest()
        if m is None:
            self._refuse_foreign_tables()
            m = self._new_manifest()
        elif m.get("config_hash") != self.config_hash or m.get("layout") != self.layout.value:
            if not self.overwrite:
                raise OutputFolderError(self._mismatch_message(m))
            log.warning("%s: made with another configuration; overwrite=true: removing its files", self.site_dir)
            self._remove_all(m)
            m = self._new_manifest()
        self.manifest = m
        for pid, names in list(m["pending"].items()):  # a pair interrupted while it was written
            self._remove(names, f"left by the interrupted pair {pid}")
            del m["pending"][pid]
        self._load_tables()
        self._save_manifest()

    def _refuse_foreign_tables(self) -> None:
        for name in (INDEX_FILE, DETAILS_FILE, PATCHES_FILE, SUMMARY_FILE, REPORT_DIR, STAC_DIR, CARD_FILE, V2_DIR):
            if (self.site_dir / name).exists():
                raise OutputFolderError(
                    f"{self.site_dir / name} exists but {self.site_dir} has no {MANIFEST_FILE}: it was not made by "
                    "this version of s2v_gpu (or its manifest was removed), so its files cannot be proven ours; "
                    "choose a new paths.dataset")

    def _mismatch_message(self, m: dict) -> str:
        old = _flatten({"layout": m.get("layout"), **(m.get("method") or {})})
        new = _flatten({"layout": self.layout.value, **self.method})
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)]
        return (f"{self.site_dir} was made with another configuration (hash {m.get('config_hash')}, now "
                f"{self.config_hash}; {'; '.join(diff[:6]) or 'same keys, other software'}): resuming would mix them. "
                "Use a new paths.dataset, or overwrite=true to rebuild this site folder")

    def _load_tables(self) -> None:
        index_path = self.site_dir / INDEX_FILE
        try:
            rows = read_index_rows(self.site_dir)
            details = read_table(self.site_dir / DETAILS_FILE, DETAIL_COLUMNS[: -len(DETAIL_COLUMNS_ADDED)])
            patches, current_header = read_patches(self.site_dir)
        except (TableError, UnsafeNameError) as exc:
            raise OutputFolderError(f"{exc}; the folder's tables are damaged: choose a new paths.dataset or "
                                    "overwrite=true") from exc
        kept = []
        for r in rows:
            pid = pair_id_of_row(r)
            names = self.manifest["pairs"].get(pid)
            if names is None:
                raise OutputFolderError(f"{index_path}: the row of {pid} names files this folder's runs did not "
                                        "write; choose a new paths.dataset or overwrite=true")
            missing = [n for n in names if not self._path(n).exists()]
            if missing:
                log.warning("%s: %s is listed but %s is missing: the pair is redone", index_path, pid, missing[0])
                continue
            kept.append(r)
        kept_ids = {pair_id_of_row(r) for r in kept}
        for pid in [p for p in self.manifest["pairs"] if p not in kept_ids]:
            self._remove(self.manifest["pairs"].pop(pid), f"of the pair {pid}, not in the index")
        self.index_rows = kept
        self.details = {d["pair_id"]: d for d in details if d["pair_id"] in kept_ids}
        kept_patches = [p for p in patches if p["pair_id"] in kept_ids]
        if len(kept_patches) != len(patches) or not current_header or not (self.site_dir / PATCHES_FILE).exists():
            write_tsv(self.site_dir / PATCHES_FILE, kept_patches, PATCH_COLUMNS)
        if len(kept) != len(rows) or len(self.details) != len(details) or not self._details_current():
            self._write_tables()

    def _details_current(self) -> bool:
        """Whether ``pairs_details.tsv`` has the current header (a 0.4.x table lacks the added columns)."""
        path = self.site_dir / DETAILS_FILE
        if not path.exists():
            return True
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n").split("\t") == DETAIL_COLUMNS

    def _remove(self, names: list[str], why: str) -> None:
        for name in names:
            for path in (self._path(name), self._path(f"{TMP_PREFIX}{name}")):
                if path.exists() and not path.is_dir():
                    path.unlink()
                    log.info("removed %s (%s)", path, why)

    def _remove_all(self, m: dict) -> None:
        for names in list(m["pairs"].values()) + list(m["pending"].values()):
            self._remove(names, "overwrite=true")
        self._remove(list(m["files"]) + [INDEX_FILE, DETAILS_FILE, PATCHES_FILE, SUMMARY_FILE], "overwrite=true")

    def _save_manifest(self) -> None:
        write_json(self.site_dir / MANIFEST_FILE, self.manifest)

    def _write_tables(self) -> None:
        write_tsv(self.site_dir / DETAILS_FILE, sorted(self.details.values(), key=lambda r: r["pair_id"]),
                  DETAIL_COLUMNS)
        write_tsv(self.site_dir / INDEX_FILE, self.index_rows, self.index_columns)  # last: it marks complete pairs

    # ---------------------------------------------------------------------------------- the pairs
    @property
    def done(self) -> dict[str, str]:
        """VENuS product -> pair id of the pairs already complete."""
        return {r["venus_product_id"]: pair_id_of_row(r) for r in self.index_rows}

    def write_pair(self, names: dict[str, str], tensors: dict[str, torch.Tensor | Callable[[], torch.Tensor]],
                   write_gpkg: Callable[[Path], None], index_row: dict, details_row: dict,
                   patch_rows: list[dict] | None = None) -> None:
        """Write a pair's tensors (keyed by index column) and GeoPackage, then its rows (index last).

        Raises:
            WriteError: a file cannot be written, or a file of that name exists that this folder's
                runs did not write (it is left untouched). Nothing of the pair stays.
        """
        pid = names["pair_id"]
        files = [names[c] for c in (*tensors, "patches_gpkg")]
        taken = [f for f in files if self._path(f).exists() or self._path(f).is_symlink()]
        if taken or any(pair_id_of_row(r) == pid for r in self.index_rows):
            raise WriteError(errno.EEXIST, f"{self._path(taken[0]) if taken else pid}: already exists and was not "
                             f"written for this pair by this run; refusing to overwrite it (pair {pid} not written)")
        self.manifest["pending"][pid] = files
        self._save_manifest()
        appended_at = None
        try:
            for column, tensor in tensors.items():
                write_tensor(self._path(names[column]), tensor() if callable(tensor) else tensor)
            write_gpkg(self._path(names["patches_gpkg"]))
            self.manifest["pairs"][pid] = self.manifest["pending"].pop(pid)
            self._save_manifest()
            self.details[pid] = details_row
            appended_at = self._append_patches(patch_rows or [])
            self.index_rows = sorted(self.index_rows + [index_row], key=lambda r: (r["date"], r["s2_tile"],
                                                                                 r["venus_product_id"]))
            self._write_tables()
        except BaseException:
            self._truncate_patches(appended_at)
            self._remove(files, f"its pair {pid} did not complete")
            self.manifest["pairs"].pop(pid, None)
            self.manifest["pending"].pop(pid, None)
            self.details.pop(pid, None)
            self.index_rows = [r for r in self.index_rows if pair_id_of_row(r) != pid]
            self._save_manifest()
            raise

    def _append_patches(self, rows: list[dict]) -> int | None:
        """Append a pair's rows to ``patches.tsv`` (rewriting the whole table at every pair would cost
        O(pairs^2)). Returns the table's size before the append (:meth:`_truncate_patches` undoes it);
        rows of a pair that did not reach the index are dropped at the next load anyway, and a
        partial last line is ignored."""
        if not rows:
            return None
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=PATCH_COLUMNS, delimiter="\t", lineterminator="\n",
                       extrasaction="ignore").writerows(rows)
        path = self.site_dir / PATCHES_FILE
        size = path.stat().st_size if path.exists() else 0
        try:
            with open(path, "a") as fh:
                fh.write(buf.getvalue())
        except OSError as exc:
            self._truncate_patches(size)
            raise _write_error(path, exc) from exc
        return size

    def _truncate_patches(self, size: int | None) -> None:
        """Cut ``patches.tsv`` back to ``size`` bytes (a failed pair leaves no row, whole or partial)."""
        path = self.site_dir / PATCHES_FILE
        if size is not None and path.exists() and path.stat().st_size > size:
            with open(path, "r+") as fh:
                fh.truncate(size)

    def write_extra(self, name: str, text: str) -> None:
        """A file of the folder that is not a pair's (``LICENCE``, the card), recorded as ours before it
        is written.

        Raises:
            ForeignFileError: a file of that name is there and the runs did not write it (left as is).
        """
        path = self._path(name)
        if name not in self.manifest["files"]:
            if path.exists() or path.is_symlink():
                raise ForeignFileError(f"{path} exists and was not written by s2v_gpu: it is left as it is; move "
                                       "it away for the run to write its own")
            self.manifest["files"].append(name)
            self._save_manifest()
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write_summary(self, summary: dict) -> None:
        write_json(self.site_dir / SUMMARY_FILE, summary)


__all__ = ["LICENCE_TEXT", "OutputFolderError", "SiteWriter", "WriteError", "own_subfolder", "site_folder", "to_int16",
           "write_json", "write_patches_gpkg", "write_tensor", "write_tsv"]


# ------------------------------------------------------------------------------ a pair's records
def _matrix(w: torch.Tensor) -> str:
    return "[" + ",".join("[" + ",".join(f"{v:.6f}" for v in row) + "]" for row in w.tolist()) + "]"


def pair_rows(cfg, pair, result, names: dict[str, str], seconds: float, device, software: str,
              config_hash: str) -> tuple[dict, dict]:
    """The ``index.csv`` row (paper Table 4) and the ``pairs_details.tsv`` row of a written pair."""
    from .sites import published_zenith

    zenith = result.stats["venus_zenith"]
    if Layout(cfg.layout) is Layout.published and published_zenith(pair.site) is not None:
        zenith = published_zenith(pair.site)  # the release writes the per-site value
    index_row = {
        "venus_product_id": pair.venus_name.name, "sentinel2_product_id": pair.s2_name.name,
        **{c: names[c] for c in INDEX_COLUMNS[2:6]}, "s2_tile": pair.tile, "vns_site": pair.site,
        "date": pair.date, "venus_zenith_angle": "" if zenith != zenith else f"{zenith:.6f}",
        "patches_gpkg": names["patches_gpkg"], "nb_patches": result.stats["patches_kept"],
    }
    r, s = result.registration, result.stats
    details = {
        "pair_id": names["pair_id"], "venus_product_id": pair.venus_name.name,
        "dt_minutes": f"{pair.dt_minutes:.2f}",
        "shift_dx_m": f"{r.shift_m[0]:.3f}", "shift_dy_m": f"{r.shift_m[1]:.3f}",
        "registration_mode": r.mode, "n_matches": r.n_matches, "shift_spread_m": f"{r.spread_m:.3f}",
        "median_dx_m": f"{r.median_m[0]:.3f}", "median_dy_m": f"{r.median_m[1]:.3f}",
        **{k: s[k] for k in ("patches_total", "dropped_invalid", "fit_excluded", "dropped_selection",
                             "dropped_outlier", "dropped_residual", "patches_kept", "dropped_local")},
        **{k: f"{s[k]:.3f}" for k in ("res10_median_m", "res10_p95_m", "res20_median_m", "res20_p95_m")},
        "w_10m": _matrix(result.w_10), "w_20m": _matrix(result.w_20), "device": str(device),
        "seconds": f"{seconds:.2f}", "timings": ";".join(f"{k}={v:.3f}" for k, v in s["timings"].items()),
        "config_hash": config_hash, "software": software, **geo_columns(result.patches),
    }
    return index_row, details


def write_pair(writer: SiteWriter, cfg, pair, result, names: dict[str, str], seconds: float, device) -> None:
    """Write one computed pair (:class:`~s2v_gpu.pipeline.PairResult`) through ``writer``."""
    from .provenance import software_line

    index_row, details = pair_rows(cfg, pair, result, names, seconds, device, software_line(writer.provenance),
                                   writer.config_hash)
    # converted one at a time, as they are written (bounded host memory)
    tensors = {"tensor_05m_b2b3b4b8": lambda: result.venus.int16(0),
               "tensor_10m_b2b3b4b8": lambda: to_int16(result.s2_10),
               "tensor_05m_b5b6b7b8a": lambda: result.venus.int16(1),
               "tensor_20m_b5b6b7b8a": lambda: to_int16(result.s2_20)}
    if result.s2_swir is not None:
        tensors[SWIR_COLUMN] = lambda: to_int16(result.s2_swir)
        index_row[SWIR_COLUMN] = names[SWIR_COLUMN]
    extra = {k: result.patches[k].tolist() for k in RESIDUAL_COLUMNS if k in result.patches}
    patch_rows = [{"pair_id": names["pair_id"], "patch": k, "grid_index": g,
                   **{c: _cell(v[k]) for c, v in extra.items()}} for k, g in enumerate(result.patch_index)]
    writer.write_pair(names, tensors, lambda path: write_patches_gpkg(path, result.bounds, result.patch_index,
                                                                      result.crs, names["pair_id"], extra),
                      index_row, details, patch_rows)


def _cell(value) -> str:
    return str(int(value)) if isinstance(value, bool) else f"{value:.4f}"
