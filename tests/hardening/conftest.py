"""Fixtures of the input-hardening tests: one tiny trained run."""

from __future__ import annotations

import pytest
import torch

from hardening_helpers import TINY
from largekernel.cli import main


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished one-step run of the default model (dims 8-16-32-64) on digits."""
    out = tmp_path_factory.mktemp("hardening") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--output", str(out), *TINY]) == 0
    finally:
        torch.set_num_threads(threads)
    return out
