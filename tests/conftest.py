"""Shared test configuration."""

from __future__ import annotations

import os
import pathlib

# Triton's interpreter runs the GPU kernels on CPU tensors in the tests. It must be switched on
# before anything imports Triton (torch.compile and the export tests do), or its JIT functions
# are compiled for a GPU that is not there.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"

# keep the suite deterministic and light on 2 cores
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES
