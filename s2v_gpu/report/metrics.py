"""Quality metrics of a dataset (paper section 3.1): MAE and RMSE per site and band between
Sentinel-2 and VENuS downsampled to the Sentinel-2 resolution with the per-band MTF Gaussian, on a
seeded random selection of ``n_patches`` patches from at most ``max_pairs`` pairs per site.

Importing this module registers nothing (the Hydra app is :mod:`s2v_gpu.report.app`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..bands import GROUP_10M, GROUP_20M
from ..dataset import PairEntry
from ..layout import SCALE
from ..mtf import band_sigmas_px, mtf_downsample

BANDS = list(GROUP_10M["s2"]) + list(GROUP_20M["s2"])
GROUPS = {  # band group -> (VENuS 5 m column, S2 column, factor, S2 resolution, S2 bands)
    "10m": ("tensor_05m_b2b3b4b8", "tensor_10m_b2b3b4b8", 2, 10.0, GROUP_10M["s2"]),
    "20m": ("tensor_05m_b5b6b7b8a", "tensor_20m_b5b6b7b8a", 4, 20.0, GROUP_20M["s2"]),
}


@dataclass
class ReportConfig:
    n_patches: int = 200  # paper: 200 patches per site
    max_pairs: int = 10  # paper: from at most 10 pairs (its figure captions say 20)
    seed: int = 0
    max_mae: float = 0.01
    max_rmse: float = 0.03
    weak_min_matches: int = 50
    weak_max_spread_m: float = 6.0
    sample_patches: int = 2
    dpi: int = 150  # the figures' resolution (PNG embedded in the page)


def load(entry: PairEntry, column: str) -> torch.Tensor:
    return torch.load(entry.folder / entry.files[column], mmap=True, weights_only=True)


def select_patches(entries: list[PairEntry], cfg: ReportConfig) -> list[tuple[PairEntry, int]]:
    """The seeded selection of one site: at most ``max_pairs`` pairs, then ``n_patches`` patches."""
    rng = random.Random(cfg.seed)
    pairs = sorted(entries, key=lambda e: e.pair_id)
    pairs = rng.sample(pairs, min(cfg.max_pairs, len(pairs)))
    pool = [(e, j) for e in sorted(pairs, key=lambda e: e.pair_id) for j in range(e.n)]
    return sorted(rng.sample(pool, min(cfg.n_patches, len(pool))), key=lambda x: (x[0].pair_id, x[1]))


def site_metrics(selection: list[tuple[PairEntry, int]]) -> dict[str, dict[str, float]]:
    """MAE and RMSE per band between Sentinel-2 and MTF-downsampled VENuS on the selected patches."""
    out = {}
    by_pair: dict[str, list[int]] = {}
    entry_of = {}
    for e, j in selection:
        by_pair.setdefault(e.pair_id, []).append(j)
        entry_of[e.pair_id] = e
    for vcol, scol, factor, res, bands in GROUPS.values():
        errors = []
        for pid, idx in by_pair.items():
            e = entry_of[pid]
            v = load(e, vcol)[idx].double() / SCALE
            s = load(e, scol)[idx].double() / SCALE
            low = mtf_downsample(v, band_sigmas_px(bands, res), factor)
            errors.append((low - s).permute(1, 0, 2, 3).reshape(len(bands), -1))
        err = torch.cat(errors, dim=1)
        for b, row in zip(bands, err):
            out[b] = {"mae": float(row.abs().mean()), "rmse": float(row.pow(2).mean().sqrt())}
    return out
