"""The files our runs write beside the tensors, and the promise that nothing else is replaced.

A site folder's tensors are proven ours by its ``manifest.json``. The by-products (the report, the
STAC catalogue, the v2 export, the dataset card and the aggregate's tables at a dataset root) live in
folders a user may also write into. Each such folder gets a ledger, ``.s2v_owned.json``, that lists
the names our runs wrote there. A name is written only if it is absent or listed; a file in the way
that is not listed is left untouched and the step is refused with a message naming it. Every name a
step will write is claimed before its first byte, so a refusal loses nothing.

Folders written by 0.4.x have no ledger. Inside a site folder whose manifest proves it ours, the
names that version wrote there are adopted once (see :func:`legacy_names`); elsewhere a file in the
way without a ledger is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import S2VError

__all__ = ["LEDGER_FILE", "ForeignFileError", "OwnedFolder", "legacy_names", "site_owned_folder"]

log = logging.getLogger(__name__)

LEDGER_FILE = ".s2v_owned.json"
LEDGER_FORMAT = 1


class ForeignFileError(S2VError, FileExistsError):
    """A file is in the way of one our runs would write, and they did not write it: it is left as is."""


class OwnedFolder:
    """A real folder of ours in which each name written is recorded in a ledger.

    Args:
        folder: the folder (already proven a real folder, see :func:`s2v_gpu.writer.own_subfolder`).
        adopt: without a ledger, names that an older version of the project wrote there and that
            may be taken as ours (None: none).
    """

    def __init__(self, folder: Path, adopt: Callable[[str], bool] | None = None) -> None:
        self.folder = Path(folder)
        self.ledger = self.folder / LEDGER_FILE
        self.names, self._adopt = self._read(), None
        if self.names is None:
            self.names, self._adopt = set(), adopt

    def _read(self) -> set[str] | None:
        if not self.ledger.exists():
            return None
        try:
            data = json.loads(self.ledger.read_text(encoding="utf-8"))
            names = data["files"] if data.get("format") == LEDGER_FORMAT else None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("no list of file names")
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            # a damaged ledger proves nothing ours: every file in the way is then refused
            log.warning("%s: unreadable (%s): no file of %s is taken as ours", self.ledger, exc, self.folder)
            return set()
        return set(names)

    def is_ours(self, name: str) -> bool:
        return name in self.names or bool(self._adopt and self._adopt(name))

    def claim(self, names: Iterable[str]) -> None:
        """Record ``names`` as ours before any of them is written.

        Raises:
            ForeignFileError: one of them exists (a file, a folder or a link) and is not ours;
                nothing is recorded then.
        """
        names = list(names)
        for name in names:
            if "/" in name or name in ("", ".", "..", LEDGER_FILE):
                raise ValueError(f"{name!r} is not a plain file name")
            path = self.folder / name
            if (path.exists() or path.is_symlink()) and not self.is_ours(name):
                raise ForeignFileError(
                    f"{path} exists and was not written by s2v_gpu: it is left as it is; move it away or choose "
                    "another output folder")
        if set(names) - self.names:
            self.names |= set(names)
            self._save()

    def write(self, name: str, write: Callable[[Path], None]) -> Path:
        """Claim ``name`` and write it atomically with ``write(tmp)``; returns the path."""
        from .writer import atomic_write

        self.claim([name])
        atomic_write(self.folder / name, write)
        return self.folder / name

    def remove(self, name: str) -> None:
        """Remove ``name`` if it is ours (a stale file of an earlier run); never anything else."""
        path = self.folder / name
        if name in self.names and path.is_file() and not path.is_symlink():
            path.unlink()
            log.info("removed %s (no longer written)", path)
        self.names.discard(name)
        self._save()

    def _save(self) -> None:
        from .writer import atomic_write

        text = json.dumps({"format": LEDGER_FORMAT, "files": sorted(self.names)}, indent=1)
        atomic_write(self.ledger, lambda tmp: tmp.write_text(text, encoding="utf-8"))


#: the version whose by-product folders first carry a ledger: folders of a site made before it adopt
LEDGER_SINCE = (0, 5)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return LEDGER_SINCE


def legacy_names(site_dir: Path, sub: str) -> Callable[[str], bool] | None:
    """Which names of ``site_dir/sub`` a 0.4.x run wrote, to adopt once: None unless the site's manifest
    was written before ledgers existed. ``report/`` and ``stac/``: any name (0.4.x wrote them on every
    run); ``v2/``: only where the recorded configuration exported v2 (``pipeline.swir_20m``)."""
    from .provenance import read_manifest

    try:
        manifest = read_manifest(site_dir)
    except (OSError, ValueError):
        return None
    version = (manifest.get("software") or {}).get("s2v_gpu") if isinstance(manifest, dict) else None
    if version is None or _version(version) >= LEDGER_SINCE:
        return None
    if sub == "v2" and not ((manifest.get("method") or {}).get("pipeline") or {}).get("swir_20m"):
        return None
    return lambda name: not name.startswith(".")


def site_owned_folder(site_dir: Path, sub: str) -> OwnedFolder:
    """``site_dir/sub`` (``report``, ``stac``, ``v2``) as a real folder of ours, with its ledger."""
    from .writer import own_subfolder

    return OwnedFolder(own_subfolder(site_dir, sub), legacy_names(site_dir, sub))
