"""``largekernel.register_with_timm``: timm.create_model builds largekernel models (real timm)."""

from __future__ import annotations

import pytest
import torch

import largekernel

timm = pytest.importorskip("timm")  # a test dependency; the library itself does not need timm

TINY_URLK = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (5,), (3,)))


@pytest.fixture(scope="module")
def names():
    return largekernel.register_with_timm()


def test_naming_never_shadows_timm(names):
    assert names["lk_convnext_atto"] == "convnext_atto" and names["unireplknet_a"] == "unireplknet_a"
    # timm's own ConvNeXt keeps its name; ours is reachable with the prefix only
    assert "convnext_atto" not in names
    assert timm.models.model_entrypoint("convnext_atto").__module__.startswith("timm.")
    assert set(largekernel.list_models()) <= set(names.values())
    assert largekernel.register_with_timm() == names  # idempotent
    with pytest.raises(ValueError, match="prefix"):
        largekernel.register_with_timm(prefix="")


def test_features_only_with_in_chans_matches_largekernel(names):
    model = timm.create_model("unireplknet_a", features_only=True, out_indices=(0, 2, 4), in_chans=1, **TINY_URLK)
    assert model.feature_info.channels() == [4, 16, 32]
    assert model.feature_info.reduction() == [2, 8, 32]
    ref = largekernel.create_model("unireplknet_a", features_only=True, stem_features=True,
                                   out_indices=(0, 2, 4), in_chans=1, **TINY_URLK)
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), ref.eval()(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name,channels", [
    ("lk_lsnet_t", [16, 32, 64, 128, 256]),
    ("lk_convnext_atto", [3, 40, 80, 160, 320]),
    ("replknet_31b", [128, 128, 256, 512, 1024]),
])
def test_meta_device_default_levels_are_strides_2_to_32(names, name, channels):
    with torch.device("meta"):
        model = timm.create_model(name, features_only=True)
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.feature_info.channels() == channels
    assert all(p.is_meta for p in model.parameters())


def test_pretrained_cfg_and_data_config(names):
    model = timm.create_model("lk_lsnet_t", num_classes=5, dims=(16, 32, 48, 64), depths=(1, 2, 2, 2))
    assert model.pretrained_cfg["classifier"] == "head.l"
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["input_size"] == (3, 224, 224)
    assert timm.models.get_pretrained_cfg("lsnet_t").mean == (0.485, 0.456, 0.406)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_output_stride_16(names):
    model = timm.create_model("lk_lsnet_t", features_only=True, output_stride=16,
                              dims=(16, 32, 48, 64), depths=(1, 2, 2, 2))
    assert model.feature_info.reduction() == [2, 4, 8, 16, 16]
    maps = model(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 4]
    with pytest.raises(ValueError, match="output_stride"):
        timm.create_model("lk_lsnet_t", features_only=True, output_stride=4)
