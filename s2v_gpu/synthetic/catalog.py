"""STAC Items for the synthetic products, shaped like GEODES's, for a local catalogue in the tests.

GEODES serves a Theia product as an Item whose ``id`` is a URN, whose ``properties.identifier`` is
the product name, and whose data asset is the zip, keyed and titled by its file name, its size,
online state and MD5 given in the asset's description (CNES/pyGeodes's serialised item shows the
format). :func:`catalog_items` writes that shape for the zips of a synthetic archive, with hrefs on
a base URL the tests serve them from; the harvest reads nothing else.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from ..products.naming import ProductName

__all__ = ["catalog_items", "item_of_zip", "make_item"]


def item_of_zip(path: Path, collection: str, base_url: str, cloud: float = 0.0, online: bool = True) -> dict:
    """The GEODES-shaped Item of one product zip (its footprint from the product's own grid)."""
    from rasterio.warp import transform_bounds

    from ..products import TheiaProduct

    product = TheiaProduct(path, require_metadata=False)
    grid = product.grid("XS" if product.sensor == "VENUS" else "R1")
    bbox = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    return make_item(product.name, collection, bbox, f"{base_url.rstrip('/')}/download/{path.name}",
                     path.stat().st_size, md5, cloud, online)


def make_item(name: ProductName, collection: str, bbox, href: str, size: int, md5: str, cloud: float = 0.0,
              online: bool = True) -> dict:
    """A GEODES-shaped Item of a product named ``name`` whose zip is at ``href``."""
    w, s, e, n = bbox
    stamp = name.acquired.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    urn = f"URN:FEATURE:DATA:gdh:{uuid.uuid5(uuid.NAMESPACE_URL, name.name)}:V1"
    props = {"identifier": name.name, "datetime": stamp, "start_datetime": stamp, "end_datetime": stamp,
             "eo:cloud_cover": cloud, "platform": name.platform, "processing:level": "L2A", "latest": True,
             "product:type": "REFLECTANCE"}
    if name.sensor == "SENTINEL2":
        props["grid:code"] = f"MGRS-{name.zone}"
    description = (f"File size: {size} bytes\n\nIs reference: false\n\nIs online: "
                   f"{str(online).lower()}\n\nDatatype: RAWDATA\n\nChecksum MD5: {md5}")
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": urn, "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n], "properties": props, "links": [],
        "assets": {f"{name.name}.zip": {"href": href, "type": "application/zip", "title": f"{name.name}.zip",
                                        "description": description, "roles": ["data"]}},
    }


def catalog_items(root: Path, base_url: str, venus_collection: str = "THEIA_VENUS_L2A",
                  s2_collection: str = "THEIA_REFLECTANCE_SENTINEL2_L2A") -> list[dict]:
    """The Items of every product zip under ``root`` (a synthetic archive written with ``zip=True``)."""
    items = []
    for path in sorted(Path(root).glob("*.zip")):
        collection = venus_collection if path.name.startswith("VENUS") else s2_collection
        items.append(item_of_zip(path, collection, base_url))
    return items
