"""Finding Theia L2A products (folders and zips) below a root folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ProductNameError
from .naming import ProductName, parse_product_name

log = logging.getLogger(__name__)


def find_products(root: str | os.PathLike, rejected: list[str] | None = None) -> list[tuple[Path, ProductName]]:
    """List the L2A products below ``root``, searched recursively, sorted by path.

    A product is a folder or a ``.zip`` whose name parses as a Theia L2A product name
    (``SENTINEL2*_..._L2A_...`` or ``VENUS*_..._L2A_...``). A folder that is a product is not searched
    further. Names that look like products but do not parse, and zips that are not regular files (a
    FIFO would block its first reader), are logged and skipped (and their messages appended to
    ``rejected`` when a list is given).

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: products folder does not exist")
    found: list[tuple[Path, ProductName]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for d in sorted(dirnames):
            if "_L2A_" in d:
                try:
                    found.append((Path(dirpath) / d, parse_product_name(d)))
                    continue
                except ProductNameError as exc:
                    _reject(str(exc), rejected)
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.lower().endswith(".zip") and "_L2A_" in f:
                path = os.path.join(dirpath, f)
                try:
                    name = parse_product_name(f)
                except ProductNameError as exc:
                    _reject(str(exc), rejected)
                    continue
                if os.path.isfile(path):
                    found.append((Path(path), name))
                else:  # a FIFO would block its first reader: never opened
                    _reject(f"{path}: not a regular file (a FIFO, socket, device or a link to nothing)", rejected)
    return sorted(found, key=lambda item: str(item[0]))


def _reject(reason: str, rejected: list[str] | None) -> None:
    log.warning("skipping %s", reason)
    if rejected is not None:
        rejected.append(reason)
