"""Writing synthetic products as genuine Theia L2A folders or zips: GeoTIFFs and MTD_ALL.xml."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from ..bands import DEFAULT_NODATA


@dataclass
class GroupRasters:
    """The rasters of one resolution group (R1, R2 or XS)."""

    transform: Affine
    bands: dict[str, np.ndarray]  # band -> int16 DN (H, W)
    masks: dict[str, np.ndarray]  # EDG/CLM/SAT/MG2 -> (H, W)


@dataclass
class ProductSpec:
    """What to write for one product."""

    name: str
    sensor: str  # SENTINEL2 or VENUS
    platform: str
    acquired: datetime
    zone: str  # T31TCJ or the site
    epsg: int
    quantification: float
    viewing_zenith: float
    cloud_percent: float
    groups: dict[str, GroupRasters] = field(default_factory=dict)
    sre_factor: float | None = None


def _write_tif(path: Path, array: np.ndarray, transform: Affine, epsg: int, nodata=None) -> None:
    profile = dict(
        driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype,
        crs=rasterio.crs.CRS.from_epsg(epsg), transform=transform, nodata=nodata,
        tiled=True, blockxsize=256, blockysize=256, compress="deflate",
    )
    if array.shape[0] < 256 or array.shape[1] < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _sub(parent: ET.Element, tag: str, text=None, **attrib) -> ET.Element:
    e = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        e.text = str(text)
    return e


def metadata_xml(spec: ProductSpec, kinds: list[str]) -> bytes:
    """An MTD_ALL.xml with the element tree of the MAJA MUSCATE templates (the parts s2v_gpu reads,
    the file lists and the geopositioning)."""
    root = ET.Element("Muscate_Metadata_Document")
    mi = _sub(root, "Metadata_Identification")
    _sub(mi, "METADATA_FORMAT", "METADATA_MUSCATE", version="1.16")
    _sub(mi, "METADATA_PROFILE", "DISTRIBUTED")
    di = _sub(root, "Dataset_Identification")
    _sub(di, "IDENTIFIER", spec.name.rsplit("_", 1)[0])
    _sub(di, "AUTHORITY", "THEIA")
    _sub(di, "PRODUCER", "MUSCATE")
    _sub(di, "PROJECT", "SENTINEL2" if spec.sensor == "SENTINEL2" else "VENUS")
    _sub(di, "GEOGRAPHICAL_ZONE", spec.zone, type="Tile" if spec.sensor == "SENTINEL2" else "Site")
    pc = _sub(root, "Product_Characteristics")
    _sub(pc, "PRODUCT_ID", spec.name)
    stamp = spec.acquired.strftime("%Y-%m-%dT%H:%M:%S.") + f"{spec.acquired.microsecond // 1000:03d}Z"
    _sub(pc, "ACQUISITION_DATE", stamp)
    _sub(pc, "PRODUCT_VERSION", spec.name.rsplit("_V", 1)[1].replace("-", "."))
    _sub(pc, "PRODUCT_LEVEL", "L2A")
    _sub(pc, "PLATFORM", spec.platform)
    bgl = _sub(pc, "Band_Group_List")
    for group, rasters in spec.groups.items():
        g = _sub(bgl, "Group", group_id=group)
        bl = _sub(g, "Band_List", count=len(rasters.bands))
        for b in rasters.bands:
            _sub(bl, "BAND_ID", b)
    _organisation(_sub(_sub(root, "Product_Organisation"), "Muscate_Product"), spec, kinds)
    _geometry(root, spec)
    ri = _sub(root, "Radiometric_Informations")
    _sub(ri, "REFLECTANCE_QUANTIFICATION_VALUE", f"{spec.quantification:g}")
    svl = _sub(ri, "Special_Values_List")
    _sub(svl, "SPECIAL_VALUE", f"{DEFAULT_NODATA:g}", name="nodata")
    gil = _sub(_sub(_sub(_sub(_sub(root, "Quality_Informations"), "Current_Product"), "Product_Quality_List",
                          level="N2"), "Product_Quality"), "Global_Index_List")
    _sub(gil, "QUALITY_INDEX", f"{spec.cloud_percent:.0f}", name="CloudPercent")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)

def _organisation(mp: ET.Element, spec: ProductSpec, kinds: list[str]) -> None:
    """The image and mask file lists (band_id, group_id, bit_number as in the templates)."""
    il = _sub(mp, "Image_List")
    for kind, nature in (("FRE", "Flat_Reflectance"), ("SRE", "Surface_Reflectance")):
        if kind not in kinds:
            continue
        im = _sub(il, "Image")
        _sub(_sub(im, "Image_Properties"), "NATURE", nature)
        fl = _sub(im, "Image_File_List")
        for rasters in spec.groups.values():
            for b in rasters.bands:
                _sub(fl, "IMAGE_FILE", f"{spec.name}_{kind}_{b}.tif", band_id=b)
    ml = _sub(mp, "Mask_List")
    natures = {"EDG": "Edge", "CLM": "Detailed_Cloud", "SAT": "Saturation", "MG2": "Geophysics"}
    for kind, nature in natures.items():
        mask = _sub(ml, "Mask")
        _sub(_sub(mask, "Mask_Properties"), "NATURE", nature)
        fl = _sub(mask, "Mask_File_List")
        for group, rasters in spec.groups.items():
            path = f"MASKS/{spec.name}_{kind}_{group}.tif"
            if kind == "SAT":
                for bit, b in enumerate(rasters.bands, start=1):
                    _sub(fl, "MASK_FILE", path, group_id=group, band_id=b, bit_number=bit)
            else:
                _sub(fl, "MASK_FILE", path, group_id=group)


def _geometry(root: ET.Element, spec: ProductSpec) -> None:
    """The CRS, the grids of each group and the mean viewing angles."""
    gi = _sub(root, "Geoposition_Informations")
    hcs = _sub(_sub(gi, "Coordinate_Reference_System"), "Horizontal_Coordinate_System")
    _sub(hcs, "HORIZONTAL_CS_TYPE", "PROJECTED")
    _sub(hcs, "HORIZONTAL_CS_CODE", spec.epsg)
    ggl = _sub(_sub(gi, "Geopositioning"), "Group_Geopositioning_List")
    for group, rasters in spec.groups.items():
        gg = _sub(ggl, "Group_Geopositioning", group_id=group)
        h, w = next(iter(rasters.bands.values())).shape
        t = rasters.transform
        for tag, val in (("ULX", t.c), ("ULY", t.f), ("XDIM", t.a), ("YDIM", t.e), ("NROWS", h), ("NCOLS", w)):
            _sub(gg, tag, f"{val:g}" if isinstance(val, float) else val)
    mvl = _sub(_sub(_sub(root, "Geometric_Informations"), "Mean_Value_List"), "Mean_Viewing_Incidence_Angle_List")
    entries = (
        [dict(band_id=b) for r in spec.groups.values() for b in r.bands]
        if spec.sensor == "SENTINEL2" else [dict(detector_id=f"{d:02d}") for d in range(1, 5)]
    )
    for i, attrib in enumerate(entries):
        a = _sub(mvl, "Mean_Viewing_Incidence_Angle", **attrib)
        # a small spread around the mean, as in real documents
        _sub(a, "ZENITH_ANGLE", f"{spec.viewing_zenith + 0.01 * (i - (len(entries) - 1) / 2):.6f}", unit="deg")
        _sub(a, "AZIMUTH_ANGLE", "100.0", unit="deg")


def _sre(dn: np.ndarray, factor: float) -> np.ndarray:
    return np.where(dn == DEFAULT_NODATA, dn, np.rint(dn * factor)).astype(np.int16)


def _raster_jobs(spec: ProductSpec, folder: Path):
    """``(path, array, transform, epsg[, nodata])`` of every raster of the product."""
    for group, rasters in spec.groups.items():
        for b, dn in rasters.bands.items():
            yield folder / f"{spec.name}_FRE_{b}.tif", dn, rasters.transform, spec.epsg, DEFAULT_NODATA
            if spec.sre_factor is not None:
                yield (folder / f"{spec.name}_SRE_{b}.tif", _sre(dn, spec.sre_factor), rasters.transform,
                       spec.epsg, DEFAULT_NODATA)
        for kind, arr in rasters.masks.items():
            yield folder / "MASKS" / f"{spec.name}_{kind}_{group}.tif", arr, rasters.transform, spec.epsg


def write_product(spec: ProductSpec, out_dir: Path, as_zip: bool = False) -> Path:
    """Write a product folder (or zip) named ``spec.name`` under ``out_dir``; returns its path.

    The product is assembled in a temporary folder and renamed into place, so a half-written product
    never carries a valid name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".tmp-{spec.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "MASKS").mkdir(parents=True)
    kinds = ["FRE"] + (["SRE"] if spec.sre_factor is not None else [])
    # one file per task: GDAL compresses without the GIL, so a full site's 30 rasters go out in parallel
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for future in [pool.submit(_write_tif, *job) for job in _raster_jobs(spec, tmp)]:
            future.result()
    (tmp / f"{spec.name}_MTD_ALL.xml").write_bytes(metadata_xml(spec, kinds))
    if as_zip:
        final = out_dir / f"{spec.name}.zip"
        part = out_dir / f".{spec.name}.zip.part"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(tmp.rglob("*")):
                if path.is_file():
                    zf.write(path, f"{spec.name}/{path.relative_to(tmp).as_posix()}")
        os.replace(part, final)
        shutil.rmtree(tmp)
    else:
        final = out_dir / spec.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    return final
