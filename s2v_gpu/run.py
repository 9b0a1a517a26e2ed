"""``python -m s2v_gpu.run [site=NAME] [key=value ...]``: build the SEN2VENuS layout for one site.

With no data configured it runs on the embedded synthetic demo (generated once into
``paths.demo``). Pairs already complete in ``paths.dataset`` are skipped, so a rerun resumes; a pair
that fails is recorded with its reason and the run goes on. Exit status: 0 when at least one pair is
in the dataset at the end, 1 when nothing could be processed, 2 when the configuration is wrong.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .config import ConfigError, RunConfig, register_configs, validate
from .errors import S2VError
from .hostmem import retain_freed_memory
from .output import (INDEX_COLUMNS, clean_stale, pair_file_names, read_tsv, write_json, write_pair, write_tsv)
from .pairing import find_pairs, sites_in
from .pipeline import PairResult, PairSkipped, load_pair, process_pair
from .products import find_products
from .synthetic import TRUTH_FILE, generate, preset

log = logging.getLogger("s2v_gpu.run")

DETAIL_COLUMNS = [
    "pair_id", "dt_minutes", "shift_dx_m", "shift_dy_m", "registration_mode", "n_matches", "shift_spread_m",
    "median_dx_m", "median_dy_m", "patches_total", "dropped_invalid", "fit_excluded", "dropped_selection",
    "dropped_outlier", "patches_kept", "w_10m", "w_20m", "device", "seconds", "timings",
]


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


def demo_products(cfg: RunConfig) -> Path:
    """The synthetic demo archive, generated on first use (``ground_truth.json`` is written last, so
    its presence marks a complete archive)."""
    root = Path(cfg.paths.demo)
    if not (root / TRUTH_FILE).exists():
        log.info("generating the synthetic demo archive (%s preset) into %s", cfg.demo.preset, root)
        generate(preset(cfg.demo.preset, seed=cfg.demo.seed), root)
    return root


def _detail_row(result: PairResult, pid: str, device: torch.device, seconds: float) -> dict:
    r = result.registration
    s = result.stats
    return {
        "pair_id": pid, "dt_minutes": f"{result.pair.dt_minutes:.2f}",
        "shift_dx_m": f"{r.shift_m[0]:.3f}", "shift_dy_m": f"{r.shift_m[1]:.3f}", "registration_mode": r.mode,
        "n_matches": r.n_matches, "shift_spread_m": f"{r.spread_m:.3f}",
        "median_dx_m": f"{r.median_m[0]:.3f}", "median_dy_m": f"{r.median_m[1]:.3f}",
        **{k: s[k] for k in ("patches_total", "dropped_invalid", "fit_excluded", "dropped_selection",
                             "dropped_outlier", "patches_kept")},
        "w_10m": json_list(result.w_10), "w_20m": json_list(result.w_20), "device": str(device),
        "seconds": f"{seconds:.2f}", "timings": ";".join(f"{k}={v:.3f}" for k, v in s["timings"].items()),
    }


def json_list(w: torch.Tensor) -> str:
    return "[" + ",".join("[" + ",".join(f"{v:.6f}" for v in row) + "]" for row in w.tolist()) + "]"


def execute(cfg: RunConfig, dataset_dir: Path | None = None, job_num: int | None = None) -> dict:
    """Run one site; returns the run summary (also written to ``summary.json`` in the site folder).

    Raises:
        ConfigError: the configuration is wrong (nothing was done).
    """
    validate(cfg)
    device = resolve_device(cfg.device.name, job_num)
    if cfg.device.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.device.retain_host_memory:
        retain_freed_memory()
    products_root = Path(cfg.paths.products) if cfg.paths.products is not None else demo_products(cfg)
    rejected: list[str] = []
    products = find_products(products_root, rejected)
    sites = sites_in(products)
    site = cfg.site
    if site is None:
        if len(sites) != 1:
            raise ConfigError(f"site is not set and {products_root} holds {len(sites)} VENuS sites "
                              f"({', '.join(sites) or 'none'}): choose one with site=NAME")
        site = sites[0]
    elif site not in sites:
        raise ConfigError(f"site={site}: no VENuS product of that site under {products_root} "
                          f"(sites found: {', '.join(sites) or 'none'})")
    pairs = find_pairs(products, site, cfg.pairing)
    site_dir = Path(dataset_dir or cfg.paths.dataset) / site
    _check_writable(site_dir)

    index_path, details_path = site_dir / "index.csv", site_dir / "pairs_details.tsv"
    names_of = {p.pair_id: pair_file_names(site, p.tile, p.date, cfg.layout) for p in pairs}
    index_rows = [r for r in read_tsv(index_path) if all((site_dir / r[c]).exists() for c in INDEX_COLUMNS[2:6])]
    details = {r["pair_id"]: r for r in read_tsv(details_path)}
    done = {r["tensor_05m_b2b3b4b8"].rsplit("_", 2)[0] for r in index_rows}
    clean_stale(site_dir, done)
    log.info("site %s: %d pairs (%d already complete) on %s -> %s", site, len(pairs),
             sum(names_of[p.pair_id]["pair_id"] in done for p in pairs), device, site_dir)

    outcomes: list[dict] = [{"pair_id": names_of[p.pair_id]["pair_id"], "status": "complete",
                              "reason": "already in the dataset"} for p in pairs if names_of[p.pair_id]["pair_id"] in done]
    todo = [p for p in pairs if names_of[p.pair_id]["pair_id"] not in done]
    # the next pair is read in a background thread while the current one is computed
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2v-reader")
    prefetched = {}

    def prefetch(i: int) -> None:
        if i < len(todo):
            prefetched[i] = loader.submit(load_pair, todo[i], cfg.pipeline, device)

    try:
        prefetch(0)
        bar = tqdm(todo, desc=site, unit="pair", disable=not cfg.progress, file=sys.stderr)
        for i, pair in enumerate(bar):
            names = names_of[pair.pair_id]
            pid = names["pair_id"]
            start = time.perf_counter()
            try:
                inputs = prefetched.pop(i).result()
                prefetch(i + 1)
                result = process_pair(pair, cfg.pipeline, device, inputs=inputs)
                del inputs
                write_pair(site_dir, result, names)
                seconds = time.perf_counter() - start
                zenith = result.stats["venus_zenith"]
                row = {
                    "venus_product_id": pair.venus_name.name, "sentinel2_product_id": pair.s2_name.name,
                    **{c: names[c] for c in INDEX_COLUMNS[2:6]}, "s2_tile": pair.tile, "vns_site": site,
                    "date": pair.date, "venus_zenith_angle": "" if math.isnan(zenith) else f"{zenith:.6f}",
                    "patches_gpkg": names["patches_gpkg"], "nb_patches": result.stats["patches_kept"],
                }
                new_details = {**details, pid: _detail_row(result, pid, device, seconds)}
                write_tsv(details_path, sorted(new_details.values(), key=lambda r: r["pair_id"]), DETAIL_COLUMNS)
                new_rows = sorted(index_rows + [row], key=lambda r: (r["date"], r["s2_tile"]))
                write_tsv(index_path, new_rows, INDEX_COLUMNS)  # last: the pair is complete from here on
                index_rows, details = new_rows, new_details
                done.add(pid)
                r = result.registration
                log.info("%s: %d patches kept, shift (%.2f, %.2f) m [%s, %d matches], %.1f s", pid,
                         result.stats["patches_kept"], r.shift_m[0], r.shift_m[1], r.mode, r.n_matches, seconds)
                outcomes.append({"pair_id": pid, "status": "written", "patches": result.stats["patches_kept"],
                                 "seconds": round(seconds, 3)})
            except BaseException:
                # nothing of a pair that did not complete stays in the dataset (its index row was not
                # written); an interruption (KeyboardInterrupt, SystemExit) still stops the run
                _remove_pair_files(site_dir, names)
                if not isinstance(sys.exc_info()[1], Exception):
                    raise
                exc = sys.exc_info()[1]
                _record_failure(pid, exc, outcomes)
                if i + 1 not in prefetched:
                    prefetch(i + 1)
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
    summary = {
        "site": site, "products": str(products_root), "dataset": str(site_dir), "device": str(device),
        "pairs": len(pairs), "pairs_in_dataset": len(index_rows), "rejected_names": rejected,
        "patches_in_dataset": sum(int(r["nb_patches"]) for r in index_rows),
        "written": sum(o["status"] == "written" for o in outcomes),
        "skipped": sum(o["status"] == "skipped" for o in outcomes),
        "failed": sum(o["status"] == "failed" for o in outcomes),
        "outcomes": outcomes,
        "config": asdict(cfg),
    }
    if cfg.report and index_rows:
        try:
            from .report import build_report

            summary["report"] = str(site_dir / "report" / "report.html")
            build_report(site_dir)
        except Exception as exc:  # noqa: BLE001 - the dataset is written; the report is a by-product
            log.error("quality report failed: %s", exc)
            summary["report_error"] = f"{type(exc).__name__}: {exc}"
    write_json(site_dir / "summary.json", summary)
    log.info("site %s: %d pairs in the dataset (%d written now, %d skipped, %d failed), %d patches", site,
             summary["pairs_in_dataset"], summary["written"], summary["skipped"], summary["failed"],
             summary["patches_in_dataset"])
    for o in outcomes:
        if o["status"] in ("skipped", "failed"):
            log.info("  %s: %s", o["status"], o["reason"])
    return summary


def _check_writable(site_dir: Path) -> None:
    try:
        site_dir.mkdir(parents=True, exist_ok=True)
        probe = site_dir / ".tmp-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"paths.dataset: cannot write into {site_dir} ({exc.strerror or exc}); "
                          "choose a writable paths.dataset") from exc


def _remove_pair_files(site_dir: Path, names: dict[str, str]) -> None:
    for key, name in names.items():
        path = site_dir / name
        if key != "pair_id" and path.exists():
            path.unlink()
            log.info("removed %s (its pair did not complete)", path)


def _record_failure(pid: str, exc: Exception, outcomes: list[dict]) -> None:
    if isinstance(exc, PairSkipped):
        log.warning("skipped %s", exc)
        outcomes.append({"pair_id": pid, "status": "skipped", "reason": str(exc)})
    elif isinstance(exc, (S2VError, OSError)):
        log.error("failed %s: %s", pid, exc)
        outcomes.append({"pair_id": pid, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
    else:  # an unexpected error in one pair must not stop the site
        tb = "".join(traceback.format_exception(exc))
        log.error("failed %s with an unexpected error:\n%s", pid, tb)
        outcomes.append({"pair_id": pid, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                         "traceback": tb})


#: Keys whose sweep does not need a folder of its own (sites already get one; devices give the same data).
NOT_SEPARATED = ("site", "device", "data", "paths.", "progress", "report", "hydra/", "hydra.")


def _swept_keys(sweep_dir: Path) -> set[str]:
    """Keys swept by the multirun (values with commas or sweep functions), read from multirun.yaml."""
    from omegaconf import OmegaConf as OC

    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return set()
    overrides = OC.load(path).hydra.overrides.task
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides
            if "=" in o and ("," in o.split("=", 1)[1] or "(" in o.split("=", 1)[1])}


def _dataset_dir(cfg: RunConfig) -> Path:
    """paths.dataset; in a sweep of thresholds, paths.dataset/<swept key=value,...> so that each
    combination has its own folder (sweeping sites or devices only writes into paths.dataset)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    base = Path(cfg.paths.dataset)
    try:
        hc = HydraConfig.get()
    except ValueError:
        return base
    if hc.mode != RunMode.MULTIRUN:
        return base
    swept = {k for k in _swept_keys(Path(hc.sweep.dir)) if not k.startswith(NOT_SEPARATED)}
    parts = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
    return base / ",".join(sorted(parts)) if parts else base


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://s2v_gpu.conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    cfg: RunConfig = OmegaConf.to_object(dcfg)
    # in a sweep one job's failure must not stop the others: exit codes are for single runs
    single = HydraConfig.get().mode != RunMode.MULTIRUN
    job_num = None if single else HydraConfig.get().job.num
    try:
        summary = execute(cfg, _dataset_dir(cfg), job_num)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        if single:
            sys.exit(2)
        return
    write_json(Path(HydraConfig.get().runtime.output_dir) / "summary.json",
               {k: v for k, v in summary.items() if k != "config"})
    if summary["pairs_in_dataset"] == 0:
        log.error("nothing could be processed for site %s", summary["site"])
        if single:
            sys.exit(1)


if __name__ == "__main__":
    main()
