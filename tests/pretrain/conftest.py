"""Tiny backbones of every image family, shared by the pre-training tests."""

from __future__ import annotations

import pytest

#: (model name, create_model kwargs, image side) - small enough for a 2-core test run, each
#: with a mask grid of at least 2x2 patches
TINY_BACKBONES = {
    "unireplknet": ("unireplknet_a", dict(in_chans=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16],
                                          kernel_sizes=[[3], [13], [7], [3]], stem_stride=1), 32),
    "convnext": ("convnext_atto", dict(in_chans=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16]), 64),
    "convnext_linear_mlp": ("convnext_atto", dict(in_chans=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16],
                                                  conv_mlp=False), 64),
    "inception_next": ("inception_next_atto", dict(in_chans=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 16]), 64),
    "replknet": ("replknet_31b", dict(in_chans=1, layers=[1, 1, 1, 1], channels=[8, 16, 16, 16],
                                      large_kernel_sizes=[13, 7, 7, 7], small_kernel=3), 64),
    "lsnet": ("lsnet_t", dict(in_chans=1, depths=[1, 1, 1, 1], dims=[16, 16, 32, 32], num_heads=[1, 1, 1, 1],
                              key_dim=8), 128),
}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
