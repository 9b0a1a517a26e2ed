"""The harvest against a real STAC API server (rustac serve) and a real HTTP server of the zips, both
on 127.0.0.1: the plan, the downloads and their faults, the credentials, and the build from what was
harvested, byte for byte the build from the generator's folder."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fiona
import pytest

from s2v_gpu.config import ConfigError
from s2v_gpu.harvest.app import harvest_sites
from s2v_gpu.harvest.catalog import CatalogError
from s2v_gpu.harvest.config import CatalogConfig, DownloadConfig, HarvestConfig
from s2v_gpu.harvest.localhost import AssetServer, StacServer
from s2v_gpu.pairing import PairingConfig, find_pairs
from s2v_gpu.products import find_products
from s2v_gpu.run import execute
from s2v_gpu.synthetic.catalog import catalog_items
from s2v_gpu.writer import FolderLock

from .test_run import TINY, compose_cfg

SECRET = "s3cr3t-API-key-0123456789"


@pytest.fixture(scope="module")
def archive(tiny_zip_archive, tmp_path_factory):
    """The tiny zip archive, its Items (GEODES-shaped) and a site table holding SYNTH-1's footprint."""
    folder = tmp_path_factory.mktemp("catalog")
    items = catalog_items(tiny_zip_archive.root, "http://placeholder")
    venus = [i for i in items if i["collection"] != "THEIA_REFLECTANCE_SENTINEL2_L2A"]
    w = min(i["bbox"][0] for i in venus)
    s = min(i["bbox"][1] for i in venus)
    e = max(i["bbox"][2] for i in venus)
    n = max(i["bbox"][3] for i in venus)
    table = folder / "sites.gpkg"
    schema = {"geometry": "Polygon", "properties": {"Name": "str"}}
    with fiona.open(table, "w", driver="GPKG", schema=schema, crs="EPSG:4326") as dst:
        dst.write({"geometry": {"type": "Polygon", "coordinates": [[(w, s), (e, s), (e, n), (w, n), (w, s)]]},
                   "properties": {"Name": "SYNTH-1"}})
    return tiny_zip_archive.root, items, table


def _items(items, url):
    out = copy.deepcopy(items)
    for item in out:
        for asset in item["assets"].values():
            asset["href"] = asset["href"].replace("http://placeholder", url)
    return out


def _cfg(stac, table, **download):
    return HarvestConfig(site_table=str(table), catalog=CatalogConfig(url=stac.url, page_size=3),
                         download=DownloadConfig(backoff_s=0.01, timeout_s=10, **download))


@pytest.fixture
def services(archive, tmp_path):
    root, items, table = archive
    with AssetServer(root) as assets, StacServer(_items(items, assets.url), tmp_path) as stac:
        yield assets, stac, table


def _sizes(root):
    return {p.name: p.stat().st_size for p in Path(root).glob("*.zip")}


def test_harvest_then_build_gives_the_bytes_of_the_generators_folder(archive, services, tmp_path):
    root, items, _ = archive
    assets, stac, table = services
    dest = tmp_path / "products"
    summary = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), dest)
    assert summary["sites"]["SYNTH-1"]["requests"] >= 4  # 3 items a page: several pages of each collection
    # the plan is the run's own pairing of the generator's folder
    expected = find_pairs(find_products(root), "SYNTH-1")
    plan = (dest / "harvest_plan.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in plan[1:]] == [p.pair_id for p in expected]
    needed = {p.venus.name for p in expected} | {p.s2.name for p in expected}
    assert {p.name for p in dest.glob("*.zip")} == needed
    sizes = _sizes(root)
    assert summary["downloads"]["fetched_bytes"] == sum(sizes[n] for n in needed) == sum(assets.sent.values())
    left = (dest / "harvest_left_out.tsv").read_text()
    assert "no Sentinel-2 acquisition the same day" in left or "no VENuS acquisition the same day" in left
    # a second harvest fetches nothing
    again = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), dest)
    assert again["downloads"]["fetched"] == 0 and again["downloads"]["present"] == len(needed)
    # built from the harvest: the bytes of a build from the generator's folder
    for products, out in ((root, tmp_path / "ref"), (dest, tmp_path / "harvested")):
        execute(compose_cfg(["data=theia", f"paths.products={products}", f"paths.dataset={out}", *TINY]))
    a, b = tmp_path / "ref" / "SYNTH-1", tmp_path / "harvested" / "SYNTH-1"
    names = sorted(f.name for f in a.iterdir() if f.suffix in (".pt", ".csv"))
    assert names and names == sorted(f.name for f in b.iterdir() if f.suffix in (".pt", ".csv"))
    for name in names:  # same machine, configuration and product bytes: the same operations
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _one_venus(archive):
    root, items, _ = archive
    return next(i["properties"]["identifier"] + ".zip" for i in items if i["properties"]["identifier"].startswith(
        "VENUS") and "20180602" in i["properties"]["identifier"])


def test_a_cut_connection_resumes_fetching_only_the_missing_bytes(archive, services, tmp_path):
    assets, stac, table = services
    name = _one_venus(archive)
    size = _sizes(archive[0])[name]
    assets.faults[name] = [("cut", size // 3), ("cut", size // 3)]
    summary = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), tmp_path / "p")
    assert summary["downloads"]["failed"] == 0 and (tmp_path / "p" / name).stat().st_size == size
    assert assets.sent[name] == size  # bytes fetched / bytes needed = 1.00
    ranges = [r["headers"].get("Range") for r in assets.requests if r["name"] == name]
    assert ranges == [None, f"bytes={size // 3}-", f"bytes={2 * (size // 3)}-"]


def test_500s_and_a_429_are_retried(archive, services, tmp_path):
    assets, stac, table = services
    name = _one_venus(archive)
    assets.faults[name] = [("status", 500), ("status", 503), ("status", 429, {"Retry-After": "1"})]
    summary = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), tmp_path / "p")
    assert summary["downloads"]["failed"] == 0 and (tmp_path / "p" / name).exists()
    assert len([r for r in assets.requests if r["name"] == name]) == 4


def test_a_429_longer_than_allowed_and_retries_spent_give_the_product_up_alone(archive, services, tmp_path):
    assets, stac, table = services
    name = _one_venus(archive)
    assets.faults[name] = [("status", 429, {"Retry-After": "3600"})]
    summary = harvest_sites(["SYNTH-1"], _cfg(stac, table, max_retry_after_s=5), PairingConfig(), tmp_path / "p")
    failed = [o for o in summary["downloads"]["outcomes"] if o["status"] == "failed"]
    assert [o["name"] + ".zip" for o in failed] == [name] and "HTTP 429" in failed[0]["reason"]
    assert summary["downloads"]["fetched"] >= 3 and not (tmp_path / "p" / name).exists()


def test_a_checksum_mismatch_is_refused_and_the_others_continue(archive, tmp_path):
    root, items, table = archive
    name = _one_venus(archive)
    items = copy.deepcopy(items)
    for item in items:
        for asset in item["assets"].values():
            if asset["title"] == name:
                asset["description"] = asset["description"].replace("Checksum MD5: ", "Checksum MD5: 0")[:-1]
    with AssetServer(root) as assets, StacServer(_items(items, assets.url), tmp_path) as stac:
        summary = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), tmp_path / "p")
    failed = [o for o in summary["downloads"]["outcomes"] if o["status"] == "failed"]
    assert len(failed) == 1 and "checksum mismatch" in failed[0]["reason"]
    assert not (tmp_path / "p" / name).exists() and not list((tmp_path / "p").glob(".*.part"))
    assert summary["downloads"]["fetched"] >= 3


def test_a_truncated_zip_is_refused(archive, tmp_path):
    """The catalogue describes (size, MD5) a zip that is itself cut: the zip's own directory refuses it."""
    root, items, table = archive
    name = _one_venus(archive)
    served = tmp_path / "served"
    shutil.copytree(root, served)
    data = (served / name).read_bytes()[:-5000]
    (served / name).write_bytes(data)
    import hashlib

    items = copy.deepcopy(items)
    for item in items:
        for asset in item["assets"].values():
            if asset["title"] == name:
                asset["description"] = (f"File size: {len(data)} bytes\n\nIs online: true\n\nChecksum MD5: "
                                        f"{hashlib.md5(data).hexdigest()}")
    with AssetServer(served) as assets, StacServer(_items(items, assets.url), tmp_path) as stac:
        summary = harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), tmp_path / "p")
    failed = [o for o in summary["downloads"]["outcomes"] if o["status"] == "failed"]
    assert len(failed) == 1 and "not a readable zip" in failed[0]["reason"] and not (tmp_path / "p" / name).exists()


@pytest.mark.parametrize("field, value", [
    ("identifier", "../../VENUS-XS_20180602-104812-000_L2A_SYNTH-1_C_V2-2"),
    ("identifier", "not-a-theia-name"),
    ("title", "../evil/VENUS-XS_20180602-104812-000_L2A_SYNTH-1_C_V2-2.zip"),
])
def test_names_that_are_not_theia_names_never_become_paths(archive, tmp_path, field, value):
    root, items, table = archive
    name = _one_venus(archive)
    items = copy.deepcopy(items)
    for item in items:
        if item["properties"]["identifier"] + ".zip" == name:
            if field == "identifier":
                item["properties"]["identifier"] = value
            else:
                next(iter(item["assets"].values()))["title"] = value
    with AssetServer(root) as assets, StacServer(_items(items, assets.url), tmp_path) as stac:
        harvest_sites(["SYNTH-1"], _cfg(stac, table), PairingConfig(), tmp_path / "p")
    left = (tmp_path / "p" / "harvest_left_out.tsv").read_text()
    assert "not a plain product name" in left or "not a Theia L2A product name" in left or "is not the product" in left
    assert not (tmp_path / "evil").exists() and not (tmp_path / "p" / name).exists()
    assert all(p.parent == tmp_path / "p" for p in (tmp_path / "p").rglob("*"))


def test_an_empty_result_and_no_server_say_so(archive, services, tmp_path):
    assets, stac, table = services
    cfg = _cfg(stac, table)
    cfg.start, cfg.end = "2030-01-01", "2030-12-31"
    summary = harvest_sites(["SYNTH-1"], cfg, PairingConfig(), tmp_path / "p")
    assert summary["sites"]["SYNTH-1"]["pairs"] == 0
    cfg.catalog.url = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(CatalogError, match="no STAC API answered"):
        harvest_sites(["SYNTH-1"], cfg, PairingConfig(), tmp_path / "q")


def test_configuration_errors_come_before_any_request(archive, tmp_path):
    """A key file readable by others, a cloud limit out of range, an unknown site: refused with the
    key named, before any request (the catalogue's address answers nothing: a request would raise a
    CatalogError instead), the key itself never in the message."""
    table = archive[2]
    key = tmp_path / "key"
    key.write_text(SECRET)
    key.chmod(0o644)
    dead = CatalogConfig(url="http://127.0.0.1:9")
    for cfg, site, match in ((HarvestConfig(site_table=str(table), api_key_file=str(key), catalog=dead), "SYNTH-1",
                              "readable by others"),
                             (HarvestConfig(site_table=str(table), max_cloud=150, catalog=dead), "SYNTH-1",
                              "harvest.max_cloud"),
                             (HarvestConfig(catalog=dead), "SYNTH-9", "footprint is not known")):
        with pytest.raises(ConfigError, match=match) as err:
            harvest_sites([site], cfg, PairingConfig(), tmp_path / "p")
        assert SECRET not in str(err.value)
    assert not (tmp_path / "p").exists()


def _cli(args, tmp_path, env=None):
    return subprocess.run([sys.executable, "-m", "s2v_gpu.harvest", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def test_the_api_key_is_sent_and_never_written(archive, services, tmp_path):
    """Through the console command: the key reaches the server in its header, and no output (stdout,
    stderr, plan, summary, Hydra's folder, the products' folder) holds it."""
    assets, stac, table = services
    out = _cli(["site=SYNTH-1", f"paths.products={tmp_path / 'p'}", "catalog=stac", f"harvest.catalog.url={stac.url}",
                f"harvest.site_table={table}"], tmp_path, {"GEODES_API_KEY": SECRET})
    assert out.returncode == 0, out.stderr[-2000:]
    assert all(r["headers"].get("X-API-Key") == SECRET for r in assets.requests) and assets.requests
    assert SECRET not in out.stdout + out.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".zip":
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_second_harvest_of_the_same_folder_is_refused(archive, services, tmp_path):
    assets, stac, table = services
    dest = tmp_path / "p"
    dest.mkdir()
    lock = FolderLock(dest)
    lock.acquire()
    try:
        out = _cli(["site=SYNTH-1", f"paths.products={dest}", "catalog=stac", f"harvest.catalog.url={stac.url}",
                    f"harvest.site_table={table}"], tmp_path)
    finally:
        lock.release()
    assert out.returncode == 2 and "being written by another run" in out.stderr


def test_no_server_exits_1_with_a_clear_message(archive, tmp_path):
    out = _cli(["site=SYNTH-1", f"paths.products={tmp_path / 'p'}", "catalog=stac",
                "harvest.catalog.url=http://127.0.0.1:9", f"harvest.site_table={archive[2]}"], tmp_path)
    assert out.returncode == 1 and "no STAC API answered" in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_a_full_disk_fails_clearly_and_keeps_the_partial_file(archive, services, tmp_path):
    assets, stac, table = services
    dest = tmp_path / "small"
    dest.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(dest)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        summary = harvest_sites(["SYNTH-1"], _cfg(stac, table, parallel=1), PairingConfig(), dest)
        failed = [o for o in summary["downloads"]["outcomes"] if o["status"] == "failed"]
        assert failed and all("No space left on device" in o["reason"] for o in failed)
        assert not [p for p in dest.glob("*.zip") if p.stat().st_size == 0]
    finally:
        subprocess.run(["umount", str(dest)], check=False)


def test_one_command_from_a_site_name(archive, services, tmp_path):
    """``s2v-gpu-run site=SYNTH-1 data=geodes``: harvests what is missing into paths.products, then
    builds; the harvest's settings are refused before any request when wrong."""
    assets, stac, table = services
    args = ["data=geodes", f"paths.products={tmp_path / 'p'}", f"paths.dataset={tmp_path / 'ds'}", "catalog=stac",
            f"harvest.catalog.url={stac.url}", f"harvest.site_table={table}", *TINY]
    summary = execute(compose_cfg(["site=SYNTH-1", *args]))
    assert summary["pairs_in_dataset"] >= 2 and (tmp_path / "p" / "harvest_plan.tsv").exists()
    fetched = sum(assets.sent.values())
    again = execute(compose_cfg(["site=SYNTH-1", *args]))  # everything there: nothing fetched, nothing rewritten
    assert sum(assets.sent.values()) == fetched and again["written"] == 0
    with pytest.raises(ConfigError, match="site is required with data=geodes"):
        execute(compose_cfg(args))
    with pytest.raises(ConfigError, match="harvest.max_cloud"):
        execute(compose_cfg(["site=SYNTH-1", *args, "harvest.max_cloud=-1"]))


def test_a_redirect_to_another_host_never_carries_the_api_key(archive, services, tmp_path):
    """GEODES may redirect a download to an object store: the key goes to the catalogue's host only
    (requests itself would forward a custom header to whatever host a redirect names)."""
    assets, stac, table = services
    name = _one_venus(archive)
    with AssetServer(archive[0]) as other:
        other_url = other.url.replace("127.0.0.1", "localhost")  # another host for the URL, still loopback
        assets.faults[name] = [("status", 302, {"Location": f"{other_url}/download/{name}"})]
        cfg = _cfg(stac, table)
        cfg.api_key_env = "S2V_TEST_KEY"
        os.environ["S2V_TEST_KEY"] = SECRET
        try:
            summary = harvest_sites(["SYNTH-1"], cfg, PairingConfig(), tmp_path / "p")
        finally:
            del os.environ["S2V_TEST_KEY"]
    assert summary["downloads"]["failed"] == 0 and (tmp_path / "p" / name).exists()
    assert [r["name"] for r in other.requests] == [name] and "X-API-Key" not in other.requests[0]["headers"]
    assert all(r["headers"].get("X-API-Key") == SECRET for r in assets.requests)
