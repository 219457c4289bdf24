"""UniRepLKNet in 1-D and 3-D: equivalence with the (official-parity) 2-D network, exact
reparameterisation in float64, features_only shapes/strides and input-dimension errors.

The reference for the d-dimensional network is the (d+1)-dimensional one: a 1-D model whose
kernels are the central rows of a 2-D model's kernels computes exactly what the 2-D model computes
on a height-1 image (every other kernel row only ever reads zero padding, and all norms and pools
see the same values); likewise 2-D against 3-D on a depth-1 volume. The 2-D network itself is
checked against the official code's outputs in test_unireplknet.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import randomise

import largekernel
from largekernel.models.unireplknet import UniRepLKNet, UniRepLKNetBlock
from largekernel.nn.conv import Conv1d, Conv3d
from largekernel.nn.dilated_reparam import DILATED_BRANCHES, DilatedReparamConv

TINY = dict(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (13, 0), (5,), (7,)))


def _central_slice(sd_high: dict, sd_low_ref: dict) -> dict:
    """Map a state dict of the (d+1)-dim model onto the d-dim model: the central kernel slice."""
    out = {}
    for key, ref in sd_low_ref.items():
        v = sd_high[key]
        if v.dim() == ref.dim() + 1:  # a conv kernel: drop the first spatial axis at its centre
            v = v.select(2, v.shape[2] // 2)
        assert v.shape == ref.shape, key
        out[key] = v.clone()
    return out


@pytest.mark.parametrize("low", [1, 2])
def test_lower_dim_model_equals_higher_dim_on_singleton_axis(low):
    torch.manual_seed(0)
    high = UniRepLKNet(in_chans=2, num_classes=5, spatial_dims=low + 1, **TINY)
    randomise(high)
    high = high.double().eval()
    lowm = UniRepLKNet(in_chans=2, num_classes=5, spatial_dims=low, **TINY).double().eval()
    assert set(lowm.state_dict()) == set(high.state_dict())  # same key layout in every dimension
    lowm.load_state_dict(_central_slice(high.state_dict(), lowm.state_dict()))
    x = torch.randn(3, 2, *([20] * low), dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(lowm(x), high(x.unsqueeze(2)), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("dims_", [1, 3])
def test_whole_model_reparameterisation_exact_float64(dims_):
    torch.manual_seed(1)
    model = UniRepLKNet(in_chans=3, num_classes=4, spatial_dims=dims_, **TINY)
    randomise(model, seed=dims_)
    model = model.double().eval()
    size = 40 if dims_ == 1 else 16
    x = torch.randn(2, 3, *([size] * dims_), dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        fused = largekernel.reparameterize(model, inplace=False)
        out = fused(x)
    assert torch.allclose(out, ref, atol=1e-12, rtol=1e-10)
    # the fused form has exactly the keys of a model built in deploy form, with the same shapes
    deploy = UniRepLKNet(in_chans=3, num_classes=4, spatial_dims=dims_, deploy=True, **TINY).double()
    ours, want = fused.state_dict(), deploy.state_dict()
    assert set(ours) == set(want) and all(ours[k].shape == want[k].shape for k in want)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())


@settings(max_examples=8, deadline=None)
@given(
    k=st.sampled_from([0, 3] + sorted(DILATED_BRANCHES)),
    dims_=st.sampled_from([1, 3]),
    length=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_block_reparameterisation_exact_any_kernel(k, dims_, length, seed):
    torch.manual_seed(seed)
    block = UniRepLKNetBlock(6, k, spatial_dims=dims_)
    randomise(block, seed=seed)
    block = block.double().eval()
    x = torch.randn(2, 6, *([length] * dims_), dtype=torch.float64)
    with torch.no_grad():
        ref = block(x)
        block.reparameterize()
        block.reparameterize()  # idempotent
        assert torch.allclose(block(x), ref, atol=1e-12, rtol=1e-10)


def test_mixers_run_through_the_engine():
    m1 = UniRepLKNet(spatial_dims=1, **TINY)
    m3 = UniRepLKNet(spatial_dims=3, **TINY)
    assert isinstance(m1.stages[1][0].dwconv, DilatedReparamConv) and m1.stages[1][0].dwconv.ndim == 1
    assert isinstance(m1.stages[1][0].dwconv.lk_origin, Conv1d)
    assert isinstance(m1.stages[0][0].dwconv, Conv1d)
    assert isinstance(m3.stages[1][0].dwconv.lk_origin, Conv3d)
    assert isinstance(m3.stages[2][0].dwconv, Conv3d)
    fused = largekernel.reparameterize(m3.eval(), inplace=False)
    assert isinstance(fused.stages[1][0].dwconv.lk_origin, Conv3d)  # still the engine after fusion
    assert fused.stages[1][0].dwconv.lk_origin.weight.shape == (16, 1, 13, 13, 13)


@pytest.mark.parametrize("dims_,size,stem", [(1, 96, 4), (1, 64, 2), (3, 32, 4), (3, 16, 1)])
def test_features_only_shapes_and_strides(dims_, size, stem):
    model = UniRepLKNet(in_chans=1, features_only=True, spatial_dims=dims_, stem_stride=stem, **TINY)
    assert model.feature_info.reduction() == [stem * 2**i for i in range(4)]
    assert model.feature_info.channels() == [8, 16, 24, 32]
    feats = model(torch.randn(2, 1, *([size] * dims_)))
    assert len(feats) == 4
    for f, c, r in zip(feats, model.feature_info.channels(), model.feature_info.reduction()):
        assert f.shape == (2, c, *([size // r] * dims_))


def test_registry_entrypoints_take_spatial_dims():
    m = largekernel.create_model("unireplknet_a", spatial_dims=1, in_chans=6, num_classes=4,
                                 depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                 kernel_sizes=((3,), (13,), (13,), (3,)))
    assert m(torch.randn(2, 6, 100)).shape == (2, 4)
    assert m.largekernel_config["kwargs"]["spatial_dims"] == 1


def test_gradients_flow_in_3d():
    model = UniRepLKNet(in_chans=1, num_classes=3, spatial_dims=3, **TINY)
    x = torch.randn(2, 1, 16, 16, 16)
    model(x).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "head" in n or "stages.1.0" in n)


@pytest.mark.parametrize("dims_,shape", [(1, (2, 3, 8, 8)), (2, (2, 3, 50)), (3, (2, 3, 8, 8)), (2, (2, 3, 4, 8, 8))])
def test_wrong_number_of_spatial_dims_is_a_clear_error(dims_, shape):
    model = UniRepLKNet(in_chans=3, num_classes=2, spatial_dims=dims_, **TINY)
    with pytest.raises(ValueError, match=rf"spatial_dims={dims_}.*got shape"):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match="spatial_dims"):
        model.forward_features(torch.randn(*shape))


@pytest.mark.parametrize("bad", [0, 4, True, "2"])
def test_invalid_spatial_dims(bad):
    with pytest.raises(ValueError, match="spatial_dims must be 1"):
        UniRepLKNet(spatial_dims=bad, **TINY)


def test_mixer_is_2d_only():
    with pytest.raises(ValueError, match="spatial_dims=2"):
        UniRepLKNet(spatial_dims=1, mixer="dwconv", **TINY)


def test_checkpoint_roundtrip_1d(tmp_path):
    model = largekernel.create_model("unireplknet_a", spatial_dims=1, in_chans=1, num_classes=3,
                                     depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                     kernel_sizes=((3,), (13,), (7,), (0,))).eval()
    deploy = largekernel.reparameterize(model, inplace=False)
    path = tmp_path / "m.safetensors"
    largekernel.save_checkpoint(deploy, path)
    same = largekernel.create_model_from(path).eval()
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        assert torch.allclose(same(x), model(x), atol=1e-5)
