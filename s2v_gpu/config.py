"""Typed Hydra structured configs of the run app (registered in Hydra's ConfigStore).

The YAML files of ``conf/`` (``s2v_gpu/conf``, shipped as package data and found through
``pkg://s2v_gpu.conf``) select presets on top of these schemas; OmegaConf rejects unknown keys and
wrong types, :func:`validate` rejects values that make no sense, before any work starts.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import S2VError
from .harvest.config import HarvestConfig
from .layout import Layout, UnsafeNameError, check_name
from .pairing import PairingConfig
from .pipeline import PipelineConfig


class ConfigError(S2VError, ValueError):
    """The configuration is wrong; the message says what to fix."""


@dataclass
class PathsConfig:
    #: Folder searched recursively for Theia products (folders and zips); None: the synthetic demo.
    products: str | None = None
    #: Output folder: one sub-folder per site.
    dataset: str = "dataset"
    #: Where the synthetic demo archive is written (once) when ``products`` is None.
    demo: str = "demo_products"


class OutputFormat(enum.StrEnum):
    """``pt``: the release's tensors per pair. ``v2``: also Sentinel-2 B11 B12 at 20 m (their own tensor),
    and each site's patches as georeferenced GeoTIFFs in one zip with the index of SEN2VENuS version 2
    (``SITE/v2/``; set through the ``format`` group, which turns ``pipeline.swir_20m`` on)."""

    pt = "pt"
    v2 = "v2"


class CacheMode(enum.StrEnum):
    """The per-pair cache for threshold sweeps (:mod:`s2v_gpu.cache`): ``auto`` uses it in a multirun
    (``-m``) only; ``on`` / ``off`` always / never."""

    auto = "auto"
    on = "on"
    off = "off"


class DataSource(enum.StrEnum):
    """Where the products come from: the embedded synthetic ``demo`` (or ``tiny``) archive, generated
    once into ``paths.demo``, or ``theia`` products under ``paths.products`` (required)."""

    demo = "demo"
    tiny = "tiny"
    theia = "theia"
    #: harvest what is missing through the catalogue (harvest.catalog) into paths.products, then build
    geodes = "geodes"


class DemoPreset(enum.StrEnum):
    tiny = "tiny"
    demo = "demo"
    full = "full"


@dataclass
class DemoConfig:
    preset: DemoPreset = DemoPreset.demo  # see s2v_gpu.synthetic.preset
    seed: int = 0


@dataclass
class DeviceConfig:
    #: auto (CUDA when available, else CPU), cpu, cuda, cuda:N
    name: str = "auto"
    #: torch.use_deterministic_algorithms: bit-identical results for the same seed and device
    deterministic: bool = True
    #: keep freed host memory in the process for the next stages and pairs (glibc, see
    #: s2v_gpu.hostmem): no page-by-page refaulting of the same gigabytes; the process keeps its peak
    retain_host_memory: bool = True
    #: CPU threads of the job (torch, the product readers); 0: from S2V_THREADS, SLURM_CPUS_PER_TASK,
    #: OMP_NUM_THREADS or the affinity mask (see s2v_gpu.threads). Several jobs per node: set it.
    threads: int = 0


@dataclass
class RunConfig:
    #: VENuS site to process; None: the only site among the products.
    site: str | None = None
    #: set by the data group (conf/data/*.yaml): demo, tiny or theia
    data: DataSource = DataSource.demo
    #: Output naming: "clean" (the paper's names) or "published" (the quirks of the Zenodo release:
    #: 8-character site prefix, red-edge files named b4b5b6b8a, LICENCE, per-site zenith angle).
    layout: Layout = Layout.clean
    #: set by the format group (conf/format/*.yaml): pt, or v2 (B11 B12 and per-patch GeoTIFFs too)
    format: OutputFormat = OutputFormat.pt
    #: a site folder made with another configuration is rebuilt (only the files its runs wrote are
    #: removed) instead of refused
    overwrite: bool = False
    progress: bool = True
    #: write the site's quality report (site_folder/report/) at the end of the run
    report: bool = True
    #: write the site's STAC Collection and Items (site_folder/stac/) and its dataset card
    stac: bool = True
    #: reuse each pair's registration, MTF and fit across a sweep of the selection thresholds
    #: (outlier_rmse, max_residual_m), kept in paths.dataset/.s2v_cache
    cache: CacheMode = CacheMode.auto
    paths: PathsConfig = field(default_factory=PathsConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    #: data=geodes: the catalogue, dates, cloud limit, credentials and downloads of the harvest
    harvest: HarvestConfig = field(default_factory=HarvestConfig)


def unknown_keys(node, schema, prefix: str = "") -> list[str]:
    """Keys of a composed config (a DictConfig or dict) that its dataclass ``schema`` does not have
    (Hydra accepts ``+key=value`` and OmegaConf keeps such keys: they would be silently ignored)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    out = []
    for key in node.keys():
        if key not in names:
            out.append(f"{prefix}{key} (not a key of {prefix.rstrip('.') or 'the configuration'}; keys: "
                       f"{', '.join(sorted(names))})")
            continue
        child_type = hints[key]
        if dataclasses.is_dataclass(child_type) and hasattr(node[key], "keys"):
            out += unknown_keys(node[key], child_type, f"{prefix}{key}.")
    return out



def _ranges(cfg: RunConfig) -> list[tuple[bool, str]]:
    p, r = cfg.pipeline, cfg.pipeline.registration
    return [
        (cfg.format is not OutputFormat.v2 or p.swir_20m,
         "pipeline.swir_20m=false: format=v2 carries Sentinel-2 B11 B12 (choose format=v2 alone, it sets it)"),
        (cfg.pairing.max_dt_minutes >= 0, f"pairing.max_dt_minutes={cfg.pairing.max_dt_minutes} must be >= 0"),
        (r.tile_size >= 32, f"pipeline.registration.tile_size={r.tile_size} must be >= 32"),
        (0 < r.max_distance_m <= 1000, f"pipeline.registration.max_distance_m={r.max_distance_m} must be in (0, 1000]"),
        (r.min_matches >= 1, f"pipeline.registration.min_matches={r.min_matches} must be >= 1"),
        (r.num_features >= 8, f"pipeline.registration.num_features={r.num_features} must be >= 8"),
        (0 < r.ratio <= 1, f"pipeline.registration.ratio={r.ratio} must be in (0, 1]"),
        (r.inlier_px > 0, f"pipeline.registration.inlier_px={r.inlier_px} must be > 0"),
        (r.max_spread_m > 0, f"pipeline.registration.max_spread_m={r.max_spread_m} must be > 0"),
        (0 <= r.min_inlier_fraction <= 1,
         f"pipeline.registration.min_inlier_fraction={r.min_inlier_fraction} must be in [0, 1]"),
        (r.max_tiles >= 0, f"pipeline.registration.max_tiles={r.max_tiles} must be >= 0"),
        (0 <= r.phase_min_peak <= 1, f"pipeline.registration.phase_min_peak={r.phase_min_peak} must be in [0, 1] "
                                     "(a normalised correlation peak)"),
        (r.phase_min_tiles >= 1, f"pipeline.registration.phase_min_tiles={r.phase_min_tiles} must be >= 1 "
                                 "(0 would accept a seed no tile agrees on)"),
        (r.refine_iterations >= 1, f"pipeline.registration.refine_iterations={r.refine_iterations} must be >= 1"),
        (r.refine_max_pixels >= 1000, f"pipeline.registration.refine_max_pixels={r.refine_max_pixels} must be >= 1000"),
        (1 <= r.refine_coarse_step <= 16,
         f"pipeline.registration.refine_coarse_step={r.refine_coarse_step} must be in [1, 16] (1: no coarse stage)"),
        (0 < r.refine_coarse_tol_px <= 1,
         f"pipeline.registration.refine_coarse_tol_px={r.refine_coarse_tol_px} must be in (0, 1]"),
        (r.refine_min_points >= 10, f"pipeline.registration.refine_min_points={r.refine_min_points} must be >= 10"),
        (r.refine_max_jump_px > 0, f"pipeline.registration.refine_max_jump_px={r.refine_max_jump_px} must be > 0"),
        (r.tukey_c > 0, f"pipeline.registration.tukey_c={r.tukey_c} must be > 0"),
        (16 <= r.local_tile_px <= 512, f"pipeline.registration.local_tile_px={r.local_tile_px} must be in [16, 512]"),
        (r.local_smoothing_tiles > 0,
         f"pipeline.registration.local_smoothing_tiles={r.local_smoothing_tiles} must be > 0"),
        (r.local_max_disagreement_px > 0,
         f"pipeline.registration.local_max_disagreement_px={r.local_max_disagreement_px} must be > 0"),
        (r.local_min_support >= 0, f"pipeline.registration.local_min_support={r.local_min_support} must be >= 0"),
        (0 <= r.local_max_field_m <= 100,
         f"pipeline.registration.local_max_field_m={r.local_max_field_m} must be in [0, 100]"),
        (0 <= p.read_margin_extra_px <= 16,
         f"pipeline.read_margin_extra_px={p.read_margin_extra_px} must be in [0, 16]"),
        (p.patches.size_5m >= 16 and p.patches.size_5m % 4 == 0,
         f"pipeline.patches.size_5m={p.patches.size_5m} must be a multiple of 4, >= 16"),
        (p.radiometry.fit_max_rmse > 0, f"pipeline.radiometry.fit_max_rmse={p.radiometry.fit_max_rmse} must be > 0"),
        (p.radiometry.n_pixels > 0, f"pipeline.radiometry.n_pixels={p.radiometry.n_pixels} must be > 0"),
        (p.radiometry.min_pixels >= 10, f"pipeline.radiometry.min_pixels={p.radiometry.min_pixels} must be >= 10"),
        (p.radiometry.min_band_std >= 0, f"pipeline.radiometry.min_band_std={p.radiometry.min_band_std} must be >= 0"),
        (p.selection.max_patches >= 1, f"pipeline.selection.max_patches={p.selection.max_patches} must be >= 1"),
        (p.selection.outlier_rmse > 0, f"pipeline.selection.outlier_rmse={p.selection.outlier_rmse} must be > 0"),
        (p.selection.max_residual_m >= 0,
         f"pipeline.selection.max_residual_m={p.selection.max_residual_m} must be >= 0 (0: off)"),
        (1 <= p.residual_iterations <= 10, f"pipeline.residual_iterations={p.residual_iterations} must be in [1, 10]"),
        (all(1 <= b <= 8 for b in p.masks.mg2_invalid_bits),
         f"pipeline.masks.mg2_invalid_bits={list(p.masks.mg2_invalid_bits)}: MG2 bit numbers are 1..8"),
        (cfg.device.threads >= 0, f"device.threads={cfg.device.threads} must be >= 0 (0: automatic)"),
        (cfg.demo.seed >= 0, f"demo.seed={cfg.demo.seed} must be >= 0 (it seeds numpy's generator of the demo)"),
        (cfg.device.name in ("auto", "cpu", "cuda") or (cfg.device.name.startswith("cuda:")
                                                        and cfg.device.name[5:].isdigit()),
         f"device.name={cfg.device.name!r}: use auto, cpu, cuda or cuda:N"),
    ]


def _non_finite(node, prefix: str = "") -> str | None:
    """The first float of the configuration that is NaN or infinite (a threshold that compares false
    with everything would pass any range check)."""
    items = asdict(node).items() if hasattr(node, "__dataclass_fields__") else node.items()
    for key, value in items:
        if isinstance(value, dict):
            found = _non_finite(value, f"{prefix}{key}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{key}={value}"
    return None


def refuse_failed(checks: list[tuple[bool, str]]) -> None:
    """Raise :class:`ConfigError` with the message of the first ``(ok, message)`` check that failed."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def validate(cfg: RunConfig) -> None:
    """Reject values that would fail later or give a wrong dataset, with a message naming the key.

    Raises:
        ConfigError: the first problem found.
    """
    bad = _non_finite(cfg)
    if bad:
        raise ConfigError(f"{bad}: must be a finite number")
    refuse_failed(_ranges(cfg))
    if cfg.site is not None:
        try:
            check_name(cfg.site, "site")
        except UnsafeNameError as exc:
            raise ConfigError(f"site={cfg.site!r}: {exc}") from exc
    local = (DataSource.theia, DataSource.geodes)
    if cfg.data in local and cfg.paths.products is None:
        raise ConfigError(f"paths.products is required with data={cfg.data}: give the folder holding the Theia "
                          "products (data=demo runs the embedded synthetic demo)")
    if cfg.data not in local and cfg.paths.products is not None:
        raise ConfigError(f"paths.products={cfg.paths.products} is set but data={cfg.data}: add data=theia to "
                          "build from those products")
    if cfg.data is DataSource.geodes:
        _validate_geodes(cfg)
    elif cfg.paths.products is not None and not Path(cfg.paths.products).is_dir():
        raise ConfigError(f"paths.products={cfg.paths.products}: folder not found (give the folder holding the "
                          "Theia products)")


def _validate_geodes(cfg: RunConfig) -> None:
    """data=geodes: a site to harvest, its footprint, the harvest's settings and key file, before any request."""
    from .harvest.app import read_api_key, resolve_sites, site_geometry
    from .harvest.config import validate_harvest

    if cfg.site is None:
        raise ConfigError("site is required with data=geodes: the site to harvest (e.g. site=ATTO)")
    validate_harvest(cfg.harvest)
    for site in resolve_sites(cfg.site):
        site_geometry(site, cfg.harvest)
    read_api_key(cfg.harvest)


#: Revision of ``registration.model=local``'s arithmetic, in its folders' configuration hash (2, in
#: 0.3.1: applied off the VENuS grid, the field's room checked at 10 m too and ``local_max_field_m``
#: on the grid too, tiles measured around the candidates only, float32 accumulation).
LOCAL_MODEL_REVISION = 2


#: The parts of the configuration that shape the tensors of a dataset folder (the rest — paths,
#: device, progress, report — does not change a byte of them, devices aside; see the README).
def method_config(cfg: RunConfig) -> dict:
    """The configuration that shapes the tensors, as plain JSON-able values."""
    method = {"pipeline": asdict(cfg.pipeline), "pairing": asdict(cfg.pairing), "layout": str(cfg.layout)}
    if cfg.format is not OutputFormat.pt:  # absent at the default: the folders made before it keep their hash
        method["format"] = str(cfg.format)
    if not cfg.pipeline.swir_20m:
        del method["pipeline"]["swir_20m"]
    if cfg.pipeline.registration.model != "local":  # only the local model reads it (hashes made before it stay)
        del method["pipeline"]["registration"]["local_per_patch"]
    else:  # a local-model folder of an earlier revision holds other tensors: another configuration
        method["local_model_revision"] = LOCAL_MODEL_REVISION
    r = cfg.pipeline.registration
    if r.mode != "robust" or not r.refine:  # no refinement (preset=paper): 0.3.x's tensors and hash stay
        del method["pipeline"]["registration"]["refine_coarse_step"]
        del method["pipeline"]["registration"]["refine_coarse_tol_px"]
    return json.loads(json.dumps(method, default=str))


def config_hash(cfg: RunConfig) -> str:
    """16 hex digits of the SHA-256 of :func:`method_config` (sorted keys)."""
    return hashlib.sha256(json.dumps(method_config(cfg), sort_keys=True).encode()).hexdigest()[:16]
