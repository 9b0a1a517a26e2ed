"""``s2v-gpu-harvest site=ATTO paths.products=FOLDER``: plan, then download, the same-day pairs of a site.

1. The site's footprint: the 29 SEN2VENuS sites are known (paper Table 2, a 30 km square around
   their centre); any other VENuS site from CESBIO's site table (``harvest.site_table``) or
   ``harvest.bbox``. Decided, with every other setting and the API key, before any request.
2. The catalogue is searched for VENuS L2A over the footprint and Sentinel-2 L2A over it (every tile
   that intersects it), in the date range; the offers are paired by the run's own pairing rule.
3. The plan is written into ``paths.products`` (``harvest_plan.tsv``: a row per pair, both product
   ids, dt, cloud covers, sizes, online or on tape, checksums; ``harvest_left_out.tsv``: every offer
   left out and why) and its totals printed. ``harvest.dry_run=true`` stops there.
4. The planned products are downloaded (:mod:`.download`) as Theia zips, the names the run reads.

Exit status: 0 when every planned product is there, 1 when one is missing (failed, on tape), the
catalogue cannot be reached or offers no pair, 2 for a configuration error or another harvest of the
same folder running.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import asdict
from pathlib import Path

from ..config import ConfigError
from ..pairing import PairingConfig
from ..products import find_products
from ..sites import SEN2VENUS_SITES
from .catalog import CatalogError, open_catalog, search_products, venus_collection
from .config import HarvestAppConfig, HarvestConfig, validate_harvest
from .plan import LEFT_OUT_COLUMNS, PLAN_COLUMNS, Plan, make_plan

__all__ = ["PLAN_FILE", "harvest_sites", "main", "read_api_key", "site_geometry"]

log = logging.getLogger("s2v_gpu.harvest")

PLAN_FILE = "harvest_plan.tsv"
LEFT_OUT_FILE = "harvest_left_out.tsv"
SUMMARY_FILE = "harvest_summary.json"
ALL_SITES = "all"
#: half the side of the square searched around a SEN2VENuS site's centre (a VENuS site is 27.5 km)
SITE_HALF_SIDE_KM = 15.0


def site_geometry(site: str, cfg: HarvestConfig) -> dict:
    """The GeoJSON polygon (WGS84) searched for ``site``.

    Raises:
        ConfigError: the site's footprint is not known (name the keys that give it).
    """
    if cfg.bbox is not None:
        w, s, e, n = cfg.bbox
    elif cfg.site_table:
        return _table_geometry(site, Path(cfg.site_table))
    elif site in SEN2VENUS_SITES:
        info = SEN2VENUS_SITES[site]
        dlat = SITE_HALF_SIDE_KM / 111.32
        dlon = dlat / max(0.05, math.cos(math.radians(info.lat)))
        w, s, e, n = info.lon - dlon, info.lat - dlat, info.lon + dlon, info.lat + dlat
    else:
        raise ConfigError(f"site={site}: its footprint is not known (not one of the 29 SEN2VENuS sites): give "
                          "harvest.site_table=theia_venus.gpkg (CESBIO's table, shipped by sensorsio) or "
                          "harvest.bbox=[west,south,east,north]")
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _table_geometry(site: str, table: Path) -> dict:
    import fiona

    try:
        with fiona.open(table) as src:
            for feature in src:
                if feature["properties"].get("Name") == site:
                    return dict(feature["geometry"].__geo_interface__)
    except (OSError, fiona.errors.FionaError) as exc:
        raise ConfigError(f"harvest.site_table={table}: not a readable site table ({exc})") from exc
    raise ConfigError(f"harvest.site_table={table}: no site named {site}")


def read_api_key(cfg: HarvestConfig) -> str | None:
    """The API key from ``harvest.api_key_file`` (readable by its owner only) or the environment
    variable ``harvest.api_key_env``; None when neither holds one. The key itself is never shown.

    Raises:
        ConfigError: the file is missing, not a regular file, or readable by others.
    """
    if cfg.api_key_file:
        path = Path(cfg.api_key_file)
        try:
            st = path.stat()
        except OSError as exc:
            raise ConfigError(f"harvest.api_key_file={path}: cannot be read ({exc.strerror})") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"harvest.api_key_file={path}: not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(f"harvest.api_key_file={path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                              f"chmod 600 {path}")
        key = path.read_text(encoding="utf-8").strip()
        return key or None
    return os.environ.get(cfg.api_key_env, "").strip() or None


def resolve_sites(site: str | None) -> list[str]:
    """``all`` (the 29 SEN2VENuS sites), one site, or a comma-separated list, each name checked."""
    from ..layout import UnsafeNameError, check_name

    if not site:
        raise ConfigError("site is required: a VENuS site name, a comma-separated list, or all")
    names = sorted(SEN2VENUS_SITES) if site == ALL_SITES else [s.strip() for s in str(site).split(",") if s.strip()]
    try:
        return [check_name(n, "site") for n in names]
    except UnsafeNameError as exc:
        raise ConfigError(f"site={site}: {exc}") from exc


def harvest_sites(sites: list[str], cfg: HarvestConfig, pairing: PairingConfig, dest: Path) -> dict:
    """Plan, then (unless ``dry_run``) download, every site; returns the summary (also in
    ``harvest_summary.json``). Configuration errors are raised before any request.

    Raises:
        ConfigError: a setting, a site's footprint or the API key file is wrong.
        OutputFolderError: another harvest holds ``dest``.
        CatalogError: the catalogue cannot be reached or answers nothing usable.
    """
    from ..writer import FolderLock

    validate_harvest(cfg)
    geometries = {site: site_geometry(site, cfg) for site in sites}
    headers = {cfg.catalog.api_key_header: key} if (key := read_api_key(cfg)) else {}
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"paths.products={dest}: cannot be created ({exc.strerror or exc})") from exc
    lock = FolderLock(dest)
    lock.acquire()
    try:
        plans = _plan_all(geometries, cfg, pairing, dest)
        summary = _summary(plans, cfg)
        if not cfg.dry_run and any(p.pairs for p in plans):
            if not headers:
                log.warning("no API key (harvest.api_key_env=%s, harvest.api_key_file): downloads go without one",
                            cfg.api_key_env)
            summary["downloads"] = _download(plans, cfg, headers, dest)
        _write_json(dest / SUMMARY_FILE, summary)
    finally:
        lock.release()
    return summary


def _plan_all(geometries: dict, cfg: HarvestConfig, pairing: PairingConfig, dest: Path) -> list[Plan]:
    from ..ownership import OwnedFolder
    from ..writer import write_tsv

    client = open_catalog(cfg.catalog)
    venus_id = venus_collection(client, cfg.catalog)
    plans = []
    for site, geometry in geometries.items():
        refused: list[tuple[str, str]] = []
        venus, n1 = search_products(client, cfg.catalog, venus_id, geometry, cfg.start, cfg.end, refused)
        s2, n2 = search_products(client, cfg.catalog, cfg.catalog.sentinel2_collection, geometry, cfg.start,
                                 cfg.end, refused)
        plan = make_plan(site, venus, s2, dest, pairing, cfg.max_cloud, refused, n1 + n2)
        if not venus:
            log.error("site %s: the catalogue holds no VENuS L2A product over its footprint%s (collection %s)", site,
                      _span(cfg), venus_id)
        plans.append(plan)
        _print_totals(plan)
    owned = OwnedFolder(dest)
    owned.claim([PLAN_FILE, LEFT_OUT_FILE, SUMMARY_FILE])  # all at once, before a download can fill the disk
    write_tsv(dest / PLAN_FILE, [{"site": p.site, **pp.row()} for p in plans for pp in p.pairs],
              ["site", *PLAN_COLUMNS])
    write_tsv(dest / LEFT_OUT_FILE, [{"site": p.site, "product": n, "reason": r} for p in plans for n, r in p.left_out],
              LEFT_OUT_COLUMNS)
    return plans


def _print_totals(plan: Plan) -> None:
    products = plan.products
    tape = sum(not p.online for p in products)
    print(f"site {plan.site}: {len(plan.pairs)} pairs, {len(products)} products, {plan.bytes / 1e9:.2f} GB "
          f"({len(products) - tape} online, {tape} on tape); {len(plan.left_out)} offers left out; "
          f"{plan.requests} catalogue requests", flush=True)


def _download(plans: list[Plan], cfg: HarvestConfig, headers: dict, dest: Path) -> dict:
    from .download import fetch_all

    wanted = {p.name.name: p for plan in plans for p in plan.products}
    # a product already under the folder (unzipped, or a zip kept in a sub-folder) is not fetched again;
    # a zip at the top is verified before it counts (download.py)
    present = {name.name for path, name in find_products(dest) if path.is_dir() or path.parent != dest}
    outcomes = fetch_all(list(wanted.values()), dest, cfg.download, headers, present)
    for o in outcomes:
        if o.status in ("failed", "on tape"):
            log.error("%s: %s: %s", o.name, o.status, o.reason)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("present", "fetched", "on tape", "failed")}
    print(f"downloads: {counts['fetched']} fetched ({sum(o.fetched_bytes for o in outcomes) / 1e9:.2f} GB), "
          f"{counts['present']} already there, {counts['on tape']} on tape, {counts['failed']} failed", flush=True)
    return {**counts, "fetched_bytes": sum(o.fetched_bytes for o in outcomes),
            "outcomes": [asdict(o) for o in outcomes]}


def _summary(plans: list[Plan], cfg: HarvestConfig) -> dict:
    return {"catalog": cfg.catalog.url, "start": cfg.start, "end": cfg.end, "max_cloud": cfg.max_cloud,
            "dry_run": cfg.dry_run, "sites": {p.site: {"pairs": len(p.pairs), "products": len(p.products),
                                                       "bytes": p.bytes, "left_out": len(p.left_out),
                                                       "requests": p.requests} for p in plans}}


def _span(cfg: HarvestConfig) -> str:
    return f" from {cfg.start or 'the start'} to {cfg.end or 'today'}" if (cfg.start or cfg.end) else ""


def _write_json(path: Path, data: dict) -> None:
    """The summary beside the products (claimed with the plan); a full disk is logged, not raised (the
    outcomes are printed)."""
    from ..writer import write_json

    try:
        write_json(path, data)
    except OSError as exc:
        log.error("%s", exc)


def exit_status(summary: dict) -> int:
    """0 when every planned product is there; 1 when none was planned or one is missing."""
    if not any(s["pairs"] for s in summary["sites"].values()):
        return 1
    downloads = summary.get("downloads")
    return 0 if downloads is None or not (downloads["failed"] or downloads["on tape"]) else 1


def main() -> None:
    """The console entry point (``s2v-gpu-harvest``, ``python -m s2v_gpu.harvest``)."""
    from ..app import hydra_app
    from ..ownership import ForeignFileError
    from ..writer import OutputFolderError

    def job(cfg: HarvestAppConfig) -> int:
        sites = resolve_sites(cfg.site)
        try:
            summary = harvest_sites(sites, cfg.harvest, cfg.pairing, Path(cfg.paths.products))
        except CatalogError as exc:
            log.error("%s", exc)
            return 1
        return exit_status(summary)

    hydra_app("harvest", HarvestAppConfig, job, refusals=(OutputFolderError, ForeignFileError))


if __name__ == "__main__":
    main()
