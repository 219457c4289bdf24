"""InceptionNeXt (MetaNeXt): timm fixture parity, variants, timm model API, features_only, mixers."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from model_helpers import assert_checkpointing_keeps_grads, assert_fixture_parity

from largekernel.models.inception_next import MetaNeXt, MetaNeXtBlock
from largekernel.models.registry import create_model, list_models
from largekernel.nn.inception_dw import InceptionDWConv2d
from largekernel.nn.layers import DropPath
from largekernel.nn.mixers import list_mixers

VARIANTS = ["inception_next_atto", "inception_next_tiny", "inception_next_small", "inception_next_base"]
# parameter counts (1000 classes) on timm's model cards, in millions (given there to 0.1M)
PUBLISHED_PARAMS_M = {
    "inception_next_atto": 4.2, "inception_next_tiny": 28.1, "inception_next_small": 49.4, "inception_next_base": 86.7,
}
TINY = dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 48))


def test_fixture_parity_strict(fixtures_dir):
    ref = torch.load(fixtures_dir / "timm_convnets.pt", weights_only=True)["inception_next_atto"]
    assert_fixture_parity(create_model("inception_next_atto", num_classes=10), ref)


def test_registered_names():
    assert set(VARIANTS) <= set(list_models("inception_next_*"))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PUBLISHED_PARAMS_M[name]) <= 0.05, f"{name}: {n:.3f}M parameters"


def test_variant_mixer_settings():
    with torch.device("meta"):
        atto = create_model("inception_next_atto")
        tiny = create_model("inception_next_tiny")
    a = atto.stages[0].blocks[0].token_mixer
    t = tiny.stages[0].blocks[0].token_mixer
    assert (a.square_kernel_size, a.band_kernel_size, a.split_sizes) == (3, 9, (10, 10, 10, 10))
    assert (t.square_kernel_size, t.band_kernel_size, t.split_sizes) == (3, 11, (60, 12, 12, 12))
    assert [s.blocks[0].mlp.fc1.out_channels // s.blocks[0].mlp.fc1.in_channels for s in tiny.stages] == [4, 4, 4, 3]


def test_atto_forward_backward():
    torch.manual_seed(0)
    model = create_model("inception_next_atto", num_classes=7, drop_path_rate=0.1)
    x = torch.randn(2, 3, 32, 48)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_tiny_forward_32px():
    model = create_model("inception_next_tiny", num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_block_matches_functional_reference():
    torch.manual_seed(1)
    block = MetaNeXtBlock(8, mlp_ratio=3, ls_init_value=0.3, band_kernel_size=5, branch_ratio=0.25).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p))
        block.norm.running_mean.normal_()
        block.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 7, 6, dtype=torch.float64)
    mixed = block.token_mixer(x)  # checked against F.conv2d in tests/nn/test_inception_dw.py
    bn, mlp = block.norm, block.mlp
    y = F.batch_norm(mixed, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=1e-5)
    y = F.conv2d(F.gelu(F.conv2d(y, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    ref = x + y * block.gamma.reshape(1, -1, 1, 1)
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)
    assert block.mlp.fc1.out_channels == 24


def test_head_matches_functional_reference():
    torch.manual_seed(2)
    model = MetaNeXt(num_classes=5, **TINY).double().eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn_like(p))
    feats = torch.randn(2, 48, 3, 4, dtype=torch.float64)
    h = model.head
    z = F.gelu(F.linear(feats.mean((2, 3)), h.fc1.weight, h.fc1.bias))
    z = F.layer_norm(z, (144,), h.norm.weight, h.norm.bias, eps=1e-6)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.forward_head(feats), F.linear(z, h.fc2.weight, h.fc2.bias), rtol=1e-12, atol=1e-12)


def test_timm_api():
    torch.manual_seed(3)
    model = create_model("inception_next_atto", num_classes=4, depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (1, 320, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 960)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.head.fc2
    model.reset_classifier(0)
    assert model(x).shape == (1, 960)
    model.reset_classifier(6)
    assert model(x).shape == (1, 6) and model.num_classes == 6
    nwd = model.no_weight_decay()
    assert "stages.0.blocks.0.gamma" in nwd and "stages.0.blocks.0.token_mixer.dwconv_hw.weight" not in nwd
    assert model.num_features == 320 and model.head_hidden_size == 960


def test_grad_checkpointing_same_result():
    torch.manual_seed(4)
    model = MetaNeXt(num_classes=3, ls_init_value=0.5, **TINY)
    assert_checkpointing_keeps_grads(model, torch.randn(2, 3, 32, 32))


def test_features_only_and_intermediates():
    torch.manual_seed(5)
    full = create_model("inception_next_atto", depths=(1, 1, 1, 1)).eval()
    model = create_model("inception_next_atto", depths=(1, 1, 1, 1), features_only=True, out_indices=(0, 2)).eval()
    assert not any(k.startswith("head") for k in model.state_dict())
    model.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("head")}, strict=True)
    assert model.feature_info.channels() == [40, 160]
    assert model.feature_info.reduction() == [4, 16]
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        maps = model(x)
        inter = full.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 40, 16, 8), (1, 160, 4, 2)]
    assert [tuple(m.shape[1:]) for m in inter] == [(40, 16, 8), (80, 8, 4), (160, 4, 2), (320, 2, 1)]
    torch.testing.assert_close(maps[1], inter[2])
    torch.testing.assert_close(inter[-1], full.forward_features(x))


def test_options():
    model = create_model("inception_next_atto", drop_path_rate=0.2, ls_init_value=0.1, band_kernel_size=7, in_chans=2)
    blocks = [b for b in model.modules() if isinstance(b, MetaNeXtBlock)]
    rates = [b.drop_path.drop_prob for b in blocks if isinstance(b.drop_path, DropPath)]
    assert len(rates) == 11 and rates[-1] == pytest.approx(0.2)
    assert all(torch.all(b.gamma == 0.1) for b in blocks)
    assert all(b.token_mixer.band_kernel_size == 7 for b in blocks)
    assert model.stem[0].in_channels == 2
    torch.manual_seed(6)
    a = create_model("inception_next_atto", num_classes=5, **TINY)
    torch.manual_seed(6)
    b = create_model("inception_next_atto", num_classes=5, head_init_scale=0.5, **TINY)
    torch.testing.assert_close(b.head.fc2.weight, a.head.fc2.weight * 0.5)


def test_whole_model_reparameterize_exact():
    from largekernel.reparam import reparameterize

    torch.manual_seed(7)
    model = MetaNeXt(num_classes=3, ls_init_value=0.5, **TINY).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        fused = reparameterize(model)
        torch.testing.assert_close(fused(x), y, rtol=1e-10, atol=1e-10)
        keys = set(fused.state_dict())
        assert not any(k.endswith("gamma") or ".blocks.0.norm." in k for k in keys)
        # the Inception mixers keep their (faster) split form
        assert "stages.0.blocks.0.token_mixer.dwconv_w.weight" in keys
        fused2 = reparameterize(fused)  # idempotent
        torch.testing.assert_close(fused2(x), y, rtol=1e-10, atol=1e-10)


# a representative subset (the full list runs against ConvNeXt in test_convnext.py)
@pytest.mark.parametrize("mixer", ["dwconv", "dilated_reparam", "hyper"])
def test_mixer_swap(mixer):
    assert mixer in list_mixers(available_only=True)  # our own modules: must import, never skip
    torch.manual_seed(8)
    model = create_model("inception_next_atto", num_classes=3, mixer=mixer, depths=(1, 1, 1, 1), ls_init_value=0.5)
    assert not any(isinstance(m, InceptionDWConv2d) for m in model.modules())
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    out.sum().backward()
    grads = [p.grad for b in model.modules() if isinstance(b, MetaNeXtBlock) for p in b.token_mixer.parameters()]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(not_a_kwarg=1), TypeError),
        (dict(kernel_sizes=7), TypeError),  # a ConvNeXt option, not an InceptionNeXt one
        (dict(depths=(1, 1), dims=(8, 16, 32)), ValueError),
        (dict(mlp_ratios=(4, 4)), ValueError),
        (dict(branch_ratio=0.5), ValueError),
        (dict(band_kernel_size=8), ValueError),
        (dict(num_classes=-2), ValueError),
        (dict(mixer="nope"), ValueError),
        (dict(features_only=True, out_indices=(0, 9)), ValueError),
        (dict(ls_init_value=1e-6, layer_scale_init_value=1e-5), ValueError),
    ],
)
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        create_model("inception_next_atto", **kwargs)
