"""``python -m s2v_gpu.run [site=NAME] [key=value ...]``: build the SEN2VENuS layout for one site.

With ``data=demo`` (the default) it runs on the embedded synthetic demo (generated once into
``paths.demo``). Pairs already complete in the site folder are skipped, so a rerun resumes; a pair
that fails is recorded with its reason and the run goes on. Exit status: 0 when at least one pair is
in the dataset at the end, 1 when nothing could be processed, 2 when the configuration (or the
output folder: another configuration, another writer) is wrong — reported before any pair is read.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .cache import PairCache
from .config import (
    CacheMode,
    ConfigError,
    DataSource,
    OutputFormat,
    RunConfig,
    config_hash,
    method_config,
    validate,
)
from .errors import S2VError
from .hostmem import retain_freed_memory
from .layout import CARD_FILE, LICENCE_FILE, REPORT_DIR, STAC_DIR, Layout, pair_file_names, published_prefix
from .ownership import ForeignFileError
from .pairing import Pair, find_pairs, sites_in
from .pipeline import PairResult, PairSkipped, finish_pair, load_pair, prepare_pair, process_pair
from .products import find_products
from .provenance import software_versions
from .sharing import JobSlot
from .synthetic import TRUTH_FILE, generate, preset
from .threads import apply_threads
from .writer import LICENCE_TEXT, OutputFolderError, SiteWriter, write_pair

log = logging.getLogger("s2v_gpu.run")


def resolve_device(name: str, job_num: int | None = None) -> torch.device:
    """``auto``: CUDA when available, else the CPU. With several visible GPUs, job k of a multirun
    takes ``cuda:(k mod count)``, so parallel jobs on one machine do not share a GPU by default (a
    launcher that sets CUDA_VISIBLE_DEVICES per job leaves one visible GPU: ``cuda:0``)."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{job_num % count}" if job_num is not None and count > 1 else "cuda")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device.name={name}: no CUDA device here (use device=cpu or device=auto)")
    return device


def demo_products(cfg: RunConfig, device: torch.device | str = "cpu") -> Path:
    """The synthetic demo archive, generated on first use, rendered on ``device`` (``ground_truth.json``
    is written last, so its presence marks a complete archive)."""
    root = Path(cfg.paths.demo)
    if not (root / TRUTH_FILE).exists():
        log.info("generating the synthetic demo archive (%s preset) into %s", cfg.demo.preset, root)
        generate(preset(str(cfg.demo.preset), seed=cfg.demo.seed), root, device)
    return root


#: ``site=all`` builds every site found among the products, one after another
ALL_SITES = "all"


def choose_sites(cfg: RunConfig, products: list, products_root: Path) -> list[str]:
    """``site=all``: every VENuS site among the products; otherwise the one site asked (or found)."""
    if cfg.site == ALL_SITES:
        sites = sites_in(products)
        if not sites:
            raise ConfigError(f"site=all: no VENuS product under {products_root}")
        return sites
    return [choose_site(cfg, products, products_root)]


def choose_site(cfg: RunConfig, products: list, products_root: Path) -> str:
    sites = sites_in(products)
    if cfg.site is None:
        if len(sites) != 1:
            raise ConfigError(f"site is not set and {products_root} holds {len(sites)} VENuS sites "
                              f"({', '.join(sites) or 'none'}): choose one with site=NAME")
        return sites[0]
    if cfg.site not in sites:
        raise ConfigError(f"site={cfg.site}: no VENuS product of that site under {products_root} "
                          f"(sites found: {', '.join(sites) or 'none'}){_did_you_mean(cfg.site, sites)}")
    return cfg.site


def _did_you_mean(site: str, found: list[str]) -> str:
    """A near name among the sites found, else among the 29 SEN2VENuS sites (a typo, a case slip)."""
    import difflib

    from .sites import SEN2VENUS_SITES

    if site in SEN2VENUS_SITES:
        return ""  # a real site name: its products are missing, not misspelt
    for names in (found, list(SEN2VENUS_SITES)):
        close = difflib.get_close_matches(site.upper(), [n.upper() for n in names], n=1, cutoff=0.75)
        if close:
            name = next(n for n in names if n.upper() == close[0])
            where = "" if name in found else ", a SEN2VENuS site with no product here"
            return f"; did you mean {name}{where}?"
    return ""


def names_of(pair: Pair, layout: Layout) -> dict[str, str]:
    prefix = published_prefix(pair.venus_name.name) if layout is Layout.published else None
    return pair_file_names(pair.pair_id, layout, prefix)


def execute(cfg: RunConfig, dataset_dir: Path | None = None, job_num: int | None = None) -> dict:
    """Run one site (``site=all``: every site found, one after another, each folder opened and checked
    before any pair is read); returns the run summary (also written to each site's ``summary.json``).

    Raises:
        ConfigError: the configuration is wrong (nothing was done).
        OutputFolderError: the site folder was made with another configuration, is being written by
            another run, or holds tables that are not ours (nothing was done).
    """
    validate(cfg)
    device = resolve_device(cfg.device.name, job_num)
    if cfg.device.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.device.retain_host_memory:
        retain_freed_memory()
    with JobSlot():  # the cores are shared with the other jobs running on them (s2v_gpu.sharing)
        return _execute(cfg, device, dataset_dir, job_num)


def _execute(cfg: RunConfig, device: torch.device, dataset_dir: Path | None, job_num: int | None) -> dict:
    apply_threads(cfg.device.threads)
    if cfg.data is DataSource.geodes:
        _harvest(cfg)
    local = cfg.data in (DataSource.theia, DataSource.geodes)
    products_root = Path(cfg.paths.products) if local else demo_products(cfg, device)
    rejected: list[str] = []
    products = find_products(products_root, rejected)
    sites = choose_sites(cfg, products, products_root)
    versions = software_versions()
    root = Path(dataset_dir or cfg.paths.dataset)
    with ExitStack() as stack:
        # every site folder is opened (locked, checked) before any pair is read
        writers = [stack.enter_context(SiteWriter(root, site, cfg.layout, config_hash(cfg), method_config(cfg),
                                                  versions, cfg.overwrite)) for site in sites]
        cache = _cache(cfg, device, versions, multirun=job_num is not None)
        summaries = [_run_site(cfg, w, find_pairs(products, w.site, cfg.pairing), device, products_root, rejected,
                               versions, cache) for w in writers]
    return summaries[0] if len(summaries) == 1 else _all_sites(summaries)


def _harvest(cfg: RunConfig) -> None:
    """data=geodes: harvest the missing products of the site(s) into paths.products (s2v_gpu.harvest);
    the run then builds from what is there, also when some products could not be fetched.

    Raises:
        CatalogError: the catalogue cannot be reached or answers nothing usable.
    """
    from .harvest.app import harvest_sites, resolve_sites

    summary = harvest_sites(resolve_sites(cfg.site), cfg.harvest, cfg.pairing, Path(cfg.paths.products))
    downloads = summary.get("downloads") or {}
    missing = downloads.get("failed", 0) + downloads.get("on tape", 0)
    if missing:
        log.warning("harvest: %d planned products are missing (see %s); building from those present", missing,
                    Path(cfg.paths.products) / "harvest_summary.json")


def _all_sites(summaries: list[dict]) -> dict:
    """The summary of ``site=all``: the totals and each site's summary."""
    total = {k: sum(s[k] for s in summaries) for k in ("pairs", "pairs_in_dataset", "patches_in_dataset",
                                                        "written", "skipped", "failed")}
    return {"site": ALL_SITES, **total, "outcomes": [o for s in summaries for o in s["outcomes"]],
            "sites": {s["site"]: {k: v for k, v in s.items() if k != "config"} for s in summaries},
            "config": summaries[0]["config"]}


def _cache(cfg: RunConfig, device: torch.device, versions: dict, multirun: bool) -> PairCache | None:
    """The sweep cache in ``paths.dataset`` (shared by the jobs of a multirun), when it applies."""
    if cfg.cache is CacheMode.off or (cfg.cache is CacheMode.auto and not multirun):
        return None
    if cfg.pipeline.registration.model == "local":
        log.info("cache not used: registration.model=local resamples from the products after the selection")
        return None
    return PairCache(Path(cfg.paths.dataset), cfg, device, versions)


def _run_site(cfg: RunConfig, writer: SiteWriter, pairs: list[Pair], device: torch.device, products_root: Path,
              rejected: list[str], versions: dict, cache: PairCache | None = None) -> dict:
    """Every pair of one site through the pipeline into its (open) folder; returns the site summary."""
    site = writer.site
    licence_error = None
    if cfg.layout is Layout.published:
        try:
            writer.write_extra(LICENCE_FILE, LICENCE_TEXT)
        except ForeignFileError as exc:  # the pairs are still written; the summary says what is missing
            log.error("%s", exc)
            licence_error = f"{type(exc).__name__}: {exc}"
    done = writer.done
    outcomes = [{"pair_id": done[p.venus_name.name], "status": "complete", "reason": "already in the dataset"}
                for p in pairs if p.venus_name.name in done]
    todo = [p for p in pairs if p.venus_name.name not in done]
    log.info("site %s: %d pairs (%d already complete) on %s -> %s", site, len(pairs), len(outcomes), device,
             writer.site_dir)
    for pair, result, seconds in _computed(todo, cfg, device, outcomes, cache):
        outcomes.append(_write(writer, cfg, pair, result, seconds, device))
    summary = _summary(cfg, site, products_root, writer, device, pairs, rejected, outcomes, versions)
    if licence_error:
        summary["licence_error"] = licence_error
    _by_products(cfg, writer, summary)
    writer.write_summary(summary)
    _log_summary(summary)
    return summary


def _computed(todo: list[Pair], cfg: RunConfig, device: torch.device, outcomes: list,
              cache: PairCache | None = None) -> Iterator:
    """``(pair, result, seconds)`` of each pair that gives patches, the next pair read in a background
    thread while the current one is computed (not when the cache holds it); failures go to
    ``outcomes`` with their reason."""
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2v-reader")

    def submit(i: int):
        if i >= len(todo) or (cache is not None and cache.path(todo[i]).is_file()):
            return None
        return loader.submit(load_pair, todo[i], cfg.pipeline, device)

    try:
        nxt = submit(0)
        with logging_redirect_tqdm():
            bar = tqdm(todo, desc=todo[0].site if todo else "", unit="pair",
                       disable=not cfg.progress or not sys.stderr.isatty())
            for i, pair in enumerate(bar):
                start, current, nxt = time.perf_counter(), nxt, None
                apply_threads(cfg.device.threads)  # a job started or ended beside this one: its share now

                def read_this_then_the_next(pair=pair, current=current, i=i):
                    nonlocal nxt
                    inputs = current.result() if current is not None else load_pair(pair, cfg.pipeline, device)
                    nxt = submit(i + 1)
                    return inputs

                try:
                    result = _compute(pair, cfg, device, read_this_then_the_next, cache)
                except Exception as exc:  # noqa: BLE001 - one pair must not stop the site
                    outcomes.append(_failure(pair.pair_id, exc))
                    continue
                finally:
                    nxt = nxt or submit(i + 1)
                yield pair, result, time.perf_counter() - start
    finally:
        loader.shutdown(wait=True, cancel_futures=True)


def _compute(pair: Pair, cfg: RunConfig, device: torch.device, read, cache: PairCache | None) -> PairResult:
    """One pair's result: from the cache when it holds the pair's prepared state (or skip), else
    computed (and, with a cache, saved before the thresholds are applied)."""
    if cache is None:
        return process_pair(pair, cfg.pipeline, device, inputs=read())
    with cache.slot(pair) as path:
        prep = cache.load(path)
        if prep is None:
            try:
                prep = prepare_pair(pair, cfg.pipeline, device, read())
            except PairSkipped as exc:
                cache.save(path, str(exc))
                raise
            cache.save(path, prep)
        else:
            what = "the reason it was skipped" if isinstance(prep, str) else "registration, MTF and fit"
            log.info("%s: %s taken from the cache (%s)", pair.pair_id, what, path.name)
    if isinstance(prep, str):
        raise PairSkipped(prep)
    return finish_pair(pair, prep, cfg.pipeline)


def _write(writer: SiteWriter, cfg: RunConfig, pair: Pair, result: PairResult, seconds: float,
           device: torch.device) -> dict:
    names = names_of(pair, cfg.layout)
    try:
        write_pair(writer, cfg, pair, result, names, seconds, device)
    except Exception as exc:  # noqa: BLE001 - the 5 m fit is computed as it is written: one pair must not stop the site
        return _failure(pair.pair_id, exc)
    r = result.registration
    log.info("%s: %d patches kept, shift (%.2f, %.2f) m [%s, %d matches], %.1f s", pair.pair_id,
             result.stats["patches_kept"], r.shift_m[0], r.shift_m[1], r.mode, r.n_matches, seconds)
    return {"pair_id": names["pair_id"], "status": "written", "patches": result.stats["patches_kept"],
            "seconds": round(seconds, 3)}


def _failure(pid: str, exc: Exception) -> dict:
    if isinstance(exc, PairSkipped):
        log.warning("skipped %s", exc)
        return {"pair_id": pid, "status": "skipped", "reason": str(exc)}
    if isinstance(exc, (S2VError, OSError)):
        log.error("failed %s: %s", pid, exc)
        return {"pair_id": pid, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    tb = "".join(traceback.format_exception(exc))  # an unexpected error: keep its traceback
    log.error("failed %s with an unexpected error:\n%s", pid, tb)
    return {"pair_id": pid, "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "traceback": tb}


def _summary(cfg, site, products_root, writer, device, pairs, rejected, outcomes, versions) -> dict:
    rows = writer.index_rows
    return {
        "site": site, "products": str(products_root), "dataset": str(writer.site_dir), "device": str(device),
        "pairs": len(pairs), "pairs_in_dataset": len(rows), "rejected_names": rejected,
        "patches_in_dataset": sum(int(r["nb_patches"]) for r in rows),
        **{k: sum(o["status"] == k for o in outcomes) for k in ("written", "skipped", "failed")},
        "outcomes": outcomes, "config_hash": writer.config_hash, "software": versions, "config": asdict(cfg),
    }


def _by_products(cfg: RunConfig, writer: SiteWriter, summary: dict) -> None:
    """What the run writes beside the tensors, once the site's pairs are in: the quality report, the
    STAC catalogue and dataset card, the v2 GeoTIFFs. Each failure is logged and recorded in the
    summary as ``<name>_error`` (else ``<name>`` holds the path written); the dataset itself is written
    and stays."""
    if not summary["pairs_in_dataset"]:
        return
    site_dir = writer.site_dir
    steps = [("report", "quality report", cfg.report, lambda: _report(site_dir)),
             ("stac", "STAC catalogue or dataset card", cfg.stac, lambda: _catalog(writer)),
             ("v2", "format v2 export", cfg.format is OutputFormat.v2, lambda: _export_v2(site_dir))]
    for name, what, wanted, make in steps:
        if not wanted:
            continue
        try:
            summary[name] = str(make())
        except Exception as exc:  # noqa: BLE001 - the dataset is written; these are by-products
            log.error("%s failed: %s", what, exc)
            summary[f"{name}_error"] = f"{type(exc).__name__}: {exc}"


def _report(site_dir: Path) -> Path:
    from .report import build_report

    build_report(site_dir)
    return site_dir / REPORT_DIR / "report.html"


def _catalog(writer: SiteWriter) -> Path:
    """The site's STAC Collection and Items (``stac/``) and its dataset card."""
    from .card import dataset_card
    from .stac import write_site_stac

    write_site_stac(writer.site_dir)
    writer.write_extra(CARD_FILE, dataset_card(writer.site_dir))
    return writer.site_dir / STAC_DIR / "collection.json"


def _export_v2(site_dir: Path) -> Path:
    """``format=v2``: the site's patches as GeoTIFFs in one zip, with the v2 index (``SITE/v2/``)."""
    from .v2 import export_site_v2

    return export_site_v2(site_dir)


def _log_summary(summary: dict) -> None:
    log.info("site %s: %d pairs in the dataset (%d written now, %d skipped, %d failed), %d patches",
             summary["site"], summary["pairs_in_dataset"], summary["written"], summary["skipped"],
             summary["failed"], summary["patches_in_dataset"])
    for o in summary["outcomes"]:
        if o["status"] in ("skipped", "failed"):
            log.info("  %s: %s", o["status"], o["reason"])


def main() -> None:
    """The console entry point (``s2v-gpu-run``): the Hydra app, with its exit codes (see the module)."""
    from .app import run_app

    run_app(execute, OutputFolderError)


if __name__ == "__main__":
    main()
