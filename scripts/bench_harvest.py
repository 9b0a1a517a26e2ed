"""Benchmark of the harvest against local servers (rustac's STAC API and an HTTP server of the zips).

    python scripts/bench_harvest.py [--cache bench_cache] [--sites 29] [--years 3] [--json out.json]

1. Bytes fetched over bytes needed, for a fresh harvest of the tiny synthetic site, and for one whose
   every download is cut half-way once (resumed with HTTP Range): 1.00 means nothing fetched twice.
2. The plan of a ``--sites``-site, ``--years``-year query (dry run) answered from a local catalogue of
   that size: VENuS every 2 days and Sentinel-2 every 5 days on two tiles per site, generated items
   shaped like GEODES's; its wall time and the catalogue requests it took (80 items a page).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from s2v_gpu.harvest.app import harvest_sites
from s2v_gpu.harvest.config import CatalogConfig, DownloadConfig, HarvestConfig
from s2v_gpu.harvest.localhost import AssetServer, StacServer
from s2v_gpu.pairing import PairingConfig
from s2v_gpu.products.naming import parse_product_name
from s2v_gpu.sites import SEN2VENUS_SITES
from s2v_gpu.synthetic import generate, preset
from s2v_gpu.synthetic.catalog import catalog_items, make_item


def site_bbox(items: list[dict]) -> list[float]:
    venus = [i for i in items if i["properties"]["identifier"].startswith("VENUS")]
    return [min(i["bbox"][0] for i in venus), min(i["bbox"][1] for i in venus),
            max(i["bbox"][2] for i in venus), max(i["bbox"][3] for i in venus)]


def byte_ratio(root: Path, tmp: Path, cut: bool) -> dict:
    """Harvest the tiny site once into an empty folder; bytes the server sent over bytes needed."""
    with AssetServer(root) as assets:
        items = catalog_items(root, assets.url)
        if cut:
            for item in items:
                asset = next(iter(item["assets"].values()))
                size = int(asset["description"].split("File size: ")[1].split()[0])
                assets.faults[asset["title"]] = [("cut", size // 2)]
        with StacServer(items, tmp) as stac:
            cfg = HarvestConfig(bbox=site_bbox(items), catalog=CatalogConfig(url=stac.url),
                                download=DownloadConfig(backoff_s=0.01))
            summary = harvest_sites(["SYNTH-1"], cfg, PairingConfig(), tmp / ("cut" if cut else "fresh"))
    needed = sum(p.stat().st_size for p in (tmp / ("cut" if cut else "fresh")).glob("*.zip"))
    return {"bytes_needed": needed, "bytes_sent": sum(assets.sent.values()),
            "ratio": sum(assets.sent.values()) / needed, "fetched": summary["downloads"]["fetched"]}


def archive_items(sites: int, years: int) -> list[dict]:
    """Items of ``sites`` SEN2VENuS sites over ``years`` years (names only; no zip behind them)."""
    items, start = [], datetime(2018, 1, 1, tzinfo=UTC)
    for k, (site, info) in enumerate(sorted(SEN2VENUS_SITES.items())[:sites]):
        bbox = (info.lon - 0.2, info.lat - 0.2, info.lon + 0.2, info.lat + 0.2)
        for day in range(0, 365 * years, 2):
            t = start + timedelta(days=day, hours=10, minutes=30)
            name = parse_product_name(f"VENUS-XS_{t:%Y%m%d-%H%M%S}-000_L2A_{site}_C_V2-2")
            items.append(make_item(name, "THEIA_VENUS_L2A", bbox, "http://127.0.0.1:9/x.zip", 10**9, "0" * 32))
        for day in range(0, 365 * years, 5):
            for tile in (f"{31 + k % 20:02d}TCJ", f"{31 + k % 20:02d}TCK"):
                t = start + timedelta(days=day, hours=10, minutes=40)
                name = parse_product_name(f"SENTINEL2A_{t:%Y%m%d-%H%M%S}-461_L2A_T{tile}_C_V2-2")
                items.append(make_item(name, "THEIA_REFLECTANCE_SENTINEL2_L2A", bbox, "http://127.0.0.1:9/x.zip",
                                       8 * 10**8, "0" * 32))
    return items


def plan_scale(sites: int, years: int, tmp: Path) -> dict:
    items = archive_items(sites, years)
    with StacServer(items, tmp) as stac:
        cfg = HarvestConfig(dry_run=True, catalog=CatalogConfig(url=stac.url),
                            start="2018-01-01", end=f"{2018 + years - 1}-12-31")
        names = sorted(SEN2VENUS_SITES)[:sites]
        start = time.perf_counter()
        summary = harvest_sites(names, cfg, PairingConfig(), tmp / "plan")
        seconds = time.perf_counter() - start
    per_site = summary["sites"].values()
    return {"items": len(items), "sites": sites, "years": years, "seconds": seconds,
            "requests": sum(s["requests"] for s in per_site), "pairs": sum(s["pairs"] for s in per_site),
            "products": sum(s["products"] for s in per_site)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="bench_cache")
    parser.add_argument("--sites", type=int, default=29)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not (1 <= args.sites <= len(SEN2VENUS_SITES) and 1 <= args.years <= 10):
        print(f"scripts/bench_harvest.py: --sites in [1, {len(SEN2VENUS_SITES)}], --years in [1, 10]", file=sys.stderr)
        return 2
    root = Path(args.cache) / "tiny_zip"
    if not any(root.glob("*.zip")):
        generate(preset("tiny", zip=True), root)
    results = {}
    with tempfile.TemporaryDirectory(prefix="s2v-bench-harvest-") as tmp:
        for name, cut in (("fresh", False), ("resumed", True)):
            (Path(tmp) / name).mkdir()
            results[name] = byte_ratio(root, Path(tmp) / name, cut)
            r = results[name]
            print(f"{name:<8} bytes fetched / needed = {r['ratio']:.3f} ({r['bytes_sent']} / {r['bytes_needed']}, "
                  f"{r['fetched']} products)", flush=True)
        (Path(tmp) / "scale").mkdir()
        results["plan"] = plan_scale(args.sites, args.years, Path(tmp) / "scale")
    p = results["plan"]
    print(f"plan of {p['sites']} sites x {p['years']} years from {p['items']} items: {p['seconds']:.1f} s, "
          f"{p['requests']} catalogue requests, {p['pairs']} pairs, {p['products']} products")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
