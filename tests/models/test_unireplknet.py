"""UniRepLKNet: parity with the official code (fixture), zoo smoke tests, timm contract."""

from __future__ import annotations

import re

import pytest
import torch
from model_helpers import assert_grad_checkpointing_same_gradients
from model_helpers import randomise as _randomise
from model_helpers import PARITY_RTOL
from model_helpers import rel as _rel

import largekernel
from largekernel.models.unireplknet import UNIREPLKNET_CONFIGS, UniRepLKNet, UniRepLKNetBlock
from largekernel.nn.dilated_reparam import DilatedReparamConv

TINY = dict(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7, 0), (5,), (13,)))


def _load_official():
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "unireplknet_a_official.pt"
    if not path.is_file():
        pytest.skip(f"fixture not found: {path}")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def fixture_a():
    return _load_official()


def _build_from_spec(spec, **kw):
    return largekernel.create_model(spec["name"], num_classes=spec["num_classes"], **kw)


def test_official_training_state_dict_reproduces_outputs(fixture_a):
    model = _build_from_spec(fixture_a["spec"]).eval()
    model.load_state_dict(fixture_a["train_state_dict"])  # strict: official key layout
    with torch.no_grad():
        for x, y in zip(fixture_a["inputs"], fixture_a["outputs"]):
            assert _rel(model(x), y) <= PARITY_RTOL


def test_deploy_form_loads_official_deploy_state_dict(fixture_a):
    model = _build_from_spec(fixture_a["spec"], deploy=True).eval()
    model.load_state_dict(fixture_a["deploy_state_dict"])
    with torch.no_grad():
        for x, y in zip(fixture_a["inputs"], fixture_a["outputs_deploy"]):
            assert _rel(model(x), y) <= PARITY_RTOL


def test_reparameterised_matches_official_deploy(fixture_a):
    model = _build_from_spec(fixture_a["spec"])
    model.load_state_dict(fixture_a["train_state_dict"])
    fused = largekernel.reparameterize(model)
    official = fixture_a["deploy_state_dict"]
    ours = fused.state_dict()
    assert set(ours) == set(official)
    for k, v in official.items():
        assert ours[k].shape == v.shape, k
        assert _rel(ours[k], v) <= 1e-4 or (ours[k] - v).abs().max() <= 1e-6, k
    with torch.no_grad():
        for x, y in zip(fixture_a["inputs"], fixture_a["outputs_deploy"]):
            assert _rel(fused(x), y) <= PARITY_RTOL


def _zoo_forward_backward_and_reparameterise(variant):
    torch.manual_seed(0)
    model = largekernel.create_model(f"unireplknet_{variant}", num_classes=7, drop_path_rate=0.1)
    size = 32
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    model.eval()
    with torch.no_grad():
        y = model(x)
        fused = largekernel.reparameterize(model)
        assert _rel(fused(x), y) <= 1e-4
    assert not any("origin_bn" in k or re.fullmatch(r"stages\.\d+\.\d+\.gamma", k) for k in fused.state_dict())


@pytest.mark.parametrize("variant", ["a", "f", "p", "n"])
def test_zoo_forward_backward_and_reparameterise(variant):
    _zoo_forward_backward_and_reparameterise(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["t", "s"])
def test_zoo_forward_backward_and_reparameterise_large(variant):
    _zoo_forward_backward_and_reparameterise(variant)


@pytest.mark.parametrize("variant", ["p", "n", "t", "s", "b", "l", "xl"])
def test_zoo_builds_and_runs_on_meta(variant):
    with torch.device("meta"):
        model = largekernel.create_model(f"unireplknet_{variant}")
        deploy = largekernel.create_model(f"unireplknet_{variant}", deploy=True)
        fused = largekernel.reparameterize(model, inplace=True)
        if variant in ("b", "l", "xl"):  # meta forwards cost ~1 ms per op; a..s run in test_counting
            assert fused(torch.empty(1, 3, 64, 64)).shape == (1, 1000)
    depths, dims = UNIREPLKNET_CONFIGS[variant]
    assert model.dims == dims and model.depths == depths
    ours, ref = fused.state_dict(), deploy.state_dict()
    assert set(ours) == set(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)
    assert model.state_dict()["stages.2.0.dwconv.lk_origin.weight"].shape == (dims[2], 1, 13, 13)


def test_all_nine_registered():
    names = set(largekernel.list_models("unireplknet_*"))
    assert names == {f"unireplknet_{v}" for v in ("a", "f", "p", "n", "t", "s", "b", "l", "xl")}


def test_default_kernel_sizes_follow_published_layout():
    with torch.device("meta"):
        t = largekernel.create_model("unireplknet_t")
        s = largekernel.create_model("unireplknet_s")
    assert t.kernel_sizes[2] == (13, 3) * 9 and s.kernel_sizes[2] == (13, 3, 3) * 9
    assert isinstance(t.stages[2][0].dwconv, DilatedReparamConv)
    assert isinstance(t.stages[2][1].dwconv, torch.nn.Conv2d)
    assert t.stages[0][0].dwconv.kernel_size == (3, 3)


def test_features_only_shapes_and_strides():
    model = UniRepLKNet(features_only=True, **TINY)
    assert model.feature_info.channels() == [8, 16, 24, 32]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 96)
    feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // r, 96 // r) for c, r in zip([8, 16, 24, 32], [4, 8, 16, 32])]
    assert not any(k.startswith(("head", "norm.")) for k in model.state_dict())
    sub = UniRepLKNet(features_only=True, out_indices=(1, 3), **TINY)
    assert sub.feature_info.channels() == [16, 32]
    assert [f.shape[1] for f in sub(x)] == [16, 32]
    full = UniRepLKNet(num_classes=3, **TINY).eval()
    sub.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("head", "norm."))})
    sub.eval()
    with torch.no_grad():
        inter = full.forward_intermediates(x, [1, 3], intermediates_only=True)
        assert all(torch.allclose(a, b) for a, b in zip(inter, sub(x)))
        assert [f.shape[1] for f in full.forward_intermediates(x, 2, intermediates_only=True)] == [24, 32]
    with pytest.raises(ValueError):
        UniRepLKNet(features_only=True, out_indices=(4,), **TINY)


def test_timm_contract():
    model = UniRepLKNet(num_classes=5, **TINY).eval()
    x = torch.randn(1, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (1, 32, 1, 1)
    assert model.forward_head(feats, pre_logits=True).shape == (1, 32)
    assert model.get_classifier() is model.head
    model.reset_classifier(11)
    assert model(x).shape == (1, 11)
    model.reset_classifier(0)
    assert model(x).shape == (1, 32)
    nwd = model.no_weight_decay()
    assert "stages.0.0.gamma" in nwd and "stages.0.0.act.1.gamma" in nwd and "norm.weight" in nwd
    assert "stages.0.0.pwconv1.1.weight" not in nwd
    assert all(name in dict(model.named_parameters()) for name in nwd)


def test_grad_checkpointing_same_gradients():
    assert_grad_checkpointing_same_gradients(lambda: UniRepLKNet(num_classes=4, **TINY), torch.randn(2, 3, 32, 32))


def test_identity_mixer_block_has_no_bn():
    # the official layout: a kernel-0 block's identity mixer is followed by no BatchNorm, in either form
    block = UniRepLKNetBlock(8, 0)
    _randomise(block)
    block.eval()
    assert isinstance(block.norm, torch.nn.Identity)
    assert not any(k.startswith("norm.") for k in block.state_dict())
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y = block(x)
        block.reparameterize()
        assert torch.allclose(block(x), y, atol=1e-5)
    deployed = UniRepLKNetBlock(8, 0, deploy=True)
    assert set(deployed.state_dict()) == set(block.state_dict())


def test_mixer_option():
    from largekernel.nn import mixers

    assert "dwconv" in mixers.list_mixers(available_only=True)
    model = UniRepLKNet(num_classes=3, mixer="dwconv", **TINY)
    assert not isinstance(model.stages[3][0].dwconv, DilatedReparamConv)
    assert isinstance(model.stages[0][0].dwconv, torch.nn.Conv2d)  # kernel 3 blocks keep the plain conv
    _randomise(model)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 3)
        fused = largekernel.reparameterize(model)
        assert _rel(fused(x), y) <= 1e-5
    deploy = UniRepLKNet(num_classes=3, mixer="dwconv", deploy=True, **TINY)
    deploy.load_state_dict(fused.state_dict())


@pytest.mark.parametrize("stem_stride", [1, 2, 4])
def test_stem_stride_sets_resolution_and_keeps_the_layout(stem_stride):
    model = UniRepLKNet(features_only=True, stem_stride=stem_stride, **TINY)
    reductions = [stem_stride * 2**i for i in range(4)]
    assert model.feature_info.reduction() == reductions
    feats = model(torch.randn(2, 3, 32, 48))
    assert [tuple(f.shape[2:]) for f in feats] == [(-(-32 // r), -(-48 // r)) for r in reductions]  # ceil
    # the same parameters and keys as the published stem: checkpoints move between strides
    reference = UniRepLKNet(features_only=True, **TINY).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    via_registry = largekernel.create_model("unireplknet_a", num_classes=2, stem_stride=stem_stride, **TINY)
    assert via_registry.stem_stride == stem_stride
    with pytest.raises(ValueError, match="stem_stride"):
        UniRepLKNet(stem_stride=3, **TINY)


def test_bad_arguments():
    with pytest.raises(TypeError, match="unknown keyword"):
        largekernel.create_model("unireplknet_a", num_clases=10)
    with pytest.raises(ValueError, match="unknown model"):
        largekernel.create_model("unireplknet_zz")
    with pytest.raises(ValueError, match="kernel_sizes"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (3,), (3,)))
    with pytest.raises(ValueError, match="kernel_size"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (4,), (3,), (3,)))
    with pytest.raises(ValueError, match="default kernel_sizes"):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    with pytest.raises(ValueError, match="drop_path_rate"):
        UniRepLKNet(drop_path_rate=1.5, **TINY)
    with pytest.raises(ValueError, match="pretrained"):
        largekernel.create_model("unireplknet_a", pretrained=True)


def test_drop_path_schedule_and_head_init_scale():
    model = UniRepLKNet(num_classes=4, drop_path_rate=0.2, head_init_scale=0.0, **TINY)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.stages for b in s]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.2) < 1e-9 and rates == sorted(rates)
    assert torch.count_nonzero(model.head.weight) == 0
