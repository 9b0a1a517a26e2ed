"""Helpers shared by the test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

#: the text files of a site folder that name its site (its pairs' files, products and manifest)
_SITE_TEXTS = ("index.csv", "pairs_details.tsv", "patches.tsv", "manifest.json", "summary.json")


def clone_site(src: Path, dst: Path, site: str) -> Path:
    """A genuine-looking second site made from ``src``: every file name, table and the manifest say
    ``site`` instead of the source's site, so the survey counts it as a site of its own (a plain copy is
    a backup copy, left out). Reports and STAC are not copied."""
    old = src.name
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith("."):
            target = dst / path.name.replace(old, site)
            if path.name in _SITE_TEXTS:
                target.write_text(path.read_text(encoding="utf-8").replace(old, site), encoding="utf-8")
            else:
                shutil.copy2(path, target)
    return dst
