"""Shared fixtures: devices, the real data folder, a tiny synthetic archive built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from s2v_gpu.synthetic import generate, preset

REPO = Path(__file__).resolve().parents[1]
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
