"""``engine_may_differ`` is the one rule behind ``nn.engine_can_help`` and the compile path's
``_engine_worthwhile``: it must say True exactly when the dispatcher can plan something other
than PyTorch's own convolution (``native``/``native_cl`` forward, ``autograd`` backward).

The dispatcher's heuristic table is the independent reference here: for every rank, grouping,
kernel size and dilation on a grid around the thresholds, the predicate is compared with what
``heuristic_plan`` actually plans (with and without gradients, both memory formats).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from largekernel.nn.acceleration import engine_can_help
from largekernel.ops.custom_op import _engine_worthwhile
from largekernel.ops.dispatch import engine_may_differ, heuristic_plan
from largekernel.ops.validation import normalize_conv_args

PYTORCH_PLANS = {("native", "autograd", "autograd"), ("native_cl", "autograd", "autograd"),
                 ("native", "none", "none"), ("native_cl", "none", "none")}
SIZE = 40


def _planned_by_engine(nd, in_per_group, k, dilation):
    channels = 8 * in_per_group
    groups = channels // in_per_group
    weight_shape = (channels, in_per_group) + (k,) * nd
    for memory_format in ("nc", "cl"):
        x = torch.empty((2, channels) + (SIZE,) * nd)
        if memory_format == "cl" and nd > 1:
            x = x.contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
        args = normalize_conv_args(x, torch.empty(weight_shape), None, 1, 0, dilation, groups)
        for requires_grad in (False, True):
            plan = heuristic_plan(x, weight_shape, args, requires_grad)
            if (plan.forward, plan.grad_input, plan.grad_weight) not in PYTORCH_PLANS:
                return True
    return False


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("in_per_group", [1, 4, 5])
def test_predicate_matches_the_dispatch_table(nd, in_per_group):
    for k in range(1, 26 if nd < 3 else 14):
        for dilation in (1, 2):
            extent = dilation * (k - 1) + 1
            if extent > SIZE:
                continue
            expected = _planned_by_engine(nd, in_per_group, k, dilation)
            assert engine_may_differ(nd, 8, in_per_group, extent) == expected, (nd, in_per_group, k, dilation)


def test_ungrouped_small_kernels_stay_pytorch():
    assert not engine_may_differ(2, groups=1, in_per_group=1, extent=7)
    assert engine_may_differ(1, groups=1, in_per_group=64, extent=127)  # FFT territory for any grouping


@pytest.mark.parametrize("conv,expected", [
    (nn.Conv2d(8, 8, 13, padding=6, groups=8), True),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), False),
    (nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), True),  # extent 5
    (nn.Conv2d(32, 32, 7, padding=3, groups=4), False),           # 8 input channels per group
    (nn.Conv1d(4, 4, 127, padding=63), True),                     # dense, FFT-sized
    (nn.Conv3d(8, 16, 3, padding=1), False),
])
def test_module_and_compile_predicates_use_the_rule(conv, expected):
    assert engine_can_help(conv) is expected
    x = torch.empty((1, conv.in_channels) + (24,) * (conv.weight.dim() - 2))
    args = normalize_conv_args(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert _engine_worthwhile(args, torch.float32) is expected
    # the engine computes CPU half precision in float32, so the compile path always routes it
    assert _engine_worthwhile(args, torch.bfloat16) is True
