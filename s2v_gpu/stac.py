"""STAC metadata of a dataset (pystac): one Item per pair, a Collection per site folder and, over a
dataset root, a Collection whose children are the sites'.

Written into ``SITE/stac/`` (``collection.json`` and ``{pair id}.json``; assets are the pair's files,
``../{file}``: every link is relative, so the folder can move) at the end of every run, and
``ROOT/stac/collection.json`` by ``s2v-gpu-aggregate``.
Each object is validated against the STAC 1.1 core schemas that pystac ships (no network); the
projection fields are checked against the GeoPackages by the tests.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pystac
from pystac.validation import JsonSchemaSTACValidator

from . import __version__
from .bands import GROUP_10M, GROUP_20M, S2_WAVELENGTH, VENUS_WAVELENGTH
from .dataset import PairEntry, entry_of_row, patch_geometries
from .layout import PAIR_ID_RE, STAC_DIR, SWIR_COLUMN, read_index_rows
from .licences import DATASET_SPDX, licence_of_file, stac_links
from .ownership import OwnedFolder, site_owned_folder
from .writer import atomic_write, own_subfolder

log = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"
#: the extensions whose fields the Items use (proj:*, eo:center_wavelength in bands, processing:software)
EXTENSIONS = ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
              "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
              "https://stac-extensions.github.io/processing/v1.2.0/schema.json"]
LICENSE_NOTE = ("Each file carries the licence of what it derives from: VENuS 5 m tensors CC BY-NC 4.0 "
                "(non-commercial use only), Sentinel-2 tensors Etalab Open Licence 2.0, the rest CC BY 4.0; "
                "attribute CNES / Theia and cite Michel et al., Data 2022, 7, 96.")
_PRODUCT_TIME = re.compile(r"_(\d{8})-(\d{6})")

#: asset key -> (index column, sensor, resolution (m), bands, description)
ASSETS = {
    "s2_10m": ("tensor_10m_b2b3b4b8", "Sentinel-2", 10.0, GROUP_10M["s2"], "Sentinel-2 L2A B2 B3 B4 B8, 10 m"),
    "venus_05m_10mbands": ("tensor_05m_b2b3b4b8", "VENuS", 5.0, GROUP_10M["venus"],
                           "VENuS L2A bands matching Sentinel-2 B2 B3 B4 B8, 5 m, radiometrically fitted"),
    "s2_20m": ("tensor_20m_b5b6b7b8a", "Sentinel-2", 20.0, GROUP_20M["s2"], "Sentinel-2 L2A B5 B6 B7 B8A, 20 m"),
    "venus_05m_20mbands": ("tensor_05m_b5b6b7b8a", "VENuS", 5.0, GROUP_20M["venus"],
                           "VENuS L2A bands matching Sentinel-2 B5 B6 B7 B8A, 5 m, radiometrically fitted"),
    "s2_20m_b11b12": (SWIR_COLUMN, "Sentinel-2", 20.0, ("B11", "B12"),
                      "Sentinel-2 L2A B11 B12, 20 m, co-registered (no VENuS counterpart)"),
}
TENSOR_TYPE = "application/octet-stream; application=pytorch"


def product_datetime(product_id: str) -> datetime:
    """The acquisition time in a Theia product name (``..._20180602-104812-000_L2A_...``), UTC."""
    m = _PRODUCT_TIME.search(product_id)
    if not m:
        raise ValueError(f"{product_id!r}: no acquisition time in the product name")
    return datetime.strptime("".join(m.groups()), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def footprint(gpkg: Path) -> tuple[str, list[float], dict, list[float]]:
    """``(crs, projected bbox, WGS84 polygon, WGS84 bbox)`` of the envelope of a pair's patches."""
    from rasterio.warp import transform_geom

    crs, bounds = patch_geometries(gpkg)
    left, bottom = min(b[0] for b in bounds), min(b[1] for b in bounds)
    right, top = max(b[2] for b in bounds), max(b[3] for b in bounds)
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    geom = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, antimeridian_cutting=True,
                          precision=7)
    xs = [p[0] for p in geom["coordinates"][0]]
    ys = [p[1] for p in geom["coordinates"][0]]
    return crs, [left, bottom, right, top], dict(geom), [min(xs), min(ys), max(xs), max(ys)]


def _bands(sensor: str, bands: tuple[str, ...]) -> list[dict]:
    wavelength = S2_WAVELENGTH if sensor == "Sentinel-2" else VENUS_WAVELENGTH
    return [{"name": b, "description": f"{sensor} {b} surface reflectance x 10000 (int16)",
             "eo:center_wavelength": wavelength[b] / 1000} for b in bands]


def pair_item(entry: PairEntry, row: dict, details: dict | None) -> pystac.Item:
    """The STAC Item of one pair: footprint of its patches, VENuS datetime, projection, one asset per file."""
    crs, proj_bbox, geom, bbox = footprint(entry.folder / entry.files["patches_gpkg"])
    props = {"s2v:site": entry.site, "s2v:patches": entry.n, "s2v:sentinel2_tile": row["s2_tile"],
             "s2v:venus_product": row["venus_product_id"], "s2v:sentinel2_product": row["sentinel2_product_id"],
             "s2v:sentinel2_datetime": product_datetime(row["sentinel2_product_id"]).isoformat(),
             "proj:code": crs, "proj:bbox": proj_bbox,
             "constellation": "VENuS / Sentinel-2", "processing:software": {"s2v_gpu": __version__}}
    if row["venus_zenith_angle"]:  # empty where the VENuS metadata gives no viewing angle: left out
        props["s2v:venus_zenith_angle"] = float(row["venus_zenith_angle"])
    if details:
        props.update({"s2v:shift_m": [float(details["shift_dx_m"]), float(details["shift_dy_m"])],
                      "s2v:registration_matches": int(details["n_matches"])})
        # the geometric quality of the pair (mean, std, RMSE, CE90, CE95 per band group; see geoquality)
        props.update({f"s2v:{k}": _number(v) for k, v in details.items()
                      if k.startswith("geo") and v not in ("", None)})
    item = pystac.Item(entry.pair_id, geom, bbox, product_datetime(row["venus_product_id"]), props,
                       stac_extensions=list(EXTENSIONS))
    for key, (column, sensor, gsd, bands, description) in ASSETS.items():
        if column not in entry.files:  # B11 B12: only with pipeline.swir_20m
            continue
        item.add_asset(key, pystac.Asset(str(entry.folder / entry.files[column]), title=description,
                                         media_type=TENSOR_TYPE, roles=["data"],
                                         extra_fields={"gsd": gsd, "bands": _bands(sensor, bands),
                                                       "license": licence_of_file(entry.files[column]).spdx}))
    item.add_asset("patches", pystac.Asset(str(entry.folder / entry.files["patches_gpkg"]),
                                           media_type=pystac.MediaType.GEOPACKAGE, roles=["metadata"],
                                           title="one polygon per patch, in tensor order, with residual "
                                                 "misregistration attributes",
                                           extra_fields={"license": licence_of_file(entry.files["patches_gpkg"])
                                                         .spdx}))
    return item


def _number(text: str) -> float | int | None:
    """A table cell as a JSON number (None for NaN: JSON has none)."""
    value = float(text)
    if value != value:
        return None
    return int(value) if value.is_integer() and "." not in text else value


def _collection(cid: str, description: str, bboxes: list[list[float]], times: list[datetime]) -> pystac.Collection:
    extent = pystac.Extent(
        pystac.SpatialExtent([[min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
                               max(b[3] for b in bboxes)]]),
        pystac.TemporalExtent([[min(times), max(times)]]))
    providers = [pystac.Provider("CNES / Theia", roles=["producer", "licensor"], url="https://theia.cnes.fr"),
                 pystac.Provider("s2v_gpu", roles=["processor"], extra_fields={"version": __version__})]
    # several licences: "other" (STAC 1.1's licence field takes no SPDX expression with spaces), the
    # expression itself beside it, a link to each text (never fetched) and each asset's own SPDX id
    collection = pystac.Collection(cid, description, extent, license="other", providers=providers,
                                   extra_fields={"s2v:license_note": LICENSE_NOTE, "s2v:license_spdx": DATASET_SPDX})
    for link in stac_links():
        collection.add_link(pystac.Link(link["rel"], link["href"], media_type=link["type"], title=link["title"]))
    return collection


def site_collection(site_dir: Path) -> tuple[pystac.Collection, list[pystac.Item]] | None:
    """The Collection of a site folder and its Items (every pair of its ``index.csv``; None: no pair)."""
    from .layout import DETAILS_FILE, read_table

    rows = read_index_rows(site_dir)
    if not rows:
        return None
    details = {}
    if (site_dir / DETAILS_FILE).exists():
        table = read_table(site_dir / DETAILS_FILE, ["pair_id", "venus_product_id"])
        details = {d["venus_product_id"]: d for d in table}
    entries = [entry_of_row(site_dir, r) for r in rows]
    items = [pair_item(e, r, details.get(r["venus_product_id"])) for e, r in zip(entries, rows)]
    site = entries[0].site
    collection = _collection(f"s2v-{site}", f"Sentinel-2 / VENuS same-day patch triplets of the VENuS site {site} "
                             f"({len(items)} pairs, {sum(e.n for e in entries)} patches), built by s2v_gpu "
                             "after SEN2VENuS (Michel et al., Data 2022).", [i.bbox for i in items],
                             [i.datetime for i in items])
    return collection, items


def _validate(obj: dict, kind: pystac.STACObjectType) -> None:
    """STAC core validation with the schemas pystac ships (offline)."""
    JsonSchemaSTACValidator().validate_core(obj, kind, STAC_VERSION, obj.get("id"))


def _write(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8"))


def _stale_items(stac_dir: Path, keep: set[str]) -> list[Path]:
    """Item files this module wrote before (linked from the previous collection.json) and no longer
    indexed: the only files of ``stac/`` it ever removes."""
    path = stac_dir / "collection.json"
    try:
        links = json.loads(path.read_text(encoding="utf-8")).get("links", []) if path.exists() else []
    except (OSError, ValueError):
        return []
    names = {Path(lk.get("href", "")).name for lk in links if lk.get("rel") == "item"}
    return [stac_dir / n for n in names if n.endswith(".json") and PAIR_ID_RE.match(n[:-5]) and n[:-5] not in keep]


def write_site_stac(site_dir: Path) -> Path | None:
    """``SITE/stac/``: the site's Collection and one Item per pair, validated. Returns the collection path
    (None for a folder without pairs)."""
    site_dir = Path(site_dir)
    built = site_collection(site_dir)
    if built is None:
        return None
    collection, items = built
    owned = site_owned_folder(site_dir, STAC_DIR)
    stac_dir = owned.folder
    collection.catalog_type = pystac.CatalogType.SELF_CONTAINED  # relative links only: the folder can move
    collection.set_self_href(str(stac_dir / "collection.json"))
    for item in items:
        collection.add_item(item)
        item.set_self_href(str(stac_dir / f"{item.id}.json"))
        item.make_asset_hrefs_relative()
    owned.claim([f"{item.id}.json" for item in items] + ["collection.json"])
    for stale in _stale_items(stac_dir, {i.id for i in items}):
        owned.remove(stale.name)
    for item in items:
        obj = item.to_dict(include_self_link=False, transform_hrefs=True)
        _validate(obj, pystac.STACObjectType.ITEM)
        _write(stac_dir / f"{item.id}.json", obj)
    obj = collection.to_dict(include_self_link=False, transform_hrefs=True)
    _validate(obj, pystac.STACObjectType.COLLECTION)
    _write(stac_dir / "collection.json", obj)
    log.info("STAC: %s (%d items)", stac_dir / "collection.json", len(items))
    return stac_dir / "collection.json"


def write_root_stac(root: Path, folders: list[Path]) -> Path:
    """``ROOT/stac/collection.json``: a Collection over the site Collections of ``folders`` (the site
    folders the aggregate counts)."""
    root = Path(root)
    children = [f / STAC_DIR / "collection.json" for f in folders if (f / STAC_DIR / "collection.json").exists()]
    if not children:
        raise FileNotFoundError(f"{root}: no site folder with {STAC_DIR}/collection.json")
    sites = [pystac.Collection.from_file(str(p)) for p in children]
    bboxes = [c.extent.spatial.bboxes[0] for c in sites]
    times = [t for c in sites for t in c.extent.temporal.intervals[0]]
    collection = _collection(f"s2v-{root.resolve().name}", f"s2v_gpu dataset of {len(sites)} VENuS site(s), "
                             "after SEN2VENuS (Michel et al., Data 2022).", bboxes, times)
    owned = OwnedFolder(own_subfolder(root, STAC_DIR))
    owned.claim(["collection.json"])
    obj = collection.to_dict(include_self_link=False, transform_hrefs=False)
    obj["links"] += [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    obj["links"] += [{"rel": "child", "href": f"../{p.parent.parent.name}/{STAC_DIR}/collection.json",
                      "type": "application/json", "title": c.id} for p, c in zip(children, sites)]
    _validate(obj, pystac.STACObjectType.COLLECTION)
    _write(root / STAC_DIR / "collection.json", obj)
    return root / STAC_DIR / "collection.json"
