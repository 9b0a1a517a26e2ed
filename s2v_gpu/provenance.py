"""What made a dataset: the package and library versions, recorded in every site folder."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from . import __version__
from .layout import MANIFEST_FILE

_LIBRARIES = ("torch", "kornia", "rasterio", "fiona", "numpy", "hydra-core")


def software_versions() -> dict[str, str]:
    """``{"s2v_gpu": ..., "python": ..., "torch": ..., "gdal": ..., ...}`` (only what is importable)."""
    out = {"s2v_gpu": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        out["gdal"] = "absent"
    return out


def software_line(versions: dict[str, str]) -> str:
    """One line for a table cell: ``s2v_gpu=0.2.0;torch=2.13.0;...``."""
    return ";".join(f"{k}={v}" for k, v in versions.items())


def read_manifest(folder: Path) -> dict:
    """A site folder's ``manifest.json`` (what made it: software, configuration hash, method, layout),
    ``{}`` where there is none."""
    path = Path(folder) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
