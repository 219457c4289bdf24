"""largekernel.reparameterize: whole-model exactness, idempotence, dtypes, timm protocol."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from models.model_helpers import randomise
from models.model_helpers import rel as _rel

import largekernel
from largekernel.models.replknet import RepLKNet
from largekernel.models.unireplknet import UniRepLKNet

TINY = dict(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7, 0), (5,), (13,)))


def _randomise(model: nn.Module, seed: int = 0) -> None:
    randomise(model, seed, stat_scale=0.2, scale_std=0.5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_unireplknet_exact(dtype, tol):
    torch.manual_seed(0)
    model = UniRepLKNet(num_classes=6, **TINY).to(dtype)
    _randomise(model)
    model.eval()
    xs = [torch.randn(2, 3, 45, 37, dtype=dtype), torch.randn(1, 3, 20, 20, dtype=dtype)]
    with torch.no_grad():
        refs = [model(x) for x in xs]
        fused = largekernel.reparameterize(model)
        for x, r in zip(xs, refs):
            assert _rel(fused(x), r) <= tol
    keys = set(fused.state_dict())
    assert not any(re.search(r"(origin_bn|dil_|\.norm\.running|pwconv2\.2|act\.1\.beta)", k) for k in keys)
    assert not any(re.fullmatch(r"stages\.\d+\.\d+\.gamma", k) for k in keys)
    # the identity-mixer (kernel 0) block has no BN at all, as in the official layout
    assert not any(k.startswith("stages.1.1.norm.") for k in keys)
    assert all(p.dtype == dtype for p in fused.parameters())
    # deploy=True builds exactly this layout
    deploy = UniRepLKNet(num_classes=6, deploy=True, **TINY)
    deploy.load_state_dict(fused.state_dict())


def test_not_inplace_by_default_and_eval_mode():
    model = UniRepLKNet(num_classes=3, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = largekernel.reparameterize(model)
    assert fused is not model and model.training and not fused.training
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    same = largekernel.reparameterize(model, inplace=True)
    assert same is model and not model.training


def test_idempotent():
    model = UniRepLKNet(num_classes=3, **TINY)
    _randomise(model)
    once = largekernel.reparameterize(model)
    twice = largekernel.reparameterize(once)
    a, b = once.state_dict(), twice.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(dtype):
    torch.manual_seed(0)
    model = UniRepLKNet(num_classes=4, **TINY)
    _randomise(model)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    half = largekernel.reparameterize(model.to(dtype))
    assert all(p.dtype == dtype for p in half.parameters())
    fused32 = largekernel.reparameterize(model.float())
    with torch.no_grad():
        # the fused half-precision weights equal the fp32-fused ones rounded to the half dtype
        for (k, v), v32 in zip(half.state_dict().items(), fused32.state_dict().values()):
            if v.is_floating_point():
                assert torch.allclose(v.float(), v32, rtol=2e-2, atol=2e-3), k
        assert torch.isfinite(fused32(x)).all()


def test_replknet_and_nested_containers():
    model = nn.Sequential(RepLKNet(num_classes=3, large_kernel_sizes=(7, 7, 5, 5), layers=(1, 1, 1, 1),
                                   channels=(4, 8, 8, 8), small_kernel=3))
    _randomise(model)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        fused = largekernel.reparameterize(model)
        assert _rel(fused(x), y) <= 1e-5
    assert any(k.endswith("lkb_reparam.weight") for k in fused.state_dict())


class _Fusable(nn.Module):
    """A module following timm's ``fuse()`` protocol: returns a new module."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(self.a(x))

    def fuse(self) -> nn.Module:
        out = nn.Linear(4, 4)
        with torch.no_grad():
            out.weight.copy_(self.b.weight @ self.a.weight)
            out.bias.copy_(self.b.weight @ self.a.bias + self.b.bias)
        return out


class _Switchable(nn.Module):
    def __init__(self):
        super().__init__()
        self.deployed = False

    def forward(self, x):
        return x

    def switch_to_deploy(self):
        self.deployed = True


def test_timm_protocol_for_foreign_modules():
    model = nn.Sequential(_Fusable(), nn.Sequential(_Switchable()))
    x = torch.randn(3, 4)
    with torch.no_grad():
        y = model(x)
        fused = largekernel.reparameterize(model)
        assert isinstance(fused[0], nn.Linear)
        assert fused[1][0].deployed
        assert torch.allclose(fused(x), y, atol=1e-6)
    root = largekernel.reparameterize(_Fusable())  # the root itself may be replaced
    assert isinstance(root, nn.Linear)


def test_bad_argument():
    with pytest.raises(TypeError, match="nn.Module"):
        largekernel.reparameterize({"not": "a model"})
