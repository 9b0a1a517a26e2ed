"""Benchmark of one full-size pair: I/O floor, the pipeline by stage, and a classic CPU reference.

    python scripts/bench.py [--size-px 5560] [--repeats 3] [--device auto] [--json results.json]

Generates (once, cached in --cache) a synthetic pair: a whole 27.8 km VENuS site (5560 x 5560 px at
5 m, the 7 bands used + masks) and the matching Sentinel-2 window at 10 and 20 m. Reports medians over
--repeats of:

1. the I/O floor: reading exactly the input pixels the pipeline reads (rasterio, same windows, bands
   and masks, no processing), file after file, and again with the pipeline's pool of reader threads;
2. the pipeline end to end on --device, by stage (read, register, shift, patchify, mtf, fit, select,
   write);
3. a CPU reference of the heaviest step, registration, done the classic way (OpenCV SIFT +
   brute-force matching with Lowe's ratio + numpy mean of the matches within 15 m, on the same 366 px
   tiles), and of the blur/fit steps with scipy.ndimage + numpy.linalg.lstsq;

then the ratios pipeline / I/O floor and reference / ours, and peak memory (host and device).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2v_gpu.bands import GROUP_10M, GROUP_20M
from s2v_gpu.grids import common_grid
from s2v_gpu.hostmem import retain_freed_memory
from s2v_gpu.layout import pair_file_names
from s2v_gpu.pairing import find_pairs
from s2v_gpu.pipeline import MAX_GRID_PX, VENUS_BANDS_READ, PipelineConfig, process_pair
from s2v_gpu.products import TheiaProduct, find_products
from s2v_gpu.products import product as products_module
from s2v_gpu.registration import RegistrationConfig
from s2v_gpu.resample import downsample_bicubic_x2
from s2v_gpu.synthetic import TRUTH_FILE, SyntheticConfig, SyntheticDate, generate
from s2v_gpu.threads import apply_threads
from s2v_gpu.writer import to_int16, write_patches_gpkg, write_tensor

SHIFT_M = [4.3, -6.1]


def make_pair(size_px: int, cache: Path, device: torch.device) -> tuple[Path, float | None]:
    """The cached pair of ``size_px`` (generated on ``device`` the first time) and the seconds its
    generation took (None: it was in the cache)."""
    root = cache / f"pair_{size_px}"
    if (root / TRUTH_FILE).exists():
        return root, None
    print(f"generating a {size_px}x{size_px} px synthetic pair into {root} on {device} (once)...", flush=True)
    start = time.perf_counter()
    date = SyntheticDate("2019-06-15", dt_minutes=6.0, shift_m=SHIFT_M, venus_cloud=0.05, s2_cloud=0.05)
    archive = generate(SyntheticConfig(size_px=size_px, dates=[date], s2_margin_m=400.0, seed=11), root, device)
    seconds = time.perf_counter() - start
    print("  by stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in archive.timings.items()), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the pipeline's peak device memory is measured alone
    print(f"generated in {seconds:.1f} s", flush=True)
    return root, seconds


def median_time(fn, repeats: int) -> tuple[float, object]:
    wall, _, out = median_wall_cpu(fn, repeats)
    return wall, out


def median_wall_cpu(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall-clock and median process CPU seconds of ``repeats`` calls, and the last result."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(times), statistics.median(cpu), out


def io_floor(pair, cfg: PipelineConfig, threads: int = 1) -> None:
    """Read the same windows, bands and masks as the pipeline, with rasterio and nothing else, one
    file after the other (``threads`` 1) or in a pool of threads as the pipeline reads them."""
    from concurrent.futures import ThreadPoolExecutor

    import rasterio
    from rasterio.windows import from_bounds

    venus, s2 = TheiaProduct(pair.venus), TheiaProduct(pair.s2)
    grid = common_grid(venus.grid("XS"), s2.grid("R1"), cfg.patches.size_5m)
    margin = int(math.ceil(cfg.registration.max_distance_m / 10.0)) + 3
    jobs = [(venus, VENUS_BANDS_READ, "XS", grid.at(5.0)),
            (s2, GROUP_10M["s2"], "R1", grid.expanded(10.0, margin)),
            (s2, GROUP_20M["s2"], "R2", grid.expanded(20.0, margin // 2 + 1))]
    def read(f, bounds):
        with rasterio.open(f) as src:
            win = from_bounds(*bounds, src.transform).round_offsets().round_lengths()
            inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= src.width
                      and win.row_off + win.height <= src.height)
            src.read(1, window=win, boundless=not inside)

    for product, bands, group, target in jobs:
        files = [product.band_file(b) for b in bands]
        files += [product.mask_file(k, group) for k in ("EDG", "CLM", "SAT", "MG2")]
        if threads == 1:
            for f in files:
                read(f, target.bounds)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(lambda f: read(f, target.bounds), files))


def blue_pair(pair, device):
    venus, s2 = TheiaProduct(pair.venus), TheiaProduct(pair.s2)
    grid = common_grid(venus.grid("XS"), s2.grid("R1"), 256)
    v = venus.read(("B3",), grid.bounds, device=device)
    s = s2.read(("B2",), grid.bounds, device=device)
    ref = downsample_bicubic_x2(v.reflectance[None])[0, 0]
    ref_valid = torch.nn.functional.max_pool2d((~v.valid)[None, None].float(), 2)[0, 0] == 0
    return ref, s.reflectance[0], ref_valid, s.valid


def reference_registration(ref: np.ndarray, mov: np.ndarray, ref_valid, mov_valid, tile: int = 366,
                           max_m: float = 15.0) -> tuple[float, float]:
    """The classic CPU recipe: OpenCV SIFT per tile, brute-force kNN + Lowe ratio 0.8, mask and
    15 m filtering, numpy mean."""
    import cv2

    def to8(a):
        lo, hi = np.percentile(a[a != 0], [1, 99]) if (a != 0).any() else (0, 1)
        return np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)

    a8, b8 = to8(ref), to8(mov)
    sift = cv2.SIFT_create()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    disp = []
    h, w = ref.shape
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            ta, tb = a8[r0:r0 + tile, c0:c0 + tile], b8[r0:r0 + tile, c0:c0 + tile]
            ma = ref_valid[r0:r0 + tile, c0:c0 + tile].astype(np.uint8) * 255
            mb = mov_valid[r0:r0 + tile, c0:c0 + tile].astype(np.uint8) * 255
            ka, da = sift.detectAndCompute(ta, ma)
            kb, db = sift.detectAndCompute(tb, mb)
            if da is None or db is None or len(ka) < 2 or len(kb) < 2:
                continue
            for m in matcher.knnMatch(da, db, k=2):
                if len(m) == 2 and m[0].distance < 0.8 * m[1].distance:
                    pa, pb = ka[m[0].queryIdx].pt, kb[m[0].trainIdx].pt
                    disp.append((pb[0] - pa[0], pb[1] - pa[1]))
    d = np.array(disp)
    d = d[np.hypot(d[:, 0], d[:, 1]) * 10.0 <= max_m]
    mean = d.mean(axis=0)
    return float(mean[0] * 10.0), float(-mean[1] * 10.0)


def reference_registration_same_budget(ref: np.ndarray, mov: np.ndarray, ref_valid, mov_valid) -> tuple[float, float]:
    """Like for like with ours: OpenCV SIFT (500 keypoints, masked) on the same 3 most valid tiles,
    mutual nearest neighbours passing Lowe's ratio 0.9, the mean of the matches within 1 px of their
    median as the seed, then the same Gauss-Newton refinement (s2v_gpu's, Lanczos-4)."""
    import cv2

    from s2v_gpu.registration import RegistrationConfig, refine_configured, tile_offsets

    cfg = RegistrationConfig()
    size, offsets = tile_offsets(torch.from_numpy(ref_valid), torch.from_numpy(mov_valid), cfg.tile_size,
                                 cfg.max_tiles)

    def to8(a, v):
        lo, hi = np.percentile(a[v], [1, 99]) if v.any() else (0, 1)
        return np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)

    a8, b8 = to8(ref, ref_valid), to8(mov, mov_valid)
    sift = cv2.SIFT_create(nfeatures=cfg.num_features)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    disp = []
    for r0, c0 in offsets:
        tiles = [(x[r0:r0 + size, c0:c0 + size], m[r0:r0 + size, c0:c0 + size].astype(np.uint8) * 255)
                 for x, m in ((a8, ref_valid), (b8, mov_valid))]
        (ka, da), (kb, db) = (sift.detectAndCompute(t, m) for t, m in tiles)
        if da is None or db is None or len(ka) < 2 or len(kb) < 2:
            continue
        forward = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(da, db, k=2)
                   if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance}
        backward = {m[0].queryIdx: m[0].trainIdx for m in matcher.knnMatch(db, da, k=2)
                    if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance}
        for i, j in forward.items():
            if backward.get(j) == i:
                disp.append((kb[j].pt[0] - ka[i].pt[0], kb[j].pt[1] - ka[i].pt[1]))
    d = np.array(disp)
    d = d[np.hypot(d[:, 0], d[:, 1]) * 10.0 <= cfg.max_distance_m]
    med = np.median(d, axis=0)
    seed = d[np.hypot(*(d - med).T) <= cfg.inlier_px].mean(axis=0)
    (dx, dy), _ = refine_configured(torch.from_numpy(ref).float(), torch.from_numpy(mov).float(),
                                    torch.from_numpy(ref_valid), torch.from_numpy(mov_valid),
                                    (float(seed[0]), float(seed[1])), cfg, "lanczos4")
    return float(dx * 10.0), float(-dy * 10.0)


def reference_blur_fit_same_work(v5: np.ndarray, valid5: np.ndarray, s2: dict, sigmas: dict) -> list:
    """The same work as ours with scipy + numpy: for both band groups, the normalised (masked) Gaussian
    blur of every band, sampled at the block centres, then a least-squares W per group."""
    from scipy import ndimage

    out = []
    m = valid5.astype(np.float64)
    for group, (bands, factor) in sigmas.items():
        lows = []
        for band, s in zip(v5[group], bands):
            num = ndimage.gaussian_filter(band * m, s, mode="constant")
            den = ndimage.gaussian_filter(m, s, mode="constant")
            low = num / np.maximum(den, 1e-6)
            # block centre of factor x factor 5 m pixels: a shift of (factor - 1) / 2 then decimation
            low = ndimage.shift(low, -(factor - 1) / 2, order=1)[::factor, ::factor]
            lows.append(low)
        low = np.stack(lows)
        a = np.c_[np.ones(low[0].size), low.reshape(len(lows), -1).T]
        out.append(np.linalg.lstsq(a, s2[group].reshape(s2[group].shape[0], -1).T, rcond=None)[0])
    return out


def reference_blur_fit(v5: np.ndarray, s10: np.ndarray, sigmas: list[float]) -> np.ndarray:
    """scipy.ndimage Gaussian blur + 2x2 block sampling + numpy lstsq, the classic way."""
    from scipy import ndimage

    low = np.stack([ndimage.gaussian_filter(v5[i], s)[::2, ::2] for i, s in enumerate(sigmas)])
    a = np.c_[np.ones(low[0].size), low.reshape(len(sigmas), -1).T]
    return np.linalg.lstsq(a, s10.reshape(s10.shape[0], -1).T, rcond=None)[0]


def write_files(folder: Path, result, names: dict[str, str]) -> None:
    """What the writer does for a pair's files (four int16 tensors, the GeoPackage), without its tables
    (as in :func:`s2v_gpu.writer.write_pair`: the 5 m VENuS fitted straight to int16 here)."""
    for column, tensor in (("tensor_05m_b2b3b4b8", lambda: result.venus.int16(0)),
                           ("tensor_10m_b2b3b4b8", lambda: to_int16(result.s2_10)),
                           ("tensor_05m_b5b6b7b8a", lambda: result.venus.int16(1)),
                           ("tensor_20m_b5b6b7b8a", lambda: to_int16(result.s2_20))):
        write_tensor(folder / names[column], tensor())
    write_patches_gpkg(folder / names["patches_gpkg"], result.bounds, result.patch_index, result.crs,
                       names["pair_id"])


#: The smallest site the benchmark measures: one registration tile (366 px at 10 m) and 256 px patches.
MIN_SIZE_PX = 1024


def check_arguments(args) -> str | None:
    """What makes the run impossible, found before measuring anything (None: all is well)."""
    if args.size_px < MIN_SIZE_PX:
        return f"--size-px {args.size_px}: at least {MIN_SIZE_PX} (one registration tile and one patch)"
    if args.size_px > MAX_GRID_PX:
        return f"--size-px {args.size_px}: at most {MAX_GRID_PX} (the pipeline refuses a wider grid: not a VENuS tile)"
    if args.repeats < 1:
        return f"--repeats {args.repeats}: at least 1"
    if args.reference_repeats is not None and args.reference_repeats < 1:
        return f"--reference-repeats {args.reference_repeats}: at least 1"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {args.device}: no CUDA device here"
    if not args.no_reference:
        missing = [name for name, module in (("opencv-python-headless", "cv2"), ("scipy", "scipy"))
                   if importlib.util.find_spec(module) is None]
        if missing:
            return (f"the reference needs {' and '.join(missing)}: pip install -e '.[bench]' "
                    "(or pass --no-reference to measure the pipeline alone)")
    return None


def seed_references(pair, truth, repeats: int) -> dict:
    """Phase correlation alone (our seed, the same tiles, no refinement) and ours seeded by Kornia SIFT
    instead (what CUDA and ``seed=sift`` run), timed on the same blue images, on the CPU whatever the
    bench's device (they are CPU references, like OpenCV's)."""
    from s2v_gpu.registration import RegistrationConfig, phase_seed, register

    blue = blue_pair(pair, "cpu")
    err = lambda r: math.hypot(r.shift_m[0] - truth[0], r.shift_m[1] - truth[1]) if r else float("nan")  # noqa: E731
    phase_s, phase = median_time(lambda: phase_seed(*blue, 10.0, RegistrationConfig()), repeats)
    sift_s, sift = median_time(lambda: register(*blue, 10.0, RegistrationConfig(seed="sift")), repeats)
    return {"phase_only_registration_s": phase_s, "phase_only_shift_error_m": err(phase),
            "sift_seed_registration_s": sift_s, "sift_seed_shift_error_m": err(sift)}


def run_references(pair, args, truth, repeats: int, device: torch.device) -> dict:
    """The CPU references, timed in this run: the classic all-tile OpenCV recipe, the like-for-like
    OpenCV variant (same tiles and refinement as ours), scipy blur + fit of one group (classic) and
    of both groups with the normalised blur (the same work as ours)."""
    nan = float("nan")
    out = dict.fromkeys(("reference_registration_s", "reference_shift_error_m", "reference_blur_fit_s",
                         "same_budget_registration_s", "same_budget_shift_error_m", "same_work_blur_fit_s",
                         "whole_image_blur_s"), nan)
    if args.no_reference:
        return out
    from s2v_gpu.mtf import band_sigmas_px

    ref, mov, rv, mv = (t.cpu().numpy() for t in blue_pair(pair, "cpu"))
    for key, fn in (("reference", reference_registration), ("same_budget", reference_registration_same_budget)):
        seconds, shift = median_time(lambda fn=fn: fn(ref, mov, rv, mv), repeats)
        out[f"{key}_registration_s"] = seconds
        out[f"{key}_shift_error_m"] = math.hypot(shift[0] - truth[0], shift[1] - truth[1])
    out.update(seed_references(pair, truth, repeats))
    venus, s2 = TheiaProduct(pair.venus), TheiaProduct(pair.s2)
    bounds = common_grid(venus.grid("XS"), s2.grid("R1"), 256).bounds
    v10 = venus.read(GROUP_10M["venus"], bounds)
    v20 = venus.read(GROUP_20M["venus"], bounds)
    s10 = s2.read(GROUP_10M["s2"], bounds).reflectance.numpy()
    s20 = s2.read(GROUP_20M["s2"], bounds).reflectance.numpy()
    v5 = v10.reflectance.numpy()
    out["reference_blur_fit_s"], _ = median_time(
        lambda: reference_blur_fit(v5, s10, band_sigmas_px(GROUP_10M["s2"], 10.0)), repeats)
    groups = {"10m": (band_sigmas_px(GROUP_10M["s2"], 10.0), 2), "20m": (band_sigmas_px(GROUP_20M["s2"], 20.0), 4)}
    bands = {"10m": v5, "20m": v20.reflectance.numpy()}
    valid = (v10.valid & v20.valid).numpy()
    out["same_work_blur_fit_s"], _ = median_time(
        lambda: reference_blur_fit_same_work(bands, valid, {"10m": s10, "20m": s20}, groups), repeats)
    v = venus.read(VENUS_BANDS_READ, bounds, device=device)  # ours runs on the bench's device
    out["whole_image_blur_s"], _ = median_time(lambda: whole_image_blur(v, groups), repeats)
    return out


def whole_image_blur(v, groups: dict) -> None:
    """Our masked MTF blur of both groups over the whole common grid of the VENuS stack ``v``, on its
    device (the work of the scipy reference; the pipeline blurs only the candidates' windows when they
    cover less)."""
    from s2v_gpu.mtf import mtf_downsample

    vs, _ = v.scaled()
    for name, group in (("10m", GROUP_10M), ("20m", GROUP_20M)):
        sigmas, factor = groups[name]
        channels = [VENUS_BANDS_READ.index(b) for b in group["venus"]]
        mtf_downsample(vs[None], sigmas, factor, v.valid[None], channels=channels)
    if vs.device.type == "cuda":
        torch.cuda.synchronize(vs.device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=5560)
    parser.add_argument("--cache", default="bench_cache")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-reference", action="store_true", help="skip the OpenCV/scipy reference")
    parser.add_argument("--reference-repeats", type=int, default=None,
                        help="repeats of the CPU references (default: --repeats; a short GPU lease uses 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: as the run app resolves them, see s2v_gpu.threads)")
    parser.add_argument("--registration-model", choices=["translation", "local"], default="translation",
                        help="pipeline.registration.model (local: the per-patch field of issue 12)")
    parser.add_argument("--release-host-memory", action="store_true",
                        help="let glibc return freed host memory to the system (the run app keeps it: "
                             "device.retain_host_memory)")
    args = parser.parse_args(argv)
    problem = check_arguments(args)
    if problem:  # before any work: nothing measured is lost to a late failure
        print(f"scripts/bench.py: {problem}", file=sys.stderr)
        return 2
    retained = False if args.release_host_memory else retain_freed_memory()
    threads = apply_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    root, generation_s = make_pair(args.size_px, Path(args.cache), device)
    pair = find_pairs(find_products(root), "SYNTH-1")[0]
    cfg = PipelineConfig()
    cfg.registration.model = args.registration_model

    io_s, io_cpu_s, _ = median_wall_cpu(lambda: io_floor(pair, cfg), args.repeats)
    io_par_s, io_par_cpu_s, _ = median_wall_cpu(lambda: io_floor(pair, cfg, products_module.READ_THREADS),
                                                args.repeats)

    # one warm-up run, as the floor reads from a warm page cache: CUDA context, kernels and cuDNN
    # plans on a GPU, the retained host memory on the CPU (what every pair after the first sees)
    process_pair(pair, cfg, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stage_runs, totals, cpu_totals = [], [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = process_pair(pair, cfg, device)
            t_write = time.perf_counter()
            # each repeat replaces the previous one's files: their page cache is recycled, as in a long
            # run once the page cache is full (fresh files cost this VM 0.15-0.2 CPU-s more, README)
            write_files(Path(out), result, pair_file_names(pair.pair_id))
            end = time.perf_counter()
            stages = dict(result.stats["timings"])
            stages["write"] = end - t_write
            stage_runs.append(stages)
            totals.append(end - start)
            cpu_totals.append(time.process_time() - cpu_start)
    pipeline_s = statistics.median(totals)
    stages = {k: statistics.median(r[k] for r in stage_runs) for k in stage_runs[0]}
    truth = SHIFT_M
    shift_err = math.hypot(result.registration.shift_m[0] - truth[0], result.registration.shift_m[1] - truth[1])

    refs = run_references(pair, args, truth, args.reference_repeats or args.repeats, device)
    ref_reg_s, ref_err, ref_fit_s = refs["reference_registration_s"], refs["reference_shift_error_m"], \
        refs["reference_blur_fit_s"]

    peak_host_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_device_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    results = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)"),
        "size_px": args.size_px, "repeats": args.repeats, "reference_repeats": args.reference_repeats or args.repeats,
        "retain_host_memory": retained,
        "generation_s": generation_s,
        "threads": threads, "load_average": list(os.getloadavg()),
        "pipeline_cpu_s": statistics.median(cpu_totals), "io_floor_cpu_s": io_cpu_s,
        "io_floor_parallel_cpu_s": io_par_cpu_s,
        # "in CPU work": process CPU seconds of the pipeline over those of the threaded floor
        "pipeline_cpu_over_io_floor_parallel_cpu": statistics.median(cpu_totals) / io_par_cpu_s,
        "io_floor_s": io_s, "io_floor_parallel_s": io_par_s, "pipeline_s": pipeline_s, "stages": stages,
        "registration_s": stages["register"], "reference_registration_s": ref_reg_s,
        "reference_blur_fit_s": ref_fit_s, "blur_fit_s": stages["mtf"] + stages["fit"],
        "pipeline_over_io_floor": pipeline_s / io_s,
        "pipeline_over_io_floor_parallel": pipeline_s / io_par_s,
        "reference_over_ours_registration": ref_reg_s / stages["register"],
        "shift_error_m": shift_err, "reference_shift_error_m": ref_err, **refs,
        "patches_kept": result.stats["patches_kept"],
        "peak_host_mb": peak_host_mb, "peak_device_mb": peak_device_mb,
    }
    print(f"device: {results['device']}  size: {args.size_px} px  repeats: {args.repeats}  "
          f"freed host memory {'retained' if retained else 'released'}  threads: {threads}  "
          f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"I/O floor            {io_s:8.2f} s   (files one after the other)")
    print(f"I/O floor, threaded  {io_par_s:8.2f} s   ({products_module.READ_THREADS} threads, as the pipeline reads)")
    print(f"pipeline             {pipeline_s:8.2f} s   = {results['pipeline_over_io_floor']:.2f} x the I/O floor, "
          f"{results['pipeline_over_io_floor_parallel']:.2f} x the threaded one")
    print(f"  (process CPU time  {results['pipeline_cpu_s']:8.2f} s = "
          f"{results['pipeline_cpu_over_io_floor_parallel_cpu']:.2f} x the threaded floor's "
          f"{io_par_cpu_s:.2f} CPU-s; file after file {io_cpu_s:.2f} CPU-s)")
    for k, v in stages.items():
        print(f"  {k:<18} {v:8.3f} s")
    print(f"registration         {stages['register']:8.2f} s   shift error {shift_err:.2f} m")
    print(f"reference (OpenCV)   {ref_reg_s:8.2f} s   shift error {ref_err:.2f} m   "
          f"= {results['reference_over_ours_registration']:.2f} x ours")
    print(f"reference blur+fit   {ref_fit_s:8.2f} s   (ours: mtf+fit {results['blur_fit_s']:.2f} s)")
    print(f"like for like: OpenCV SIFT on the same {RegistrationConfig().max_tiles} tiles + our refinement "
          f"{refs['same_budget_registration_s']:8.2f} s, shift error {refs['same_budget_shift_error_m']:.2f} m "
          f"(ours {stages['register']:.2f} s, {shift_err:.2f} m)")
    if "phase_only_registration_s" in refs:
        print(f"on the CPU: phase correlation alone (our seed, same tiles, no refinement) "
              f"{refs['phase_only_registration_s']:8.3f} s, shift error {refs['phase_only_shift_error_m']:.2f} m")
        print(f"on the CPU: ours seeded by Kornia SIFT instead (CUDA's default) "
              f"{refs['sift_seed_registration_s']:8.2f} s, shift error {refs['sift_seed_shift_error_m']:.2f} m")
    print(f"like for like: scipy normalised blur + lstsq, both groups {refs['same_work_blur_fit_s']:8.2f} s "
          f"(ours {refs['whole_image_blur_s']:.2f} s for the blur of the whole grid + fit {stages['fit']:.2f} s; "
          f"the pipeline blurs only the candidates' windows: mtf+fit {results['blur_fit_s']:.2f} s)")
    print(f"peak memory          host {peak_host_mb:.0f} MB, device {peak_device_mb:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
