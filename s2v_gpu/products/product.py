"""Reading Theia (MAJA, MUSCATE format) L2A products, unzipped folders or Theia ``.zip`` archives.

Layout read (MUSCATE format 1.14-1.16, MAJA templates):

- reflectances ``{NAME}_FRE_{band}.tif`` (slope-corrected) or ``{NAME}_SRE_{band}.tif``, int16,
  no-data -10000; reflectance = DN / REFLECTANCE_QUANTIFICATION_VALUE (10000 for Sentinel-2,
  1000 for VENuS when the document has none, as CESBIO's sensorsio reads them);
- masks ``MASKS/{NAME}_{KIND}_{GROUP}.tif`` with GROUP ``R1`` (10 m) / ``R2`` (20 m) for Sentinel-2 and
  ``XS`` for VENuS. Bit meanings implemented (bit_number n <-> value ``1 << (n - 1)``; source: the
  MAJA MUSCATE MTD_ALL templates in ``shared/data/real/maja_templates/`` and Theia's format page):

  * ``EDG``: non-zero = outside the swath / no-data;
  * ``CLM``: 8 cloud and cloud-shadow bits; their order is documented two ways, so *any* non-zero
    value is treated as cloud or shadow;
  * ``SAT``: one bit per band, in the order of the band group (S2 R1: B2 B3 B4 B8, R2: B5 B6 B7 B8A
    B11 B12; VENuS XS: B1..B12, hence a 16-bit raster); only the bits of the bands read invalidate;
  * ``MG2``: 1 water, 2 cloud, 3 snow, 4 cloud shadow, 5 topographic shadow, 6 hidden surface,
    7 sun too low, 8 sun tangent; the bits listed in :class:`MaskConfig` invalidate.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows
import torch
from affine import Affine
from rasterio.crs import CRS

from ..bands import DEFAULT_NODATA, DEFAULT_QUANTIFICATION, S2_GROUPS, S2_RESOLUTION, VENUS_GROUPS, VENUS_RESOLUTION
from ..errors import MetadataError, MissingFileError, ProductNameError, RasterReadError
from ..resample import scaled_values
from .metadata import ProductMetadata, read_metadata_bytes
from .naming import ProductName, parse_product_name

log = logging.getLogger(__name__)

#: The largest member (metadata document) read into memory: real MTD_ALL.xml are well under 1 MB.
MAX_MEMBER_BYTES = 32 * 2**20

#: Files of one window read at a time.
#: Files of a window read in parallel (GDAL releases the GIL); :func:`s2v_gpu.threads.apply_threads`
#: lowers it on a shared node
DEFAULT_READ_THREADS = 8
READ_THREADS = DEFAULT_READ_THREADS


@dataclass
class MaskConfig:
    """Which flags make a pixel invalid (the paper: union of no-data, cloud/shadow, saturation and
    geophysical masks)."""

    use_edg: bool = True
    use_clm: bool = True
    use_sat: bool = True
    #: MG2 bit numbers that invalidate: snow, topographic shadow, hidden surface, sun too low, sun
    #: tangent. Water (bit 1) is not invalid by default: the paper's sample patches show shorelines and
    #: water surfaces (its Figure 12, "changes in water surfaces"); add 1 to drop water.
    mg2_invalid_bits: list[int] = field(default_factory=lambda: [3, 5, 6, 7, 8])
    #: A missing mask file is an error (default) or, when True, logged and ignored (tolerant reading
    #: of partial products such as subsets that ship only some masks).
    allow_missing: bool = False


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (north-up) and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform.c, self.transform.f
        return (left, top + self.transform.e * self.height, left + self.transform.a * self.width, top)


class BandStack:
    """Bands read from one product over one window.

    Attributes:
        valid: ``(H, W)`` bool, True where every band is valid and no mask flags the pixel.
        bands: names of the C bands, in order.
        grid: the grid of the window (CRS, transform, size).
        dn: ``(C, H, W)`` int16 as stored (no-data where invalid) when the stack was read directly,
            None when it was resampled.
        quantification: DN per unit of reflectance (1.0 without ``dn``).
        reflectance: ``(C, H, W)`` float32 surface reflectance (invalid pixels hold 0); computed from
            ``dn`` on first use and kept (a whole VENuS site is 0.9 GB of float32: stages that can
            work on the int16 take :meth:`scaled` instead).
    """

    def __init__(self, reflectance: torch.Tensor | None, valid: torch.Tensor, bands: tuple[str, ...], grid: Grid,
                 dn: torch.Tensor | None = None, quantification: float = 1.0) -> None:
        if reflectance is None and dn is None:
            raise ValueError("a BandStack needs its reflectance or its DN")
        self._reflectance = reflectance
        self.valid, self.bands, self.grid = valid, bands, grid
        self.dn, self.quantification = dn, float(quantification)

    @property
    def reflectance(self) -> torch.Tensor:
        if self._reflectance is None:
            self._reflectance = self.channels()
        return self._reflectance

    def channels(self, index: list[int] | None = None) -> torch.Tensor:
        """Reflectance of some channels ``(K, H, W)`` float32 (all by default), invalid pixels 0."""
        if self._reflectance is not None:
            return self._reflectance if index is None else self._reflectance[index]
        if index is None:
            dn = self.dn
        elif len(index) and list(index) == list(range(index[0], index[0] + len(index))):  # a view, no int16 copy
            dn = self.dn[index[0]:index[0] + len(index)]
        else:
            dn = self.dn[index]
        return scaled_values(dn, self.valid, self.quantification)

    def scaled(self) -> tuple[torch.Tensor, float]:
        """``(values, divisor)`` with reflectance = values / divisor on the valid pixels: the stored
        int16 and the quantification when there are, else the reflectance and 1."""
        if self.dn is not None:
            return self.dn, self.quantification
        return self._reflectance, 1.0


class TheiaProduct:
    """A Theia L2A product of Sentinel-2 or VENuS, as a folder or as a ``.zip``.

    Args:
        path: the product folder or zip (its name is the product name, ``.zip`` aside).
        require_metadata: raise :class:`MissingFileError` / :class:`MetadataError` when MTD_ALL.xml
            is missing or unparsable; otherwise fall back to the name and sensor defaults.

    Raises:
        ProductNameError: the name is not a Theia L2A product name.
        RasterReadError: the zip archive is corrupt.
    """

    def __init__(self, path: str | os.PathLike, *, require_metadata: bool = True) -> None:
        self.path = Path(path)
        self.name: ProductName = parse_product_name(self.path)
        self.is_zip = self.path.suffix.lower() == ".zip"
        self._members = self._index_members()
        self.metadata: ProductMetadata | None = None
        mtd = self._members.get(f"{self.name.name}_MTD_ALL.xml")
        if mtd is None:
            if require_metadata:
                raise MissingFileError(f"{self.path}: no {self.name.name}_MTD_ALL.xml in the product")
            log.warning("%s: no MTD_ALL.xml, using the name and the sensor defaults", self.path)
        else:
            try:
                self.metadata = read_metadata_bytes(self._read_member(mtd), self._display(mtd))
                self._check_metadata_is_ours(mtd)
            except MetadataError:
                if require_metadata:
                    raise
                log.warning("%s: unreadable MTD_ALL.xml, using the name and the sensor defaults", self.path)
        self.quantification = (
            self.metadata.quantification if self.metadata else DEFAULT_QUANTIFICATION[self.name.sensor]
        )
        if not (math.isfinite(self.quantification) and self.quantification > 0):
            raise MetadataError(f"{self._display(mtd)}: REFLECTANCE_QUANTIFICATION_VALUE is {self.quantification}; "
                                "it must be a positive number (reflectance = value / quantification)")
        self.nodata = self.metadata.nodata if self.metadata else DEFAULT_NODATA
        if not (math.isfinite(self.nodata) and self.nodata == round(self.nodata) and -32768 <= self.nodata <= 32767):
            # NaN would match no pixel: every no-data pixel would be read as a valid -1.0 reflectance
            raise MetadataError(f"{self._display(mtd)}: SPECIAL_VALUE nodata is {self.nodata}; it must be an integer "
                                "digital number of the int16 bands (Theia: -10000)")

    def _check_metadata_is_ours(self, mtd: str) -> None:
        """Refuse a metadata document of another acquisition (another date, tile, site or platform than
        the folder or zip name says): its quantification, angles and masks would be applied silently.
        The product letter and processing version may differ (renamed distributions exist)."""
        pid = self.metadata.product_id
        if not pid:
            return
        try:
            theirs = parse_product_name(pid)
        except ProductNameError:
            theirs = None
        mine = self.name
        identity = (mine.platform, mine.acquired, mine.zone)
        if theirs is None or (theirs.platform, theirs.acquired, theirs.zone) != identity:
            raise MetadataError(f"{self._display(mtd)}: its PRODUCT_ID is {pid}, another product than {mine.name} "
                                "(the folder or zip name): refused, the metadata of one product is never applied "
                                "to another's bands")

    # ----------------------------------------------------------------------------------- layout
    def __repr__(self) -> str:
        return f"TheiaProduct({str(self.path)!r})"

    @property
    def sensor(self) -> str:
        return self.name.sensor

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return S2_GROUPS if self.sensor == "SENTINEL2" else VENUS_GROUPS

    def group_of(self, band: str) -> str:
        for group, bands in self.groups.items():
            if band in bands:
                return group
        raise KeyError(f"{self.path}: {band!r} is not a {self.sensor} band")

    def _index_members(self) -> dict[str, str]:
        """Basename -> member path (relative path in the folder, or name inside the zip)."""
        members: dict[str, str] = {}
        if self.is_zip:
            regular_file(self.path)
            try:
                with zipfile.ZipFile(self.path) as zf:
                    names = zf.namelist()
            except (zipfile.BadZipFile, OSError) as exc:
                raise RasterReadError(f"{self.path}: corrupt or unreadable zip archive ({exc})") from exc
            for n in names:
                if n.endswith("/"):
                    continue
                if not safe_member_name(n):  # never read, even beside a genuine member of that name
                    log.warning("%s: the member %r climbs out of the archive or is absolute: ignored, never read",
                                self.path, n)
                    continue
                members.setdefault(n.rsplit("/", 1)[-1], n)
        else:
            if not self.path.is_dir():
                raise MissingFileError(f"{self.path}: product folder does not exist")
            for root, _dirs, files in os.walk(self.path):
                for f in files:
                    members.setdefault(f, os.path.relpath(os.path.join(root, f), self.path))
        return members

    def _display(self, member: str) -> str:
        return f"{self.path}!{member}" if self.is_zip else str(self.path / member)

    def _gdal_path(self, member: str) -> str:
        if self.is_zip:
            return f"/vsizip/{self.path.resolve()}/{member}"
        return str(regular_file(self.path / member))

    def _read_member(self, member: str) -> bytes:
        """A small member (metadata) read into memory, refused before inflating when its declared
        size exceeds :data:`MAX_MEMBER_BYTES` (and never read past the cap if the header lies)."""
        shown = self._display(member)
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                size = zf.getinfo(member).file_size
                if size > MAX_MEMBER_BYTES:
                    raise MetadataError(f"{shown}: inflates to {size} bytes (> {MAX_MEMBER_BYTES}); refused")
                with zf.open(member) as fh:
                    data = fh.read(MAX_MEMBER_BYTES + 1)
        else:
            path = regular_file(self.path / member)
            if path.stat().st_size > MAX_MEMBER_BYTES:
                raise MetadataError(f"{shown}: {path.stat().st_size} bytes (> {MAX_MEMBER_BYTES}); refused")
            with open(path, "rb") as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise MetadataError(f"{shown}: larger than {MAX_MEMBER_BYTES} bytes; refused")
        return data

    def band_file(self, band: str, kind: str = "FRE") -> str:
        """GDAL path of a reflectance band; raises :class:`MissingFileError` if absent."""
        self.group_of(band)
        base = f"{self.name.name}_{kind}_{band}.tif"
        member = self._members.get(base)
        if member is None:
            raise MissingFileError(f"{self.path}: missing band file {base}")
        return self._gdal_path(member)

    def mask_file(self, kind: str, group: str) -> str:
        """GDAL path of a mask (``kind`` in EDG, CLM, SAT, MG2); raises :class:`MissingFileError`."""
        base = f"{self.name.name}_{kind}_{group}.tif"
        member = self._members.get(base)
        if member is None:
            raise MissingFileError(f"{self.path}: missing mask file MASKS/{base}")
        return self._gdal_path(member)

    def grid(self, group: str) -> Grid:
        """Grid of a resolution group, read from the header of its first band."""
        path = self.band_file(self.groups[group][0])
        with _open(path) as src:
            if src.crs is None or not src.crs.is_projected:
                raise RasterReadError(f"{path}: CRS {src.crs} is not a projected CRS (geographic degrees or none); "
                                      "Theia L2A products are in UTM metres")
            units, factor = src.crs.linear_units_factor
            if abs(factor - 1.0) > 1e-9:  # pixel sizes and shifts are metres everywhere
                raise RasterReadError(f"{path}: CRS units are {units}, not metres; Theia L2A products are in "
                                      "UTM metres")
            _check_north_up(path, src.transform, self._resolution(group))
            return Grid(src.crs, src.transform, src.width, src.height)

    def _resolution(self, group: str) -> float:
        return (VENUS_RESOLUTION if self.sensor == "VENUS" else S2_RESOLUTION)[group]

    # ------------------------------------------------------------------------------------ reading
    def _mask_paths(self, group: str, masks: MaskConfig) -> dict[str, str]:
        """GDAL paths of the masks the configuration uses (a missing one: an error, or skipped when
        ``allow_missing``)."""
        wanted = [k for k, on in (("EDG", masks.use_edg), ("CLM", masks.use_clm), ("SAT", masks.use_sat),
                                  ("MG2", bool(masks.mg2_invalid_bits))) if on]
        paths = {}
        for k in wanted:
            try:
                paths[k] = self.mask_file(k, group)
            except MissingFileError:
                if not masks.allow_missing:
                    raise
                log.warning("%s: no %s_%s mask, ignored (allow_missing)", self.path, k, group)
        return paths

    def _flag_source(self, kind: str, path: str, out: np.ndarray | None, window, ref: Grid,
                     bits: dict[str, list[int]]) -> tuple[np.ndarray, str, object]:
        """Read one file of a window (a band into ``out``): ``(data, test, value)``, the pixels and how
        they say "invalid" (``==`` no-data, any of some ``bits``, or non-zero)."""
        fill = {"band": self.nodata, "EDG": 1}.get(kind, 0)  # outside the raster: no-data / out of swath
        data = _read_checked(path, window, ref, fill=fill, out=out, band=kind == "band")
        if kind == "band":  # data is int16 and no-data an int16 value (checked): compared as int16, not as
            return data, "==", data.dtype.type(self.nodata)  # float64, which would convert every pixel
        if not np.issubdtype(data.dtype, np.integer):  # float-stored flags, rounded on reading
            data = data.astype(np.int64)
        if kind in bits:  # only the bits of the bands read / the configured MG2 bits invalidate
            return data, "bits", _bits(data, bits[kind])
        return data, "!=0", None  # EDG: outside the swath; CLM: any cloud or shadow bit

    def read(
        self,
        bands: tuple[str, ...] | list[str],
        bounds: tuple[float, float, float, float] | None = None,
        *,
        kind: str = "FRE",
        masks: MaskConfig | None = None,
        device: torch.device | str = "cpu",
    ) -> BandStack:
        """Read a window of some bands of one resolution group into a tensor on ``device``.

        Only the window is read from disk. Parts of the window outside the raster are invalid.

        Args:
            bands: bands of one resolution group (e.g. ``("B2", "B3", "B4", "B8")``).
            bounds: (left, bottom, right, top) in the product CRS, on the group's pixel grid;
                None reads the whole raster.
            kind: ``"FRE"`` (slope-corrected) or ``"SRE"`` reflectances.
            masks: which flags invalidate a pixel (default :class:`MaskConfig`).
            device: where the tensors are created.

        Returns:
            A :class:`BandStack` with ``reflectance`` ``(C, H, W)`` float32 and ``valid`` ``(H, W)``.
        """
        masks = masks or MaskConfig()
        bands = tuple(bands)
        groups = {self.group_of(b) for b in bands}
        if len(groups) != 1:
            raise ValueError(f"{self.path}: bands {bands} span several resolution groups {sorted(groups)}")
        group = groups.pop()
        ref = self.grid(group)
        window = _window(ref, bounds, self.path)
        out_transform = rasterio.windows.transform(window, ref.transform)
        h, w = int(window.height), int(window.width)

        band_paths = [self.band_file(band, kind) for band in bands]
        mask_paths = self._mask_paths(group, masks)
        # GDAL releases the GIL while decoding: the files of a window are read in parallel threads,
        # the bands straight into one int16 buffer (page-locked when the device is a GPU, so the copy
        # to the device is a plain DMA); then the threads combine the files' "invalid" flags by blocks
        device = torch.device(device)
        buffer = torch.empty((len(bands), h, w), dtype=torch.int16, pin_memory=device.type == "cuda")
        dn = buffer.numpy()
        order = self.groups[group]
        bits = {"SAT": [order.index(b) for b in bands], "MG2": [b - 1 for b in masks.mg2_invalid_bits]}
        jobs = [("band", p, dn[i]) for i, p in enumerate(band_paths)] + [(k, p, None) for k, p in mask_paths.items()]
        valid_np = np.empty((h, w), dtype=bool)
        with ThreadPoolExecutor(max_workers=min(len(jobs), READ_THREADS)) as pool:
            sources = list(pool.map(lambda job: self._flag_source(*job, window, ref, bits), jobs))
            # then the validity by blocks of rows, every file's flags of a block combined in cache
            step = max(1, FLAG_BLOCK_PIXELS // max(1, w))
            list(pool.map(lambda r0: _valid_rows(sources, valid_np, r0, min(h, r0 + step)), range(0, h, step)))
        valid = torch.from_numpy(valid_np).to(device, non_blocking=True)
        dn_device = buffer.to(device, non_blocking=True)
        return BandStack(None, valid, bands, Grid(ref.crs, out_transform, w, h), dn=dn_device,
                         quantification=self.quantification)


#: Pixels of a window whose flags are combined at a time (a block's temporaries stay in cache).
FLAG_BLOCK_PIXELS = 2**18


def _valid_rows(sources: list[tuple[np.ndarray, str, object]], valid: np.ndarray, r0: int, r1: int) -> None:
    """``valid[r0:r1]``: no file of ``sources`` (see ``TheiaProduct._flag_source``) flags the pixel."""
    invalid = None
    for data, test, value in sources:
        part = data[r0:r1]
        if test == "==":
            flags = part == value
        elif test == "bits":
            flags = np.bitwise_and(part, value) != 0
        else:
            flags = part != 0
        invalid = flags if invalid is None else np.logical_or(invalid, flags, out=invalid)
    np.logical_not(invalid, out=valid[r0:r1])


def safe_member_name(name: str) -> bool:
    """A zip member name that stays inside the archive: relative, no ``..`` part, no backslash or drive."""
    parts = name.split("/")
    return not (name.startswith("/") or "\\" in name or ":" in parts[0] or ".." in parts or "\x00" in name)


def regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (a link to one included); a FIFO, socket or device is refused:
    opening a FIFO blocks until something writes to it, and a hostile archive would hang the run."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise MissingFileError(f"{path}: missing (a link to nothing?)") from exc
    except OSError as exc:
        raise RasterReadError(f"{path}: cannot be examined ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        raise RasterReadError(f"{path}: not a regular file (a FIFO, socket or device); refusing to open it")
    return path


def _check_north_up(path: str, t: Affine, res: float) -> None:
    """Every window and footprint is computed as north-up square pixels of the group's size: a rotated,
    sheared, south-up or resized grid would place the pixels elsewhere without an error. Refused."""
    if t.b != 0 or t.d != 0 or abs(t.a - res) > 1e-6 or abs(t.e + res) > 1e-6:
        raise RasterReadError(f"{path}: geotransform {tuple(t)[:6]} is not north-up with square {res:g} m pixels "
                              "(no rotation), as Theia products are; refusing to place its pixels")


def _open(path: str):
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{path}: unreadable GeoTIFF ({exc})") from exc


def _window(ref: Grid, bounds, product_path) -> rasterio.windows.Window:
    if bounds is None:
        return rasterio.windows.Window(0, 0, ref.width, ref.height)
    left, bottom, right, top = bounds
    res = ref.res
    col = (left - ref.transform.c) / res
    row = (ref.transform.f - top) / res
    width = (right - left) / res
    height = (top - bottom) / res
    vals = np.array([col, row, width, height])
    if np.abs(vals - np.round(vals)).max() > 1e-6:
        raise ValueError(f"{product_path}: bounds {bounds} are not on the {res} m pixel grid of the product")
    col, row, width, height = (int(round(v)) for v in vals)
    if width <= 0 or height <= 0:
        raise ValueError(f"{product_path}: empty window for bounds {bounds}")
    return rasterio.windows.Window(col, row, width, height)


def _bits(flags: np.ndarray, positions: list[int]) -> np.generic:
    """The mask with bits ``positions`` set, as a scalar of the flags' integer type (bits beyond its
    width are left out: such a flag cannot be set in that raster)."""
    width = np.iinfo(flags.dtype).bits
    return np.array(sum(1 << p for p in positions if p < width), dtype=np.uint64).astype(flags.dtype)[()]


def _read_checked(path: str, window, ref: Grid, fill: int, out: np.ndarray | None = None,
                  band: bool = False) -> np.ndarray:
    """Read band 1 of ``path`` over ``window`` after checking its grid matches ``ref``; integer rasters
    of ``out``'s type are read into ``out`` (then returned), others are converted into it. ``band``:
    a reflectance band, whose type must hold digital numbers (reflectance x quantification); the
    pixels its own no-data tag marks become ``fill`` (the product's no-data)."""
    with _open(path) as src:
        if band and np.dtype(src.dtypes[0]).itemsize < 2:
            raise RasterReadError(f"{path}: a {src.dtypes[0]} reflectance band cannot hold reflectance x 10000 "
                                  "(Theia bands are int16); refusing to read it")
        if src.crs != ref.crs:
            raise RasterReadError(f"{path}: CRS {src.crs} differs from the product's {ref.crs}")
        if (src.width, src.height) != (ref.width, ref.height) or not src.transform.almost_equals(ref.transform):
            raise RasterReadError(
                f"{path}: grid {src.width}x{src.height} {tuple(src.transform)[:6]} differs from the "
                f"group's {ref.width}x{ref.height} {tuple(ref.transform)[:6]}"
            )
        inside = (
            window.col_off >= 0 and window.row_off >= 0
            and window.col_off + window.width <= src.width and window.row_off + window.height <= src.height
        )
        direct = out is not None and np.dtype(src.dtypes[0]) == out.dtype
        kwargs = {"window": window, "out": out if direct else None}
        if out is not None and not direct:  # read wide enough for every value and the fill, checked below
            kwargs["out_dtype"] = _wide_type(np.dtype(src.dtypes[0]))
        if not inside:
            kwargs.update(boundless=True, fill_value=fill)
        try:
            data = src.read(1, **kwargs)
        except rasterio.errors.RasterioIOError as exc:
            raise RasterReadError(f"{path}: cannot read pixels ({exc})") from exc
        file_nodata = src.nodata
    if np.issubdtype(data.dtype, np.floating):
        # Some re-encoded products store the integer values as float32: bring them back to integers.
        # A non-finite value is no-data in a band; in a mask an unknown flag, so every bit set (invalid).
        if band:
            _refuse_unit_reflectance(path, data, fill)
        data = np.rint(np.where(np.isfinite(data), data, fill if band else -1))
    if band:
        _file_nodata_as_fill(data, file_nodata, fill)
    if out is not None and not direct:
        _refuse_out_of_range(path, data, out.dtype)
        out[...] = data
        return out
    return data


def _wide_type(source: np.dtype) -> str:
    """A type holding every value of ``source`` and the product's no-data (-10000)."""
    if np.issubdtype(source, np.floating):
        return "float64"
    return "int32" if source.itemsize <= 2 else "int64"


def _file_nodata_as_fill(data: np.ndarray, file_nodata: float | None, fill: float) -> None:
    """The pixels a band's own GeoTIFF no-data tag marks (e.g. 0 or 65535 in a re-encoded uint16
    product) are no-data whatever the metadata says: set to ``fill`` in place."""
    if file_nodata is None or not np.isfinite(file_nodata) or file_nodata == fill:
        return
    info = np.iinfo(data.dtype) if np.issubdtype(data.dtype, np.integer) else None
    if info is not None and not (info.min <= file_nodata <= info.max and file_nodata == round(file_nodata)):
        return  # a tag the pixels cannot hold marks none of them
    # compared in the pixels' own type (a Python float would convert every pixel to float64 first)
    data[data == data.dtype.type(file_nodata)] = fill


def _refuse_out_of_range(path: str, data: np.ndarray, dtype: np.dtype) -> None:
    """A value the buffer's integer type cannot hold would wrap around silently (40000 in a uint16
    band read as int16 is -25536, a valid-looking negative reflectance): refuse the band instead."""
    info = np.iinfo(dtype)
    if not data.size or (data.min() >= info.min and data.max() <= info.max):
        return
    bad = data[(data < info.min) | (data > info.max)]
    raise RasterReadError(f"{path}: value {bad.flat[0]:g} outside the {dtype} range of Theia digital numbers "
                          f"(reflectance x quantification, {info.min}..{info.max}) and not its no-data; "
                          "refusing to read it")


def _refuse_unit_reflectance(path: str, data: np.ndarray, nodata: float) -> None:
    """A float band holding reflectance in 0..1 instead of digital numbers would be read 10000x too
    dark without any error: refuse it (a real window of digital numbers is never all within +-2)."""
    values = data[np.isfinite(data) & (data != nodata)]
    if values.size >= 100 and float(np.abs(values).max()) <= 2.0:
        raise RasterReadError(f"{path}: float values within [-2, 2]: reflectance in 0..1, not the digital numbers "
                              "(reflectance x quantification) of a Theia band; refusing to read it")


__all__ = ["BandStack", "Grid", "MaskConfig", "TheiaProduct", "ProductNameError"]
