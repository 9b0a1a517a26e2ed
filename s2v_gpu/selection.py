"""Random selection and outlier removal (paper section 2.5.5)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch


@dataclass
class SelectionConfig:
    max_patches: int = 500  # paper: at most 500 patches per pair
    outlier_rmse: float = 0.02  # paper: RMSE(S2 10 m, fitted VENuS at 10 m) above this is dropped
    #: ours: patches whose measured residual misregistration (10 m or 20 m group, metres) exceeds
    #: this, or whose measurement did not converge, are dropped; 0 = off (the paper's counts)
    max_residual_m: float = 0.0


def pair_generator(seed: int, pair_id: str) -> torch.Generator:
    """A CPU generator seeded from the run seed and the pair id: the same draws on every device and
    whatever the order in which pairs are processed."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(pair_id.encode())) % 2**63)


def select_random(candidates: torch.Tensor, max_patches: int, generator: torch.Generator) -> torch.Tensor:
    """At most ``max_patches`` of the candidate patch indices, drawn without replacement, in patch order.

    Args:
        candidates: ``(K,)`` int64 patch indices.

    Returns:
        ``(min(K, max_patches),)`` sorted indices.
    """
    if candidates.numel() <= max_patches:
        return candidates
    pick = torch.randperm(candidates.numel(), generator=generator)[:max_patches].to(candidates.device)
    return candidates[pick].sort().values
