"""The generic builder: configs, features_only, stem levels, output stride and checkpoint filtering."""

from __future__ import annotations

import pytest
import torch

from largekernel.models.builder import filter_state_dict, get_pretrained_cfg, model_cfg
from largekernel.models.registry import create_model

TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))


def test_configs():
    cfg = get_pretrained_cfg("lsnet_t")
    assert cfg["classifier"] == "head.l" and cfg["first_conv"] == "patch_embed.0.c"
    with pytest.raises(TypeError, match="unknown key"):
        model_cfg(colour="blue")
    model = create_model("convnext_atto", pretrained_cfg={"mean": (0.5, 0.5, 0.5)}, **TINY)
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and model.pretrained_cfg["classifier"] == "head.fc"


def test_pretrained_from_a_local_file_through_the_filter(tmp_path):
    torch.manual_seed(0)
    src = create_model("convnext_atto", num_classes=10, **TINY)
    path = tmp_path / "ckpt.pth"
    # a training checkpoint: nested and with DDP's "module." prefix
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    same = create_model("convnext_atto", num_classes=10, pretrained=True, pretrained_cfg=str(path), **TINY)
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    # another number of classes: everything but the classifier is loaded
    other = create_model("convnext_atto", num_classes=3, pretrained=True, pretrained_cfg={"file": str(path)}, **TINY)
    assert torch.equal(other.stem[0].weight, src.stem[0].weight) and other.head.fc.out_features == 3
    # a backbone: head keys are dropped
    backbone = create_model("convnext_atto", features_only=True, pretrained=True, pretrained_cfg=str(path), **TINY)
    assert torch.equal(backbone.stages[3].blocks[0].conv_dw.weight, src.stages[3].blocks[0].conv_dw.weight)


def test_filter_keeps_mismatches_visible():
    model = create_model("convnext_atto", num_classes=10, **TINY)
    sd = dict(model.state_dict())
    sd["stem.0.weight"] = torch.zeros(1)
    filtered = filter_state_dict(sd, model, classifier="head.fc")
    with pytest.raises(RuntimeError, match="stem.0.weight"):
        model.load_state_dict(filtered)


def test_bad_generic_options(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "TORCH_HOME"):  # convnext without a file: timm's (here empty) caches
        monkeypatch.setenv(var, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_model("convnext_atto", pretrained=True, **TINY)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("convnext_atto", pretrained=True, pretrained_cfg="nope.pth", **TINY)
    with pytest.raises(ValueError, match="features_only"):
        create_model("convnext_atto", out_indices=(0,), **TINY)
    with pytest.raises(ValueError, match="out_indices"):
        create_model("convnext_atto", features_only=True, out_indices=(0, 4), **TINY)
    with pytest.raises(ValueError, match="global_pool"):
        create_model("convnext_atto", global_pool="median", **TINY)
    with pytest.raises(ValueError, match="stem_features"):
        create_model("convnext_atto", stem_features=2, **TINY)


def test_output_stride_keeps_weights_and_caps_reductions():
    torch.manual_seed(0)
    full = create_model("convnext_atto", features_only=True, **TINY).eval()
    capped = create_model("convnext_atto", features_only=True, **TINY).eval()
    capped.load_state_dict(full.state_dict())
    capped.set_output_stride(8)
    assert capped.feature_info.reduction() == [4, 8, 8, 8]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = full(x), capped(x)
    assert [m.shape[-1] for m in b] == [8, 4, 4, 4]
    torch.testing.assert_close(a[1], b[1])  # unchanged up to the capped stride
    with pytest.raises(ValueError, match="output_stride"):
        capped.set_output_stride(4)
