"""RepLKNet: parity with the official code (fixture), zoo, timm contract."""

from __future__ import annotations

import pathlib

import pytest
import torch
from model_helpers import assert_grad_checkpointing_same_gradients
from model_helpers import PARITY_RTOL
from model_helpers import rel as _rel

import largekernel
from largekernel.models.replknet import RepLKNet

TINY = dict(large_kernel_sizes=(13, 11, 9, 7), layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), small_kernel=5)


@pytest.fixture(scope="module")
def fixture_r():
    path = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "replknet_small_official.pt"
    if not path.is_file():
        pytest.skip(f"fixture not found: {path}")
    return torch.load(path, weights_only=True)


def _from_spec(spec, deploy=False):
    return RepLKNet(
        large_kernel_sizes=spec["large_kernel_sizes"],
        layers=spec["layers"],
        channels=spec["channels"],
        small_kernel=spec["small_kernel"],
        dw_ratio=spec["dw_ratio"],
        ffn_ratio=spec["ffn_ratio"],
        in_chans=spec["in_channels"],
        num_classes=spec["num_classes"],
        deploy=deploy,
    )


def test_official_train_and_deploy_parity(fixture_r):
    model = _from_spec(fixture_r["spec"]).eval()
    model.load_state_dict(fixture_r["train_state_dict"])
    deploy = _from_spec(fixture_r["spec"], deploy=True).eval()
    deploy.load_state_dict(fixture_r["deploy_state_dict"])
    with torch.no_grad():
        for x, y, yd in zip(fixture_r["inputs"], fixture_r["outputs"], fixture_r["outputs_deploy"]):
            assert _rel(model(x), y) <= PARITY_RTOL
            assert _rel(deploy(x), yd) <= PARITY_RTOL
        fused = largekernel.reparameterize(model)
        for x, yd in zip(fixture_r["inputs"], fixture_r["outputs_deploy"]):
            assert _rel(fused(x), yd) <= PARITY_RTOL
    ours, ref = fused.state_dict(), fixture_r["deploy_state_dict"]
    assert set(ours) == set(ref)
    for k, v in ref.items():
        assert ours[k].shape == v.shape
        assert torch.allclose(ours[k].float(), v.float(), rtol=1e-4, atol=1e-5), k


def test_tiny_forward_backward_reparameterise():
    torch.manual_seed(0)
    model = RepLKNet(num_classes=5, drop_path_rate=0.1, **TINY)
    x = torch.randn(2, 3, 64, 48)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        y = model(x)
        fused = largekernel.reparameterize(model)
        assert _rel(fused(x), y) <= 1e-5
    assert any("lkb_reparam" in k for k in fused.state_dict())
    assert not any("lkb_origin" in k for k in fused.state_dict())


def test_registered_models_on_meta():
    assert set(largekernel.list_models("replknet_*")) == {"replknet_31b", "replknet_31l", "replknet_xl"}
    with torch.device("meta"):
        b = largekernel.create_model("replknet_31b", deploy=True)
        x = torch.empty(1, 3, 64, 64)
        assert b(x).shape == (1, 1000)
        xl = largekernel.create_model("replknet_xl", num_classes=10)
    sd = b.state_dict()
    assert sd["stages.0.blocks.0.large_kernel.lkb_reparam.weight"].shape == (128, 1, 31, 31)
    assert sd["stages.2.blocks.0.large_kernel.lkb_reparam.weight"].shape == (512, 1, 27, 27)
    # XL: dw_ratio 1.5, no small kernel
    xsd = xl.state_dict()
    assert xsd["stages.0.blocks.0.large_kernel.lkb_origin.conv.weight"].shape == (384, 1, 27, 27)
    assert not any("small_conv" in k for k in xsd)


def test_features_only_and_contract():
    model = RepLKNet(features_only=True, out_indices=(0, 2, 3), **TINY)
    assert model.feature_info.reduction() == [4, 16, 32]
    assert model.feature_info.channels() == [8, 24, 32]
    feats = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 24, 4, 4), (2, 32, 2, 2)]
    assert not any(k.startswith("head") for k in model.state_dict())
    clf = RepLKNet(num_classes=3, **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    assert clf.forward_head(clf.forward_features(x), pre_logits=True).shape == (1, 32)
    clf.reset_classifier(7)
    assert clf(x).shape == (1, 7) and clf.get_classifier().out_features == 7
    assert len(clf.forward_intermediates(x, 2, intermediates_only=True)) == 2
    nwd = clf.no_weight_decay()
    assert "norm.weight" in nwd and "stem.0.conv.weight" not in nwd


def test_grad_checkpointing_same_gradients():
    assert_grad_checkpointing_same_gradients(lambda: RepLKNet(num_classes=3, **TINY), torch.randn(2, 3, 32, 32))


def test_bad_arguments():
    with pytest.raises(TypeError, match="unknown keyword"):
        largekernel.create_model("replknet_31b", kernel=7)
    with pytest.raises(ValueError, match="unknown model"):
        largekernel.create_model("replknet_99")
    with pytest.raises(ValueError, match="equal length"):
        RepLKNet(large_kernel_sizes=(13, 11), layers=(1, 1, 1), channels=(8, 16, 24))
    with pytest.raises(ValueError, match="kernel_size"):
        RepLKNet(large_kernel_sizes=(12, 11, 9, 7), layers=(1, 1, 1, 1), channels=(8, 16, 24, 32))
