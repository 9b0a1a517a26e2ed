"""Tolerances for comparing two computations of the same sums taken in another order.

Two paths that add the same products in a different order (strips against the whole image, blocks of
rows against one pass, a window against the whole grid, chunks against one product) round
differently: which order a CPU takes depends on its vector width, on whether it fuses multiply-adds
and on the BLAS it runs (measured: 1 ulp in 2 of 576 float64 values on an AMD EPYC). Equality is
asserted only where it is guaranteed by construction (copies, integer and boolean logic, the same
operations in the same order on the same values); everywhere else these bounds.

The bound is the classical a-priori one for recursive summation (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., section 4.2): each of the ``terms`` roundings of a running sum moves it
by at most one unit roundoff times the sum of the magnitudes, so two orders of the same terms differ by
at most ``terms * eps * sum|w_i x_i|``. It stays orders of magnitude below what a real error makes (a
wrong tap, a window shifted by one pixel, a missing mask): each test shows that too, with
:func:`assert_tolerance_catches`.
"""

from __future__ import annotations

import numpy as np
import torch


def reorder_tolerance(dtype, terms: int, magnitude: float) -> float:
    """The largest difference two summation orders of ``terms`` products can give, for products whose
    absolute values add up to at most ``magnitude``."""
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) else float(np.finfo(dtype).eps)
    return terms * eps * magnitude


def assert_reordered_close(got, want, tolerance: float) -> None:
    """``got`` and ``want`` (tensors or arrays) equal within ``tolerance``, NaN where the other is NaN."""
    got = torch.as_tensor(np.asarray(got.cpu() if isinstance(got, torch.Tensor) else got))
    want = torch.as_tensor(np.asarray(want.cpu() if isinstance(want, torch.Tensor) else want))
    torch.testing.assert_close(got, want, atol=tolerance, rtol=0, equal_nan=True)


def assert_tolerance_catches(wrong, want, tolerance: float) -> None:
    """The tolerance is tight enough: ``wrong`` (a deliberately wrong computation, e.g. a window moved by
    one pixel) differs from ``want`` by far more than it."""
    wrong = torch.as_tensor(np.asarray(wrong.cpu() if isinstance(wrong, torch.Tensor) else wrong)).double()
    want = torch.as_tensor(np.asarray(want.cpu() if isinstance(want, torch.Tensor) else want)).double()
    gap = (wrong - want).abs().nan_to_num(0).max().item()
    assert gap > 100 * tolerance, (gap, tolerance)
