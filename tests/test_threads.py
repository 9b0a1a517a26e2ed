"""Thread control for shared nodes: the job's CPU threads come from the configuration, the
scheduler or the launcher, never blindly from every core of the machine."""

import pytest
import torch
from omegaconf import OmegaConf

from s2v_gpu.app import launcher_threads
from s2v_gpu.products import product
from s2v_gpu.threads import apply_threads, available_cores, resolve_threads


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("S2V_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    saved = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(saved)
    product.READ_THREADS = product.DEFAULT_READ_THREADS


def test_threads_resolve_in_order(clean_env):
    assert resolve_threads(0) == (available_cores(), "affinity mask")
    clean_env.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(0) == (1, "OMP_NUM_THREADS")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
    assert resolve_threads(0)[1] == "SLURM_CPUS_PER_TASK"
    clean_env.setenv("S2V_THREADS", "1")
    assert resolve_threads(0)[1] == "S2V_THREADS"
    assert resolve_threads(3) == (3, "device.threads")
    clean_env.setenv("S2V_THREADS", "999")
    assert resolve_threads(0)[0] == available_cores()  # never more than the process may use


def test_apply_threads_sets_torch_and_the_readers(clean_env):
    assert apply_threads(1) == 1
    assert torch.get_num_threads() == 1 and product.READ_THREADS == 2


def test_launcher_presets_give_each_job_its_share():
    assert launcher_threads(OmegaConf.create({"cpus_per_task": 1})) == 1
    assert launcher_threads(OmegaConf.create({"n_jobs": 2 * available_cores()})) == 1
    assert launcher_threads(OmegaConf.create({"n_jobs": -1})) == 0
    assert launcher_threads(OmegaConf.create({})) == 0
