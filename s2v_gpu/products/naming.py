"""Theia (MUSCATE) L2A product names.

``SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4`` = platform, acquisition date-time-milliseconds
(UTC), level, MGRS tile, a letter (C: complete, D: distributed subset), processing version.
``VENUS-XS_20180616-105512-000_L2A_ATTO_C_V2-2``: the site is everything between ``L2A_`` and the letter;
site names hold hyphens (``ES-IC3XG``) and sometimes underscores; a site made of anything else
(``..``, a separator, a dot) is not a product name, so a name can never become another path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath

from ..errors import ProductNameError

_S2 = re.compile(
    r"^(?P<platform>SENTINEL2[A-Z])_(?P<date>\d{8})-(?P<time>\d{6})-(?P<ms>\d{3})_L2A_"
    r"T(?P<zone>\d{2}[A-Z]{3})_(?P<letter>[A-Z])_V(?P<major>\d+)-(?P<minor>\d+)$"
)
_VENUS = re.compile(
    r"^(?P<platform>VENUS)(?:-XS)?_(?P<date>\d{8})-(?P<time>\d{6})-(?P<ms>\d{3})_L2A_"
    r"(?P<zone>[A-Za-z0-9][A-Za-z0-9_-]{0,63})_(?P<letter>[A-Z])_V(?P<major>\d+)-(?P<minor>\d+)$"
)


@dataclass(frozen=True)
class ProductName:
    """What a Theia L2A product name says.

    Attributes:
        name: the product name, without folder or ``.zip``.
        sensor: ``"SENTINEL2"`` or ``"VENUS"``.
        platform: ``SENTINEL2A``, ``SENTINEL2B``..., or ``VENUS``.
        acquired: acquisition time, UTC, to the millisecond.
        zone: MGRS tile without the leading ``T`` (``38KPD``) for Sentinel-2, site name for VENuS.
        letter: the product letter (``C`` or ``D``).
        version: processing version as a tuple, ``(1, 4)`` for ``V1-4``.
    """

    name: str
    sensor: str
    platform: str
    acquired: datetime
    zone: str
    letter: str
    version: tuple[int, int]

    @property
    def tile(self) -> str:
        """MGRS tile with its ``T`` (``T38KPD``); Sentinel-2 only."""
        if self.sensor != "SENTINEL2":
            raise AttributeError(f"{self.name}: a VENuS product has a site, not a tile")
        return "T" + self.zone

    @property
    def version_str(self) -> str:
        return f"V{self.version[0]}-{self.version[1]}"


def strip_product_suffix(path: str | PurePath) -> str:
    """The product name of a folder or zip path (``.../NAME`` or ``.../NAME.zip``)."""
    base = PurePath(str(path).rstrip("/")).name
    return base[:-4] if base.lower().endswith(".zip") else base


def parse_product_name(path: str | PurePath) -> ProductName:
    """Parse a Theia L2A product name from a name, a folder path or a zip path.

    Raises:
        ProductNameError: the name is neither a Sentinel-2 nor a VENuS L2A product name.
    """
    name = strip_product_suffix(path)
    for sensor, pattern in (("SENTINEL2", _S2), ("VENUS", _VENUS)):
        m = pattern.match(name)
        if m is None:
            continue
        try:
            acquired = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S").replace(
                microsecond=int(m["ms"]) * 1000, tzinfo=UTC
            )
        except ValueError as exc:
            raise ProductNameError(f"{path}: bad acquisition date/time in product name ({exc})") from exc
        return ProductName(
            name=name,
            sensor=sensor,
            platform=m["platform"],
            acquired=acquired,
            zone=m["zone"],
            letter=m["letter"],
            version=(int(m["major"]), int(m["minor"])),
        )
    raise ProductNameError(
        f"{path}: not a Theia L2A product name (expected e.g. "
        "SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4 or VENUS-XS_20180616-105512-000_L2A_ATTO_C_V2-2)"
    )
