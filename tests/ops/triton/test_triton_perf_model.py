"""The written performance model stays in sync with the code that computes it."""

from __future__ import annotations

import math

from largekernel.ops.triton import configs as cfgs
from largekernel.ops.triton import perf_model


def test_docstring_tables_are_the_computed_ones():
    assert perf_model.markdown_table(4) in perf_model.__doc__
    assert perf_model.markdown_table(2) in perf_model.__doc__


def test_flops_and_bytes_follow_the_direct_convolution_counts():
    n, c, h, w, k = 8, 64, 56, 56, 13
    numel = n * c * h * w
    for cost in perf_model.costs((n, c, h, w), k, 4):
        assert cost.flops == 2 * numel * k * k
        assert cost.dram >= 2 * 4 * numel  # at least one read and one write / two reads of the maps
        assert cost.l1 >= 4 * numel * k * k  # one 4-byte element per FMA (no register shifts)
    fwd = perf_model.costs((n, c, h, w), k, 4)[0]
    tile = cfgs.candidates("sp", False, c, h, w)[0]
    tiles = n * c * math.ceil(h / tile.block_h) * math.ceil(w / tile.block_w)
    halo = 4 * tiles * (tile.block_h + k - 1) * (tile.block_w + k - 1)
    assert fwd.l2 == halo + 4 * numel


def test_roofline_time_is_the_slowest_resource():
    cost = perf_model.KernelCost("forward", flops=2e12, dram=1e9, l2=1e9, l1=4e12, tile="t")
    dev = perf_model.Device("test", hbm=1e12, l2=1e13, l1=1e13, fp32=1e13, sms=1)
    t, bound = cost.time(dev)
    assert bound == "L1" and t == 0.4
