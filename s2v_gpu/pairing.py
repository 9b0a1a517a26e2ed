"""Pair selection (paper section 2.4): same-day VENuS and Sentinel-2 acquisitions of a site.

Rules:

- VENuS products of the site (name field), Sentinel-2 products acquired the same UTC day within
  ``max_dt_minutes`` of it (30 min in the paper, where no pair exceeded it).
- Duplicates (the same acquisition processed twice, e.g. ``V1-4`` and ``V2-2``): the newest
  processing version is kept, the other is logged.
- Several Sentinel-2 tiles over the site the same day (a site on a tile edge): the tile whose
  footprint covers the largest part of the VENuS footprint is kept (one pair per date, as in the
  published dataset, whose pair id holds one tile); ties go to the smaller |dt|, then the tile name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.warp import transform_bounds

from .errors import S2VError
from .layout import pair_id
from .products.naming import ProductName
from .products.product import Grid, TheiaProduct

log = logging.getLogger(__name__)


@dataclass
class PairingConfig:
    max_dt_minutes: float = 30.0


@dataclass
class Pair:
    """A same-day VENuS / Sentinel-2 pair.

    ``dt_minutes`` is the Sentinel-2 time minus the VENuS time (negative: VENuS acquired later, as in
    the paper's Figure 7).
    """

    site: str
    venus: Path
    s2: Path
    venus_name: ProductName
    s2_name: ProductName
    dt_minutes: float
    candidates: list[str] = field(default_factory=list)
    #: ``HHMMSS`` of the VENuS acquisition when it is not the site's first pair of that day
    time_suffix: str | None = None

    @property
    def tile(self) -> str:
        return self.s2_name.zone

    @property
    def date(self) -> str:
        return self.venus_name.acquired.strftime("%Y-%m-%d")

    @property
    def pair_id(self) -> str:
        """``{site}_{mgrs_tile}_{YYYY-MM-DD}`` (paper section 3.3); the second and later VENuS
        acquisitions of a day append ``-{HHMMSS}`` (their acquisition time), so ids are unique."""
        return pair_id(self.site, self.tile, self.date, self.time_suffix)


def _newest(products: list[tuple[Path, ProductName]], key) -> list[tuple[Path, ProductName]]:
    best: dict = {}
    for path, name in products:
        k = key(name)
        if k in best and best[k][1].version >= name.version:
            log.info("duplicate product %s: keeping the newer %s", path, best[k][0].name)
            continue
        if k in best:
            log.info("duplicate product %s: keeping the newer %s", best[k][0], path.name)
        best[k] = (path, name)
    return sorted(best.values(), key=lambda item: item[1].acquired)


def overlap_on_disk(venus_path: Path, s2_path: Path) -> float:
    """Area of the VENuS footprint that a Sentinel-2 product's footprint covers, from the products'
    own grids (-1 where a footprint cannot be read)."""
    try:
        vgrid = TheiaProduct(venus_path, require_metadata=False).grid("XS")
    except (S2VError, OSError) as exc:
        log.warning("cannot read the footprint of %s: %s", venus_path, exc)
        return -1.0
    return _coverage(vgrid, s2_path)


def _coverage(venus: Grid, s2_path: Path) -> float:
    try:
        g = TheiaProduct(s2_path, require_metadata=False).grid("R1")
    except (S2VError, OSError) as exc:
        log.warning("cannot read the footprint of %s: %s", s2_path, exc)
        return -1.0
    sl, sb, sr, st = g.bounds if g.crs == venus.crs else transform_bounds(g.crs, venus.crs, *g.bounds)
    vl, vb, vr, vt = venus.bounds
    return max(0.0, min(vr, sr) - max(vl, sl)) * max(0.0, min(vt, st) - max(vb, sb))


def find_pairs(products: list[tuple[Path, ProductName]], site: str, cfg: PairingConfig | None = None,
               overlap: Callable[[Path, Path], float] | None = None) -> list[Pair]:
    """Same-day pairs of ``site`` among ``products``.

    Args:
        products: ``(path, name)`` of each product (:func:`s2v_gpu.products.find_products`, or the
            catalogue's offers with the paths they will have once downloaded).
        site: the VENuS site.
        cfg: the pairing rule.
        overlap: ``overlap(venus_path, s2_path)``, how much of the VENuS footprint a Sentinel-2
            product covers, to choose among several tiles the same day (default: read from the
            products on disk; the harvest gives the catalogue's footprints).
    """
    cfg, overlap = cfg or PairingConfig(), overlap or overlap_on_disk
    venus = _newest([p for p in products if p[1].sensor == "VENUS" and p[1].zone == site],
                    key=lambda n: n.acquired)
    s2 = _newest([p for p in products if p[1].sensor == "SENTINEL2"], key=lambda n: (n.zone, n.acquired))
    pairs = []
    for vpath, vname in venus:
        same_day = []
        for spath, sname in s2:
            if sname.acquired.date() != vname.acquired.date():
                continue
            dt = (sname.acquired - vname.acquired).total_seconds() / 60.0
            if abs(dt) <= cfg.max_dt_minutes:
                same_day.append((spath, sname, dt))
        if not same_day:
            continue
        chosen = same_day[0]
        if len(same_day) > 1:
            chosen = max(same_day, key=lambda c: (overlap(vpath, c[0]), -abs(c[2]), c[1].zone))
        first_of_day = not pairs or pairs[-1].date != vname.acquired.strftime("%Y-%m-%d")
        pairs.append(Pair(site, vpath, chosen[0], vname, chosen[1], chosen[2],
                          candidates=[c[0].name for c in same_day],
                          time_suffix=None if first_of_day else vname.acquired.strftime("%H%M%S")))
    return pairs


def sites_in(products: list[tuple[Path, ProductName]]) -> list[str]:
    """The VENuS sites present among the products."""
    return sorted({n.zone for _, n in products if n.sensor == "VENUS"})
