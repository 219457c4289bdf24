"""ConvNeXt: timm fixture parity, variants, timm model API, features_only, mixer swap, bad args."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from model_helpers import assert_checkpointing_keeps_grads, assert_fixture_parity

from largekernel.models.convnext import ConvNeXt, ConvNeXtBlock
from largekernel.models.registry import create_model, list_models
from largekernel.nn.conv import Conv2d
from largekernel.nn.layers import DropPath
from largekernel.nn.mixers import MIXERS_NEEDING_SIZE, list_mixers

VARIANTS = [
    "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small", "convnext_base",
]
# parameter counts (1000 classes) published on timm's model cards, in millions
PUBLISHED_PARAMS_M = {
    "convnext_atto": 3.70, "convnext_femto": 5.22, "convnext_pico": 9.05, "convnext_nano": 15.59,
    "convnext_tiny": 28.59, "convnext_small": 50.22, "convnext_base": 88.59,
}
TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))


def _fixture(fixtures_dir):
    return torch.load(fixtures_dir / "timm_convnets.pt", weights_only=True)["convnext_atto"]


def test_fixture_parity_strict(fixtures_dir):
    assert_fixture_parity(create_model("convnext_atto", num_classes=10), _fixture(fixtures_dir))


def test_registered_names():
    assert set(VARIANTS) <= set(list_models("convnext_*"))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_parameter_counts(name):
    # meta device: the big variants are built without allocating or initialising memory
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PUBLISHED_PARAMS_M[name]) < 0.01, f"{name}: {n:.3f}M parameters"


def test_atto_forward_backward():
    torch.manual_seed(0)
    model = create_model("convnext_atto", num_classes=7, drop_path_rate=0.1)
    x = torch.randn(2, 3, 32, 48)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# femto: another conv_mlp width; tiny: the channels-last nn.Linear MLP path (pico/nano/small/base
# differ only in widths/depths, checked by the parameter counts above)
@pytest.mark.parametrize("name", ["convnext_femto", "convnext_tiny"])
def test_small_variants_forward_32px(name):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_depthwise_convs_run_on_engine():
    model = create_model("convnext_atto")
    blocks = [m for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    assert len(blocks) == 12
    assert all(type(b.conv_dw) is Conv2d and b.conv_dw.groups == b.conv_dw.in_channels for b in blocks)
    assert all(b.conv_dw.kernel_size == (7, 7) for b in blocks)


def test_linear_mlp_equals_conv_mlp():
    # the channels-last nn.Linear path (tiny..base) against the 1x1-conv path (atto..nano, fixture-checked)
    torch.manual_seed(1)
    lin = ConvNeXt(num_classes=5, conv_mlp=False, ls_init_value=0.5, **TINY).double().eval()
    conv = ConvNeXt(num_classes=5, conv_mlp=True, ls_init_value=0.5, **TINY).double().eval()
    state = {}
    for k, v in lin.state_dict().items():
        if ".mlp.fc" in k and k.endswith("weight"):
            v = v[:, :, None, None]
        state[k] = v
    conv.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    torch.testing.assert_close(lin(x), conv(x), rtol=1e-10, atol=1e-10)


def test_block_matches_functional_reference():
    torch.manual_seed(2)
    block = ConvNeXtBlock(8, kernel_size=5, ls_init_value=0.3).double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    y = F.conv2d(x, block.conv_dw.weight, block.conv_dw.bias, padding=2, groups=8).permute(0, 2, 3, 1)
    y = F.layer_norm(y, (8,), block.norm.weight, block.norm.bias, eps=1e-6)
    y = F.gelu(F.linear(y, block.mlp.fc1.weight, block.mlp.fc1.bias))
    y = F.linear(y, block.mlp.fc2.weight, block.mlp.fc2.bias)
    ref = x + y.permute(0, 3, 1, 2) * block.gamma.reshape(1, -1, 1, 1)
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)


def test_whole_model_reparameterize_exact():
    from largekernel.reparam import reparameterize

    torch.manual_seed(9)
    for conv_mlp in (True, False):
        model = ConvNeXt(num_classes=3, conv_mlp=conv_mlp, ls_init_value=0.5, **TINY).double().eval()
        with torch.no_grad():
            for b in model.modules():
                if isinstance(b, ConvNeXtBlock):
                    b.gamma.normal_()
        x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
        with torch.no_grad():
            y = model(x)
            fused = reparameterize(model)
            torch.testing.assert_close(fused(x), y, rtol=1e-10, atol=1e-10)
        assert not any(k.endswith("gamma") for k in fused.state_dict())


def test_timm_api():
    torch.manual_seed(3)
    model = create_model("convnext_atto", num_classes=4, depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (1, 320, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 320)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.head.fc and model.get_classifier().out_features == 4
    model.reset_classifier(0)
    assert model(x).shape == (1, 320)
    model.reset_classifier(6)
    assert model(x).shape == (1, 6) and model.num_classes == 6
    nwd = model.no_weight_decay()
    assert "stages.0.blocks.0.gamma" in nwd and "head.norm.weight" in nwd
    assert "stages.0.blocks.0.conv_dw.weight" not in nwd
    assert model.num_features == 320


def test_grad_checkpointing_same_result():
    torch.manual_seed(4)
    model = create_model("convnext_atto", num_classes=3, depths=(1, 1, 2, 1), ls_init_value=0.5)
    assert_checkpointing_keeps_grads(model, torch.randn(2, 3, 32, 32))


def test_features_only_and_intermediates():
    torch.manual_seed(5)
    full = create_model("convnext_atto", depths=(1, 1, 1, 1)).eval()
    model = create_model("convnext_atto", depths=(1, 1, 1, 1), features_only=True, out_indices=(1, 3)).eval()
    assert not any(k.startswith("head") for k in model.state_dict())
    model.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("head")}, strict=True)
    assert model.feature_info.channels() == [80, 320]
    assert model.feature_info.reduction() == [8, 32]
    assert model.feature_info.module_name() == ["stages.1", "stages.3"]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = model(x)
        inter = full.forward_intermediates(x, (0, 1, 2, 3), intermediates_only=True)
        last2 = full.forward_intermediates(x, 2, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 80, 8, 12), (1, 320, 2, 3)]
    assert [tuple(m.shape[1:]) for m in inter] == [(40, 16, 24), (80, 8, 12), (160, 4, 6), (320, 2, 3)]
    torch.testing.assert_close(maps[0], inter[1])
    torch.testing.assert_close(maps[1], inter[3])
    torch.testing.assert_close(last2[1], full.forward_features(x))
    assert len(last2) == 2
    with pytest.raises(RuntimeError):
        model.forward_head(maps[-1])
    # order follows out_indices / indices, as feature_info does; negatives wrap
    rev = create_model("convnext_atto", depths=(1, 1, 1, 1), features_only=True, out_indices=(-1, 1)).eval()
    rev.load_state_dict(model.state_dict())
    assert rev.feature_info.channels() == [320, 80]
    with torch.no_grad():
        rev_maps = rev(x)
    assert [m.shape[1] for m in rev_maps] == rev.feature_info.channels()
    torch.testing.assert_close(rev_maps[0], maps[1])
    with pytest.raises(ValueError):
        full.forward_intermediates(x, (4,))


def test_drop_path_and_layer_scale_options():
    model = create_model("convnext_atto", drop_path_rate=0.3, layer_scale_init_value=0.25)
    blocks = [b for b in model.modules() if isinstance(b, ConvNeXtBlock)]
    rates = [b.drop_path.drop_prob for b in blocks if isinstance(b.drop_path, DropPath)]
    assert len(rates) == 11 and rates[-1] == pytest.approx(0.3)  # first block has rate 0 (no DropPath)
    assert all(torch.all(b.gamma == 0.25) for b in model.modules() if isinstance(b, ConvNeXtBlock))
    assert create_model("convnext_atto", ls_init_value=0).stages[0].blocks[0].gamma is None
    with pytest.raises(ValueError, match="aliases"):
        create_model("convnext_atto", ls_init_value=0.1, layer_scale_init_value=0.2)


def test_head_init_scale():
    torch.manual_seed(6)
    a = create_model("convnext_atto", num_classes=5, depths=(1, 1, 1, 1))
    torch.manual_seed(6)
    b = create_model("convnext_atto", num_classes=5, depths=(1, 1, 1, 1), head_init_scale=0.5)
    torch.testing.assert_close(b.head.fc.weight, a.head.fc.weight * 0.5)


def test_in_chans_and_overrides():
    model = create_model(
        "convnext_atto", in_chans=1, num_classes=2, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), kernel_sizes=(3, 5, 7, 9)
    )
    assert model.stem[0].in_channels == 1
    assert [s.blocks[0].conv_dw.kernel_size[0] for s in model.stages] == [3, 5, 7, 9]
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("mixer", list_mixers())
def test_mixer_swap(mixer):
    assert mixer in list_mixers(available_only=True)  # our own modules: must import, never skip
    torch.manual_seed(7)
    kwargs = {"img_size": 32} if mixer in MIXERS_NEEDING_SIZE else {}
    # atto's widths with one block per stage: the mixer is exercised at every stage, cheaply
    model = create_model(
        "convnext_atto", num_classes=3, mixer=mixer, ls_init_value=0.5, depths=(1, 1, 1, 1), **kwargs
    )
    blocks = [b for b in model.modules() if isinstance(b, ConvNeXtBlock)]
    assert all((type(b.conv_dw) is Conv2d) == (mixer == "dwconv") for b in blocks)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    mixer_grads = [p.grad for b in blocks for p in b.conv_dw.parameters()]
    assert mixer_grads and all(g is not None for g in mixer_grads)


def test_mixer_sgconv_needs_img_size():
    with pytest.raises(ValueError, match="img_size"):
        create_model("convnext_atto", mixer="sgconv2d")
    assert "sgconv2d" in list_mixers(available_only=True)
    model = create_model("convnext_atto", mixer="sgconv2d", img_size=(64, 96), depths=(1, 1, 1, 1))
    assert [s.blocks[0].conv_dw.size for s in model.stages] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    explicit = create_model("convnext_atto", mixer="sgconv2d", mixer_kwargs={"size": 5}, depths=(1, 1, 1, 1))
    assert all(s.blocks[0].conv_dw.size == (5, 5) for s in explicit.stages)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        (dict(not_a_kwarg=1), TypeError),
        (dict(depths=(1, 1, 1), dims=(8, 16, 32, 64)), ValueError),
        (dict(dims=(8, 0, 32, 64)), ValueError),
        (dict(num_classes=-1), ValueError),
        (dict(in_chans=0), ValueError),
        (dict(drop_path_rate=1.0), ValueError),
        (dict(kernel_sizes=(7, 7)), ValueError),
        (dict(kernel_sizes=4), ValueError),
        (dict(mixer="nope"), ValueError),
        (dict(mixer_kwargs={"rank": 2}), ValueError),  # mixer_kwargs without mixer
        (dict(mixer="dwconv", mixer_kwargs=[1]), TypeError),
        (dict(mixer="dwconv", mixer_kwargs={"not_an_option": 1}), TypeError),
        (dict(mixer="sgconv2d", img_size=16), ValueError),  # stage 3 would be 0 px
        (dict(ls_init_value=-1.0), ValueError),
        (dict(features_only=True, out_indices=(5,)), ValueError),
    ],
)
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        create_model("convnext_atto", **kwargs)
