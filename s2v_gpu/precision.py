"""Full float32 convolutions on every device.

On Ampere and later GPUs cuDNN runs float32 convolutions in TF32 by default (PyTorch's
``torch.backends.cudnn.allow_tf32``): a 10-bit mantissa, about 1e-3 relative error, i.e. several
digital numbers of a Sentinel-2 reflectance after the MTF blur, and a CUDA dataset that differs from
the CPU one. The blur, the per-patch warps and the synthetic sensors are cheap next to the I/O, so they
run in IEEE float32; nothing else is changed (matrix products are not TF32 by PyTorch's default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

Fn = TypeVar("Fn", bound=Callable)


def ieee_convolutions():
    """Context in which cuDNN convolutions are computed in full float32 (no TF32); the other cuDNN
    settings are kept as they are."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=False)


def full_float32(fn: Fn) -> Fn:
    """Decorator: ``fn`` runs inside :func:`ieee_convolutions`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with ieee_convolutions():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
