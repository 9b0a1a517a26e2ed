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


def _policy_seen_by(module: str, env_policy: str | None) -> str:
    """The OpenMP wait policy a fresh process has once ``module`` is imported, and whether torch was
    loaded after it was set (``policy torch-loaded-after``)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    code = (f"import importlib, sys; importlib.import_module({module!r}); import s2v_gpu.openmp as o, os; "
            "print(os.environ['OMP_WAIT_POLICY'], o.POLICY, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["s2v_gpu.run", "s2v_gpu.report.app", "s2v_gpu.aggregate",
                                    "s2v_gpu.synthetic.__main__", "s2v_gpu.dataset", "s2v_gpu.split",
                                    "s2v_gpu.harvest.app"])
def test_console_commands_make_openmp_threads_yield_before_torch_loads(module):
    """Every console command sets OMP_WAIT_POLICY=PASSIVE before torch (hence GNU OpenMP) is loaded:
    the runtime reads it once, at load; a policy the user set is kept as it is."""
    assert _policy_seen_by(module, None) == "PASSIVE PASSIVE True"


def test_a_wait_policy_the_user_set_is_kept():
    assert _policy_seen_by("s2v_gpu.run", "ACTIVE") == "ACTIVE ACTIVE True"


def test_every_console_script_is_covered_by_the_wait_policy_test():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    covered = {"s2v_gpu.run", "s2v_gpu.report.app", "s2v_gpu.aggregate", "s2v_gpu.split", "s2v_gpu.harvest.app"}
    assert {target.split(":")[0] for target in scripts.values()} <= covered


def test_a_policy_set_after_torch_loaded_is_reported_as_the_runtime_default(monkeypatch):
    """Imported by a library user after torch: nothing claims a policy the runtime never read."""
    import importlib

    import s2v_gpu.openmp as openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert openmp.yield_idle_threads() == "default"  # torch is loaded in the test process
    assert importlib.import_module("os").environ["OMP_WAIT_POLICY"] == "PASSIVE"  # children get it


_HOLDER = """
import sys, time
from pathlib import Path
from s2v_gpu.sharing import JobSlot
slot = JobSlot(Path(sys.argv[1])).__enter__()
print("ready", flush=True)
time.sleep(60)
"""


def test_jobs_on_the_same_cores_share_them_and_a_dead_jobs_slot_is_removed(clean_env, tmp_path):
    """Another live job on these cores halves the automatic thread count; once it is killed (its slot
    left behind, its lock released by the kernel), the count comes back and the slot is removed."""
    import subprocess
    import sys

    from s2v_gpu.sharing import JobSlot

    other = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        with JobSlot(tmp_path) as slot:
            assert slot.sharing() == 2
            assert resolve_threads(0) == (max(1, available_cores() // 2), "affinity mask shared by 2 jobs")
            assert resolve_threads(3) == (3, "device.threads")  # a count given is used as given
            clean_env.setenv("SLURM_CPUS_PER_TASK", "1")
            assert resolve_threads(0) == (1, "SLURM_CPUS_PER_TASK")  # so is a scheduler's
            clean_env.delenv("SLURM_CPUS_PER_TASK")
            other.kill()
            other.wait(30)
            assert len(list(tmp_path.glob("*.slot"))) == 2  # the dead job's slot is still there...
            assert slot.sharing() == 1 and resolve_threads(0) == (available_cores(), "affinity mask")
            assert [p.name for p in tmp_path.glob("*.slot")] == [slot.path.name]  # ...and now removed
        assert not list(tmp_path.glob("*.slot"))
    finally:
        other.kill()


def test_a_job_on_other_cores_is_not_counted(tmp_path):
    import json

    from s2v_gpu.sharing import JobSlot

    with JobSlot(tmp_path) as slot:
        # a live job elsewhere: its slot lists other cores (held open and locked by this test)
        import fcntl

        with open(tmp_path / "9999-x.slot", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            json.dump({"pid": 9999, "cores": [max(slot.cores) + 64]}, fh)
            fh.flush()
            assert slot.sharing() == 1


def test_a_slot_folder_others_may_write_is_not_used(tmp_path, caplog):
    """A jobs folder another user could write into (planted slots would steer our threads): the job
    runs as if alone and says so."""
    from s2v_gpu.sharing import JobSlot

    shared = tmp_path / "jobs"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with JobSlot(shared) as slot:
        assert slot.sharing() == 1 and not list(shared.iterdir())
    assert "not a private folder" in caplog.text
