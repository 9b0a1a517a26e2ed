"""Shared fixtures: devices, the real data folder, a tiny synthetic archive built once per session."""

from __future__ import annotations

import os

# The suite runs many tiny tensor operations, in-process and in subprocesses (the CLI), where waking
# sleeping OpenMP workers costs more than on real work (tests/test_pipeline.py: 46.5 s with the run's
# yielding default, OMP_WAIT_POLICY=PASSIVE, against 42.8 s spinning). One suite on a dedicated box
# has no neighbour to yield to: its workers spin as the runtime's own default does (GOMP_SPINCOUNT
# takes precedence over the wait policy). Scheduling only: no result depends on it. The default
# itself is tested in test_threads.py (a clean environment) and measured by scripts/bench_jobs.py.
os.environ.setdefault("GOMP_SPINCOUNT", "300000")

# isort: split
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from s2v_gpu.synthetic import generate, preset

REPO = Path(__file__).resolve().parents[1]
# the jobs of this test session count each other's cores, not those of another session or of a
# user's runs on the machine (s2v_gpu.sharing): the thread counts the byte-identity tests rely on stay put
os.environ["S2V_JOBS_DIR"] = tempfile.mkdtemp(prefix="s2v-test-jobs-")
#: ../shared/data/real beside the checkout (S2V_SHARED overrides where shared/ lives).
REAL = Path(os.environ.get("S2V_SHARED", REPO.parent / "shared")) / "data" / "real"


def _devices() -> list:
    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
    ]


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """Every device test runs on the CPU, and on CUDA when there is one."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real data folder {REAL} not found (set S2V_SHARED to the shared/ folder)")
    return REAL


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """The tiny synthetic archive, written once, with its arrays kept for ground-truth checks."""
    return generate(preset("tiny", keep_arrays=True, write_sre=True), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_zip_archive(tmp_path_factory):
    return generate(preset("tiny", zip=True), tmp_path_factory.mktemp("tinyzip"))


@pytest.fixture
def corpus(tiny_archive, tmp_path):
    """A private copy of the tiny archive (folders) that a test may damage."""
    root = tmp_path / "products"
    shutil.copytree(tiny_archive.root, root)
    return root
