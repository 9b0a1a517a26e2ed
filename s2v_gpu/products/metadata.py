"""Parser of MUSCATE ``*_MTD_ALL.xml`` documents (format 1.14 to 1.16 and MAJA's templates).

Elements read (paths below ``Muscate_Metadata_Document``):

- ``Product_Characteristics/{PRODUCT_ID, ACQUISITION_DATE, PLATFORM, PRODUCT_VERSION}``
- ``Dataset_Identification/GEOGRAPHICAL_ZONE`` (attribute ``type``: Tile or Site)
- ``Radiometric_Informations/REFLECTANCE_QUANTIFICATION_VALUE`` (10000 in the real documents; the
  sensor default of :data:`s2v_gpu.bands.DEFAULT_QUANTIFICATION` is used only when it is absent) and
  ``Special_Values_List/SPECIAL_VALUE[@name="nodata"]``
- ``Geometric_Informations/Mean_Value_List/Mean_Viewing_Incidence_Angle_List/*/ZENITH_ANGLE``
  (per band for Sentinel-2, per detector for VENuS; the mean of all entries is reported)
- ``Quality_Informations/.../QUALITY_INDEX[@name="CloudPercent"]`` (first occurrence: current product)
- ``Product_Organisation/Muscate_Product/{Image_List, Mask_List}`` with band_id / bit_number attributes
- ``Geoposition_Informations/.../HORIZONTAL_CS_CODE`` (EPSG code)

MAJA templates prefix example values with ``NOT_INITIALIZED``: such a value counts as absent (the
sensor default applies), except in the image and mask file lists, whose example names are kept.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..bands import DEFAULT_NODATA, DEFAULT_QUANTIFICATION
from ..errors import MetadataError

_PLACEHOLDER = "NOT_INITIALIZED"


@dataclass(frozen=True)
class MaskEntry:
    """One ``MASK_FILE`` entry of the Mask_List."""

    nature: str
    path: str
    group: str | None = None
    band: str | None = None
    bit: int | None = None


@dataclass
class ProductMetadata:
    """The parts of an MTD_ALL.xml that s2v_gpu uses."""

    source: str
    product_id: str | None
    sensor: str
    platform: str | None
    acquired: datetime | None
    zone: str | None
    zone_type: str | None
    version: str | None
    quantification: float
    quantification_from_document: bool
    nodata: float
    mean_viewing_zenith: float
    cloud_percent: float
    epsg: int | None
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    masks: list[MaskEntry] = field(default_factory=list)


def _text(elem: ET.Element | None, keep_placeholder: bool = False) -> str | None:
    """Stripped text of ``elem``; a template placeholder counts as absent unless ``keep_placeholder``
    (file lists of templates keep their example names, whose structure is what matters)."""
    if elem is None or elem.text is None:
        return None
    value = elem.text.strip()
    if value.startswith(_PLACEHOLDER):
        if not keep_placeholder:
            return None
        value = value[len(_PLACEHOLDER):].strip()
    return value or None


def _float(elem: ET.Element | None, default: float) -> float:
    value = _text(elem)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        return default


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    value = value.rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


#: The largest metadata document accepted once decompressed (real ones are well under 1 MB).
MAX_DOCUMENT_BYTES = 32 * 2**20


def _gunzip_bounded(data: bytes, source: str) -> bytes:
    """gunzip, refusing a document that inflates past :data:`MAX_DOCUMENT_BYTES` (a zip bomb)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_DOCUMENT_BYTES + 1)
    except zlib.error as exc:
        raise MetadataError(f"{source}: corrupt gzip-compressed metadata ({exc})") from exc
    if len(out) > MAX_DOCUMENT_BYTES:
        raise MetadataError(f"{source}: inflates to more than {MAX_DOCUMENT_BYTES} bytes; refused")
    if not d.eof:
        raise MetadataError(f"{source}: corrupt gzip-compressed metadata (truncated)")
    return out


def read_metadata_bytes(data: bytes, source: str) -> ProductMetadata:
    """Parse an MTD_ALL.xml document given as bytes (gzip-compressed documents are accepted).

    Args:
        data: the document.
        source: where it came from, used in error messages.

    Raises:
        MetadataError: the document is not XML, not a MUSCATE document, or names no sensor.
    """
    if data[:2] == b"\x1f\x8b":
        data = _gunzip_bounded(data, source)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MetadataError(f"{source}: not a valid XML document ({exc})") from exc
    if root.tag != "Muscate_Metadata_Document":
        raise MetadataError(f"{source}: root element is <{root.tag}>, expected <Muscate_Metadata_Document>")

    pc = root.find("Product_Characteristics")
    if pc is None:
        raise MetadataError(f"{source}: no <Product_Characteristics> element")
    platform = _text(pc.find("PLATFORM"))
    sensor = _sensor(platform, _text(root.find("Dataset_Identification/PROJECT")), source)
    zone_elem = root.find("Dataset_Identification/GEOGRAPHICAL_ZONE")
    quantification, from_document, nodata = _radiometry(root.find("Radiometric_Informations"), sensor)
    zeniths = [_float(e, math.nan) for e in root.findall(
        "Geometric_Informations/Mean_Value_List/Mean_Viewing_Incidence_Angle_List/"
        "Mean_Viewing_Incidence_Angle/ZENITH_ANGLE")]
    zeniths = [z for z in zeniths if not math.isnan(z)]
    cloud = next((_float(qi, math.nan) for qi in root.iter("QUALITY_INDEX") if qi.get("name") == "CloudPercent"),
                 math.nan)
    epsg_text = _text(root.find("Geoposition_Informations/Coordinate_Reference_System/"
                                "Horizontal_Coordinate_System/HORIZONTAL_CS_CODE"))
    return ProductMetadata(
        source=source,
        product_id=_text(pc.find("PRODUCT_ID")),
        sensor=sensor,
        platform=platform,
        acquired=_parse_time(_text(pc.find("ACQUISITION_DATE"))),
        zone=_text(zone_elem),
        zone_type=zone_elem.get("type") if zone_elem is not None else None,
        version=_text(pc.find("PRODUCT_VERSION")),
        quantification=quantification,
        quantification_from_document=from_document,
        nodata=nodata,
        mean_viewing_zenith=sum(zeniths) / len(zeniths) if zeniths else math.nan,
        cloud_percent=cloud,
        epsg=int(epsg_text) if epsg_text and epsg_text.isdigit() else None,
        images=_images(root),
        masks=_masks(root),
    )


def _sensor(platform: str | None, project: str | None, source: str) -> str:
    hint = (platform or project or "").upper()
    if hint.startswith("SENTINEL"):
        return "SENTINEL2"
    if hint.startswith("VENUS"):
        return "VENUS"
    raise MetadataError(f"{source}: unknown platform {platform!r} (expected SENTINEL2x or VENUS)")


def _radiometry(rad: ET.Element | None, sensor: str) -> tuple[float, bool, float]:
    """(quantification, whether the document gives it, no-data value)."""
    quant_elem = rad.find("REFLECTANCE_QUANTIFICATION_VALUE") if rad is not None else None
    quantification = _float(quant_elem, DEFAULT_QUANTIFICATION[sensor])
    nodata = DEFAULT_NODATA
    if rad is not None:
        for sv in rad.iter("SPECIAL_VALUE"):
            if sv.get("name") == "nodata":
                nodata = _float(sv, DEFAULT_NODATA)
    return quantification, _text(quant_elem) is not None, nodata


def _images(root: ET.Element) -> dict[str, dict[str, str]]:
    images: dict[str, dict[str, str]] = {}
    for image in root.findall("Product_Organisation/Muscate_Product/Image_List/Image"):
        nature = _text(image.find("Image_Properties/NATURE")) or ""
        files = {}
        for f in image.findall("Image_File_List/IMAGE_FILE"):
            key = f.get("band_id") or f.get("group_id") or ""
            if _text(f, keep_placeholder=True):
                files[key] = _text(f, keep_placeholder=True)
        images[nature] = files
    return images


def _masks(root: ET.Element) -> list[MaskEntry]:
    masks = []
    for mask in root.findall("Product_Organisation/Muscate_Product/Mask_List/Mask"):
        nature = _text(mask.find("Mask_Properties/NATURE")) or ""
        for f in mask.findall("Mask_File_List/MASK_FILE"):
            bit = f.get("bit_number")
            masks.append(MaskEntry(nature=nature, path=_text(f, keep_placeholder=True) or "", group=f.get("group_id"),
                                   band=f.get("band_id"), bit=int(bit) if bit and bit.isdigit() else None))
    return masks


def read_metadata(path) -> ProductMetadata:
    """Parse an MTD_ALL.xml file (plain or ``.gz``). Raises :class:`MetadataError` if unreadable."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot read metadata ({exc.strerror or exc})") from exc
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MetadataError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes; refused")
    return read_metadata_bytes(data, str(path))
