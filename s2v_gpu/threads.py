"""How many CPU threads a job may use: one job per node is rare on shared servers and clusters.

torch's default is every core of the machine; several jobs per node then oversubscribe the cores
(measured: a 2-thread pipeline ran 35x its single-thread time beside another job on 2 cores). The
run sets torch's intra-op threads and the product readers' pool from ``device.threads``; 0 (the
default) resolves, in order, from ``S2V_THREADS``, ``SLURM_CPUS_PER_TASK`` (what a SLURM job was
given), ``OMP_NUM_THREADS`` (which joblib's workers receive as cores / n_jobs), and the cores of the
process's affinity mask, divided among the running jobs that share them (:mod:`s2v_gpu.sharing`).
"""

from __future__ import annotations

import logging
import os

import torch

from . import openmp
from .sharing import active_slot

log = logging.getLogger(__name__)

_SOURCES = ("S2V_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(configured: int = 0) -> tuple[int, str]:
    """``(threads, where the number came from)``."""
    if configured > 0:
        return configured, "device.threads"
    for name in _SOURCES:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), available_cores()), name
    cores, slot = available_cores(), active_slot()
    jobs = slot.sharing() if slot is not None else 1
    if jobs > 1:  # other jobs run on these cores: this job's share (see s2v_gpu.sharing)
        return max(1, cores // jobs), f"affinity mask shared by {jobs} jobs"
    return cores, "affinity mask"


def apply_threads(configured: int = 0) -> int:
    """Set torch's intra-op threads and the readers' pool; returns the number used. Called when a run
    starts and before each of its pairs (the automatic count follows the jobs sharing the cores)."""
    from .products import product

    threads, source = resolve_threads(configured)
    readers = max(1, min(product.DEFAULT_READ_THREADS, 2 * threads))
    if torch.get_num_threads() != threads or product.READ_THREADS != readers or not _LOGGED:
        log.info("%d CPU threads (from %s), %d reader threads, OpenMP wait policy %s", threads, source, readers,
                 openmp.POLICY)
        _LOGGED.append(True)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    product.READ_THREADS = readers
    return threads


_LOGGED: list[bool] = []
