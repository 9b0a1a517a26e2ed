"""Exceptions raised by s2v_gpu.

Every exception derives from :class:`S2VError` and from the builtin that best describes it, so callers
can catch either (``except FileNotFoundError`` keeps working), the way rasterio does it.
Messages always name the file concerned and what is wrong with it.
"""

from __future__ import annotations


class S2VError(Exception):
    """Base class of every error raised by s2v_gpu."""


class ProductNameError(S2VError, ValueError):
    """A path does not follow the Theia (MUSCATE) product naming convention."""


class MissingFileError(S2VError, FileNotFoundError):
    """A band, mask or metadata file that a product must contain is absent."""


class RasterReadError(S2VError, OSError):
    """A GeoTIFF exists but cannot be read (truncated, corrupt, wrong size or CRS...)."""


class MetadataError(S2VError, ValueError):
    """An MTD_ALL.xml document is missing, unparsable or lacks a required element."""


class ShapeError(S2VError, ValueError):
    """A tensor given to a pipeline stage does not have the documented shape."""


class PairSkipped(S2VError, RuntimeError):
    """A pair cannot give patches (no overlap, weak registration, no valid patch...); the reason says why."""



def check_shape(tensor, ndim: int, name: str, channels: int | None = None) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has ``ndim`` dims (and ``channels`` at dim -3)."""
    if tensor.dim() != ndim:
        raise ShapeError(f"{name}: expected a {ndim}-d tensor, got shape {tuple(tensor.shape)}")
    if channels is not None and tensor.shape[-3] != channels:
        raise ShapeError(f"{name}: expected {channels} channels at dim -3, got shape {tuple(tensor.shape)}")
