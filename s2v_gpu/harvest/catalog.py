"""Searching a STAC API (GEODES or any other) for Theia L2A products, with pystac-client.

Only the STAC Item Search core is used (collections, intersects, datetime, limit, paging by the
``next`` links): every STAC API answers it. The cloud limit, the product version and the tile are
applied here, on the items' properties, by the same code for every catalogue. An item becomes a
:class:`CatalogProduct` only when its name passes the Theia naming rules of the product reader: a
name from a catalogue never becomes a path unchecked.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import ProductNameError, S2VError
from ..products.naming import ProductName, parse_product_name
from .config import CatalogConfig

__all__ = ["CatalogError", "CatalogProduct", "open_catalog", "product_of_item", "search_products",
           "venus_collection"]

log = logging.getLogger(__name__)

_SIZE = re.compile(r"File size:\s*(\d+)\s*bytes", re.I)
_ONLINE = re.compile(r"Is online:\s*(true|false)", re.I)
_MD5 = re.compile(r"Checksum MD5:\s*([0-9a-fA-F]{32})\b")
#: multihash of an MD5 digest (file extension's file:checksum): code 0xd5, length 0x10
_MULTIHASH_MD5 = "d510"


class CatalogError(S2VError, RuntimeError):
    """The catalogue cannot be reached or answers something unusable; the message says which and why."""


@dataclass(frozen=True)
class CatalogProduct:
    """One product offered by the catalogue, its name checked."""

    name: ProductName
    item_id: str
    collection: str
    href: str
    size: int | None
    md5: str | None
    online: bool
    cloud: float | None
    bbox: tuple[float, float, float, float]

    @property
    def zip_name(self) -> str:
        return f"{self.name.name}.zip"


def open_catalog(cfg: CatalogConfig):
    """A pystac-client ``Client`` of the catalogue.

    Raises:
        CatalogError: no answer, or not a STAC API.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        return Client.open(cfg.url, timeout=cfg.timeout_s)
    except (APIError, OSError, ValueError) as exc:
        raise CatalogError(f"harvest.catalog.url={cfg.url}: no STAC API answered ({_short(exc)})") from exc


def venus_collection(client, cfg: CatalogConfig) -> str:
    """The VENuS L2A collection id: the configured one, else the one whose id holds every word of
    ``venus_collection_words`` in the catalogue's collections list.

    Raises:
        CatalogError: none or several match.
    """
    if cfg.venus_collection:
        return cfg.venus_collection
    try:
        ids = [c.id for c in client.get_collections()]
    except Exception as exc:  # noqa: BLE001 - any failure of the listing is reported the same way
        raise CatalogError(f"{cfg.url}: cannot list the collections ({_short(exc)})") from exc
    words = [w.upper() for w in cfg.venus_collection_words]
    found = [i for i in ids if all(w in i.upper() for w in words)]
    if len(found) != 1:
        raise CatalogError(f"{cfg.url}: {len(found)} collections hold {' and '.join(words)} ({found or ids[:10]}); "
                           "set harvest.catalog.venus_collection")
    return found[0]


def search_products(client, cfg: CatalogConfig, collection: str, geometry: dict, start: str | None,
                    end: str | None, left_out: list) -> tuple[list[CatalogProduct], int]:
    """Every product of ``collection`` intersecting ``geometry`` (GeoJSON, WGS84) acquired from
    ``start`` to ``end`` (dates, inclusive), and the requests it took. Items that are not usable
    products go to ``left_out`` as ``(item id, reason)``.

    Raises:
        CatalogError: the search failed, or returned more than ``max_pages`` pages.
    """
    span = None if not (start or end) else (f"{start}T00:00:00Z" if start else "..") + "/" + (
        f"{end}T23:59:59Z" if end else "..")
    try:
        search = client.search(collections=[collection], intersects=geometry, datetime=span, limit=cfg.page_size)
        products, pages = [], 0
        for page in search.pages_as_dicts():
            pages += 1
            if pages > cfg.max_pages:
                raise CatalogError(f"{cfg.url}: more than harvest.catalog.max_pages={cfg.max_pages} pages of "
                                   f"{cfg.page_size} items for {collection}; narrow the dates")
            for item in page.get("features", []):
                try:
                    products.append(product_of_item(item, collection))
                except ValueError as exc:
                    left_out.append((str(item.get("id"))[:200], str(exc)))
    except CatalogError:
        raise
    except Exception as exc:  # noqa: BLE001 - pystac-client raises several kinds; all mean "no usable answer"
        raise CatalogError(f"{cfg.url}: the search of {collection} failed ({_short(exc)})") from exc
    return products, pages


def product_of_item(item: dict, collection: str) -> CatalogProduct:
    """The product an item offers: its name checked by the reader's naming rules, its data asset.

    Raises:
        ValueError: the item is not a usable Theia product (the message says why).
    """
    props = item.get("properties") or {}
    asset = _data_asset(item)
    title = str(asset.get("title") or "")
    raw = str(props.get("identifier") or title.removesuffix(".zip") or item.get("id") or "")
    name = checked_name(raw)
    if title and title not in (f"{name.name}.zip", name.name):
        raise ValueError(f"its data asset {title!r} is not the product {name.name}")
    href = str(asset.get("href") or "")
    if not href.startswith(("http://", "https://")):
        raise ValueError(f"its data asset's address {href[:80]!r} is not http(s)")
    desc = str(asset.get("description") or "")
    size = asset.get("file:size") or (int(m[1]) if (m := _SIZE.search(desc)) else None)
    checksum = str(asset.get("file:checksum") or "")
    md5 = checksum[4:].lower() if checksum.startswith(_MULTIHASH_MD5) else (m[1].lower() if (m := _MD5.search(desc))
                                                                            else None)
    online = (m[1].lower() == "true") if (m := _ONLINE.search(desc)) else props.get("online", True) is not False
    cloud = props.get("eo:cloud_cover")
    bbox = item.get("bbox") or [0.0, 0.0, 0.0, 0.0]
    return CatalogProduct(name, str(item.get("id")), collection, href, int(size) if size else None, md5, bool(online),
                          float(cloud) if cloud is not None else None, tuple(float(v) for v in bbox[:4]))


def checked_name(raw: str) -> ProductName:
    """A product name from a catalogue, accepted only as the reader accepts a product's own name: a
    plain Theia L2A name, no folder, no ``..``, nothing around it.

    Raises:
        ValueError: anything else.
    """
    if not raw or "/" in raw or "\\" in raw or raw != PurePosixPath(raw).name or raw.startswith("."):
        raise ValueError(f"its name {raw[:120]!r} is not a plain product name")
    try:
        name = parse_product_name(raw)
    except ProductNameError as exc:
        raise ValueError(f"its name {raw[:120]!r} is not a Theia L2A product name") from exc
    if name.name != raw.removesuffix(".zip"):
        raise ValueError(f"its name {raw[:120]!r} is not a plain product name")
    return name


def _data_asset(item: dict) -> dict:
    assets = item.get("assets") or {}
    for asset in assets.values():
        kind = str(asset.get("type") or "")
        if "data" in (asset.get("roles") or []) and ("zip" in kind or str(asset.get("href", "")).endswith(".zip")
                                                     or str(asset.get("title", "")).endswith(".zip")):
            return asset
    raise ValueError("no zip data asset")


def _short(exc: BaseException) -> str:
    """An exception in one line, without what an HTTP library may echo (headers are never included)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
