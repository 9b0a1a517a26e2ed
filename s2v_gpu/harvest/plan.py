"""The harvest plan of a site: the catalogue's offers paired by the run's own pairing rule.

The products are paired with :func:`s2v_gpu.pairing.find_pairs`, the code that pairs local products
in the run (same UTC day, ``pairing.max_dt_minutes``, the newest processing version, the tile that
covers most of the site), given the paths the products will have once downloaded and the footprints
the catalogue gives. Every product offered and not planned is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..pairing import PairingConfig, find_pairs
from .catalog import CatalogProduct

__all__ = ["LEFT_OUT_COLUMNS", "PLAN_COLUMNS", "Plan", "PlannedPair", "make_plan"]

PLAN_COLUMNS = ["pair_id", "venus_product", "sentinel2_product", "dt_minutes", "venus_cloud", "sentinel2_cloud",
                "venus_bytes", "sentinel2_bytes", "venus_online", "sentinel2_online", "venus_md5", "sentinel2_md5"]
LEFT_OUT_COLUMNS = ["site", "product", "reason"]


@dataclass(frozen=True)
class PlannedPair:
    pair_id: str
    venus: CatalogProduct
    s2: CatalogProduct
    dt_minutes: float

    def row(self) -> dict:
        v, s = self.venus, self.s2

        def cell(x):
            return "" if x is None else x

        return {"pair_id": self.pair_id, "venus_product": v.name.name, "sentinel2_product": s.name.name,
                "dt_minutes": f"{self.dt_minutes:.2f}", "venus_cloud": cell(v.cloud), "sentinel2_cloud": cell(s.cloud),
                "venus_bytes": cell(v.size), "sentinel2_bytes": cell(s.size), "venus_online": str(v.online).lower(),
                "sentinel2_online": str(s.online).lower(), "venus_md5": cell(v.md5), "sentinel2_md5": cell(s.md5)}


@dataclass(frozen=True)
class Plan:
    """What to download for one site: the pairs, and every offered product left out with its reason."""

    site: str
    pairs: list[PlannedPair]
    left_out: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0

    @property
    def products(self) -> list[CatalogProduct]:
        """The products to have, each once (a Sentinel-2 product can serve two VENuS acquisitions)."""
        seen = {}
        for p in self.pairs:
            seen.setdefault(p.venus.name.name, p.venus)
            seen.setdefault(p.s2.name.name, p.s2)
        return list(seen.values())

    @property
    def bytes(self) -> int:
        return sum(p.size or 0 for p in self.products)


def make_plan(site: str, venus: list[CatalogProduct], s2: list[CatalogProduct], dest: Path,
              pairing: PairingConfig, max_cloud: float | None, left_out: list[tuple[str, str]],
              requests: int) -> Plan:
    """Pair the offers of one site; ``left_out`` holds the items already refused by the catalogue step."""
    reasons: dict[str, str] = {}
    usable = []
    for p in [*venus, *s2]:
        if p.name.sensor == "VENUS" and p.name.zone != site:
            reasons[p.name.name] = f"another VENuS site ({p.name.zone})"
        elif max_cloud is not None and p.cloud is not None and p.cloud > max_cloud:
            reasons[p.name.name] = f"cloud cover {p.cloud:g} % > harvest.max_cloud={max_cloud:g}"
        else:
            usable.append(p)
    by_path = {dest / p.zip_name: p for p in usable}
    pairs = find_pairs([(path, p.name) for path, p in by_path.items()], site, pairing,
                       overlap=lambda v, s: _bbox_overlap(by_path[v].bbox, by_path[s].bbox))
    planned = [PlannedPair(pr.pair_id, by_path[pr.venus], by_path[pr.s2], pr.dt_minutes) for pr in pairs]
    used = {p.venus.name.name for p in planned} | {p.s2.name.name for p in planned}
    for p in usable:
        if p.name.name not in used:
            reasons[p.name.name] = _why_unused(p, usable, planned, pairing)
    return Plan(site, planned, [*left_out, *sorted(reasons.items())], requests)


def _why_unused(p: CatalogProduct, usable: list[CatalogProduct], planned: list[PlannedPair],
                pairing: PairingConfig) -> str:
    """Why a usable offer is in no pair: an older version, another tile chosen, no partner, |dt|."""
    same = [q for q in usable if q is not p and q.name.sensor == p.name.sensor and q.name.zone == p.name.zone
            and q.name.acquired == p.name.acquired]
    if any(q.name.version > p.name.version for q in same):
        return "an older processing version of a product offered"
    day = p.name.acquired.date()
    partners = [q for q in usable if q.name.sensor != p.name.sensor and q.name.acquired.date() == day]
    if not partners:
        return f"no {'Sentinel-2' if p.name.sensor == 'VENUS' else 'VENuS'} acquisition the same day"
    close = [q for q in partners if abs((q.name.acquired - p.name.acquired).total_seconds()) / 60
             <= pairing.max_dt_minutes]
    if not close:
        return f"|dt| > pairing.max_dt_minutes={pairing.max_dt_minutes:g} with every same-day partner"
    if p.name.sensor == "SENTINEL2" and any(pp.venus in close for pp in planned):
        return "another Sentinel-2 tile covers more of the site that day"
    return "not chosen by the pairing rule"


def _bbox_overlap(a: tuple, b: tuple) -> float:
    """Overlap area of two WGS84 bounding boxes (degrees squared): the catalogue's footprints rank the
    tiles of one day as the products' grids do on disk."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
