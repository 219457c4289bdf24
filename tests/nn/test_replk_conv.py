"""ReparamLargeKernelConv (RepLKNet): official key names, exact merge, deploy form, errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from largekernel.nn.replk_conv import ReparamLargeKernelConv
from nn_helpers import randomise_bns


def _bn(y, b):
    s = (1, -1, 1, 1)
    return (y - b.running_mean.view(s)) / (b.running_var.view(s) + b.eps).sqrt() * b.weight.view(s) + b.bias.view(s)


def _reference(m: ReparamLargeKernelConv, x: torch.Tensor) -> torch.Tensor:
    out = _bn(F.conv2d(x, m.lkb_origin.conv.weight, None, m.stride, m.kernel_size // 2, 1, m.groups), m.lkb_origin.bn)
    if m.small_kernel is not None:
        w = m.small_conv.conv.weight
        out = out + _bn(F.conv2d(x, w, None, m.stride, m.small_kernel // 2, 1, m.groups), m.small_conv.bn)
    return out


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(
    "cin,cout,K,stride,groups,small",
    [(4, 4, 31, 1, None, 5), (4, 4, 13, 2, None, 5), (4, 6, 7, 1, 2, 3), (3, 3, 27, 1, None, None), (2, 4, 9, 2, 1, 9)],
)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_merge_is_exact(cin, cout, K, stride, groups, small, dtype, tol):
    torch.manual_seed(K + stride)
    m = ReparamLargeKernelConv(cin, cout, K, stride=stride, groups=groups, small_kernel=small, dtype=dtype)
    randomise_bns(m, seed=K)
    m.eval()
    xs = [torch.randn(2, cin, 17, 12, dtype=dtype), torch.randn(1, cin, 3, 5, dtype=dtype)]
    with torch.no_grad():
        refs = [_reference(m, x) for x in xs]
        for x, r in zip(xs, refs):
            assert _rel(m(x), r) <= tol
        m.reparameterize()
        for x, r in zip(xs, refs):
            assert _rel(m(x), r) <= tol
    assert set(m.state_dict()) == {"lkb_reparam.weight", "lkb_reparam.bias"}


def test_key_names_match_official_fixture(fixtures_dir):
    d = torch.load(fixtures_dir / "replknet_small_official.pt", weights_only=True)
    prefix = "stages.0.blocks.0.large_kernel."
    train = {k[len(prefix):]: v for k, v in d["train_state_dict"].items() if k.startswith(prefix)}
    deploy = {k[len(prefix):]: v for k, v in d["deploy_state_dict"].items() if k.startswith(prefix)}
    c = train["lkb_origin.conv.weight"].shape[0]
    k = train["lkb_origin.conv.weight"].shape[-1]
    s = train["small_conv.conv.weight"].shape[-1]
    m = ReparamLargeKernelConv(c, c, k, small_kernel=s)
    m.load_state_dict(train)  # strict: names and shapes agree
    m.eval()
    m.reparameterize()
    assert set(m.state_dict()) == set(deploy)
    for key, value in deploy.items():
        assert _rel(m.state_dict()[key], value) <= 1e-5
    md = ReparamLargeKernelConv(c, c, k, small_kernel=s, deploy=True)
    md.load_state_dict(deploy)


def test_idempotent_and_deploy_flag():
    m = ReparamLargeKernelConv(4, 4, 13, small_kernel=5)
    assert not m.deploy
    m.eval()
    m.reparameterize()
    w = m.lkb_reparam.weight.clone()
    m.reparameterize()
    assert m.deploy and torch.equal(w, m.lkb_reparam.weight)


def test_get_kernel_bias_differentiable():
    m = ReparamLargeKernelConv(3, 3, 9, small_kernel=3)
    k, b = m.get_kernel_bias()
    assert k.shape == (3, 1, 9, 9) and b.shape == (3,)
    (k.square().sum() + b.sum()).backward()
    assert m.small_conv.conv.weight.grad is not None and m.lkb_origin.bn.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    m = ReparamLargeKernelConv(4, 4, 13, small_kernel=5)
    randomise_bns(m)
    m.eval()
    ref_k, ref_b = m.get_kernel_bias()
    m = m.to(dtype)
    m.reparameterize()
    assert m.lkb_reparam.weight.dtype == dtype
    assert _rel(m.lkb_reparam.weight.float(), ref_k.detach()) <= 2e-2
    assert _rel(m.lkb_reparam.bias.float(), ref_b.detach()) <= 2e-2


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        ReparamLargeKernelConv(4, 4, 12)
    with pytest.raises(ValueError, match="small_kernel"):
        ReparamLargeKernelConv(4, 4, 7, small_kernel=9)
    with pytest.raises(ValueError, match="small_kernel"):
        ReparamLargeKernelConv(4, 4, 7, small_kernel=4)
    with pytest.raises(ValueError, match="groups"):
        ReparamLargeKernelConv(4, 6, 7, groups=4)
    with pytest.raises(ValueError, match="in_channels"):
        ReparamLargeKernelConv(0, 4, 7)
