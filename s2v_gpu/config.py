"""Typed Hydra structured configs of the run app (registered in Hydra's ConfigStore).

The YAML files of ``conf/`` (``s2v_gpu/conf``, shipped as package data and found through
``pkg://s2v_gpu.conf``) select presets on top of these schemas; OmegaConf rejects unknown keys and
wrong types, :func:`validate` rejects values that make no sense, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore

from .errors import S2VError
from .pairing import PairingConfig
from .pipeline import PipelineConfig


class ConfigError(S2VError, ValueError):
    """The configuration is wrong; the message says what to fix."""


@dataclass
class PathsConfig:
    #: Folder searched recursively for Theia products (folders and zips); None: the synthetic demo.
    products: Optional[str] = None
    #: Output folder: one sub-folder per site.
    dataset: str = "dataset"
    #: Where the synthetic demo archive is written (once) when ``products`` is None.
    demo: str = "demo_products"


@dataclass
class DemoConfig:
    preset: str = "demo"  # tiny, demo or full (see s2v_gpu.synthetic.preset)
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


@dataclass
class RunConfig:
    #: VENuS site to process; None: the only site among the products.
    site: Optional[str] = None
    #: Output naming: "clean" (the paper's names) or "published" (the quirks of the Zenodo release:
    #: site cut/padded to 8 characters, red-edge files named b4b5b6b8a).
    layout: str = "clean"
    progress: bool = True
    #: write the site's quality report (site_folder/report/) at the end of the run
    report: bool = True
    paths: PathsConfig = field(default_factory=PathsConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="s2v_schema", node=RunConfig)


def validate(cfg: RunConfig) -> None:
    """Reject values that would fail later, with a message saying what to fix.

    Raises:
        ConfigError: the first problem found.
    """
    p = cfg.pipeline
    checks = [
        (cfg.layout in ("clean", "published"), f"layout={cfg.layout!r}: use 'clean' or 'published'"),
        (p.reflectance in ("FRE", "SRE"), f"pipeline.reflectance={p.reflectance!r}: use FRE or SRE"),
        (p.registration.mode in ("paper", "robust"),
         f"pipeline.registration.mode={p.registration.mode!r}: use 'paper' or 'robust'"),
        (cfg.pairing.max_dt_minutes >= 0, f"pairing.max_dt_minutes={cfg.pairing.max_dt_minutes} must be >= 0"),
        (p.registration.tile_size >= 32, f"pipeline.registration.tile_size={p.registration.tile_size} must be >= 32"),
        (p.registration.max_distance_m > 0,
         f"pipeline.registration.max_distance_m={p.registration.max_distance_m} must be > 0"),
        (p.registration.min_matches >= 1, f"pipeline.registration.min_matches={p.registration.min_matches} must be >= 1"),
        (p.patches.size_5m >= 16 and p.patches.size_5m % 4 == 0,
         f"pipeline.patches.size_5m={p.patches.size_5m} must be a multiple of 4, >= 16"),
        (p.radiometry.fit_max_rmse > 0, f"pipeline.radiometry.fit_max_rmse={p.radiometry.fit_max_rmse} must be > 0"),
        (p.radiometry.n_pixels > 0, f"pipeline.radiometry.n_pixels={p.radiometry.n_pixels} must be > 0"),
        (p.selection.max_patches >= 1, f"pipeline.selection.max_patches={p.selection.max_patches} must be >= 1"),
        (p.selection.outlier_rmse > 0, f"pipeline.selection.outlier_rmse={p.selection.outlier_rmse} must be > 0"),
        (all(1 <= b <= 8 for b in p.masks.mg2_invalid_bits),
         f"pipeline.masks.mg2_invalid_bits={list(p.masks.mg2_invalid_bits)}: MG2 bit numbers are 1..8"),
        (cfg.device.name == "auto" or cfg.device.name == "cpu" or cfg.device.name.startswith("cuda"),
         f"device.name={cfg.device.name!r}: use auto, cpu, cuda or cuda:N"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if cfg.paths.products is not None and not Path(cfg.paths.products).is_dir():
        raise ConfigError(f"paths.products={cfg.paths.products}: folder not found (give the folder holding the "
                          "Theia products, or leave it unset to run the synthetic demo)")
