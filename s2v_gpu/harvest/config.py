"""Typed configuration of the harvest: the catalogue (a config group), the search, the downloads.

Every default lives here; ``conf/catalog/*.yaml`` holds only what differs between catalogues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..pairing import PairingConfig

__all__ = ["CatalogConfig", "DownloadConfig", "HarvestAppConfig", "HarvestConfig", "HarvestPaths",
           "validate_harvest"]


@dataclass
class CatalogConfig:
    """A STAC API serving Theia L2A products (GEODES by default: ``conf/catalog/geodes.yaml``)."""

    #: the API's root (its landing page); searches go to ``{url}/search``
    url: str = "https://geodes-portal.cnes.fr/api/stac"
    #: Sentinel-2 L2A (MAJA) collection id
    sentinel2_collection: str = "THEIA_REFLECTANCE_SENTINEL2_L2A"
    #: VENuS L2A collection id; None: found in the collections list (its id changed over time): the
    #: one whose id holds every word of ``venus_collection_words``
    venus_collection: str | None = None
    venus_collection_words: list[str] = field(default_factory=lambda: ["VENUS", "L2A"])
    #: items per page (GEODES serves at most 80)
    page_size: int = 80
    #: pages read per search at most (a bound on the requests of one search)
    max_pages: int = 500
    #: seconds to wait for each catalogue answer
    timeout_s: float = 60.0
    #: the HTTP header carrying the API key on downloads
    api_key_header: str = "X-API-Key"


@dataclass
class DownloadConfig:
    #: downloads at once
    parallel: int = 2
    #: tries of one product after a timeout, a cut connection, a 5xx or a 429
    retries: int = 5
    #: first wait between tries (doubled each time), seconds
    backoff_s: float = 2.0
    #: longest wait honoured from a 429's Retry-After (a longer one gives the product up for this run)
    max_retry_after_s: float = 300.0
    #: seconds without a byte before a download is cut and retried
    timeout_s: float = 60.0
    #: bytes read at a time
    chunk_bytes: int = 1 << 20


@dataclass
class HarvestConfig:
    """What to harvest for a site: dates, cloud limit, where the credentials are."""

    #: first and last acquisition dates (YYYY-MM-DD); None: the whole archive
    start: str | None = None
    end: str | None = None
    #: products above this cloud cover (percent, the catalogue's eo:cloud_cover) are left out; None: keep all
    max_cloud: float | None = None
    #: the site's footprint: the 29 SEN2VENuS sites are known; another VENuS site needs CESBIO's site
    #: table (theia_venus.gpkg, shipped by sensorsio) or a bbox [west, south, east, north] in degrees
    site_table: str | None = None
    bbox: list[float] | None = None
    #: plan only: write the plan and print the totals, download nothing
    dry_run: bool = False
    #: the environment variable holding the API key, or a file holding it (readable by its owner only)
    api_key_env: str = "GEODES_API_KEY"
    api_key_file: str | None = None
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)


@dataclass
class HarvestPaths:
    #: where the products go (the run's paths.products)
    products: str = "products"


@dataclass
class HarvestAppConfig:
    #: one site, a comma-separated list, or ``all`` (the 29 SEN2VENuS sites)
    site: str = "all"
    paths: HarvestPaths = field(default_factory=HarvestPaths)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)


def validate_harvest(cfg: HarvestConfig) -> None:
    """Refuse values that would fail later or mean nothing, naming the key, before any request.

    Raises:
        ConfigError: the first problem found.
    """
    from datetime import date

    from ..config import refuse_failed

    def is_date(text):
        try:
            date.fromisoformat(text)
            return True
        except (TypeError, ValueError):
            return False

    c, d = cfg.catalog, cfg.download
    refuse_failed([
        (cfg.start is None or is_date(cfg.start), f"harvest.start={cfg.start} must be a date YYYY-MM-DD"),
        (cfg.end is None or is_date(cfg.end), f"harvest.end={cfg.end} must be a date YYYY-MM-DD"),
        (not (is_date(cfg.start) and is_date(cfg.end)) or cfg.start <= cfg.end,
         f"harvest.start={cfg.start} must not be after harvest.end={cfg.end}"),
        (cfg.max_cloud is None or (math.isfinite(cfg.max_cloud) and 0 <= cfg.max_cloud <= 100),
         f"harvest.max_cloud={cfg.max_cloud} must be a percentage in [0, 100]"),
        (cfg.bbox is None or (len(cfg.bbox) == 4 and all(math.isfinite(v) for v in cfg.bbox)
                              and cfg.bbox[0] < cfg.bbox[2] and cfg.bbox[1] < cfg.bbox[3]),
         f"harvest.bbox={cfg.bbox} must be [west, south, east, north] in degrees"),
        (c.url.startswith(("http://", "https://")), f"harvest.catalog.url={c.url} must be an http(s) URL"),
        (1 <= c.page_size <= 1000, f"harvest.catalog.page_size={c.page_size} must be in [1, 1000]"),
        (c.max_pages >= 1, f"harvest.catalog.max_pages={c.max_pages} must be >= 1"),
        (math.isfinite(c.timeout_s) and c.timeout_s > 0, f"harvest.catalog.timeout_s={c.timeout_s} must be > 0"),
        (1 <= d.parallel <= 16, f"harvest.download.parallel={d.parallel} must be in [1, 16]"),
        (0 <= d.retries <= 50, f"harvest.download.retries={d.retries} must be in [0, 50]"),
        (math.isfinite(d.backoff_s) and d.backoff_s >= 0, f"harvest.download.backoff_s={d.backoff_s} must be >= 0"),
        (math.isfinite(d.max_retry_after_s) and d.max_retry_after_s >= 0,
         f"harvest.download.max_retry_after_s={d.max_retry_after_s} must be >= 0"),
        (math.isfinite(d.timeout_s) and d.timeout_s > 0, f"harvest.download.timeout_s={d.timeout_s} must be > 0"),
        (d.chunk_bytes >= 1024, f"harvest.download.chunk_bytes={d.chunk_bytes} must be >= 1024"),
    ])
