"""timm's whole model contract, as timm's generic model tests exercise it, over ``list_models()``.

Every registered name is built (at tiny widths, on the ``meta`` device) and checked for the
contract's attributes; the behavioural checks run on one model per family (the first name of each
family in ``list_models()``; all sizes of a family share the same class and code paths) at tiny
widths: the checks are about the API, the numerics are covered by the per-family tests.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import largekernel
from largekernel.models.registry import create_model

TINY = {
    "unireplknet_": dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (5,), (3,))),
    "replknet_": dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), large_kernel_sizes=(7, 7, 5, 3), small_kernel=3),
    "convnext_": dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)),
    "inception_next_": dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64)),
    "lsnet_": dict(dims=(16, 32, 48, 64), depths=(1, 2, 2, 2)),
    "sgconv_seq_": dict(seq_len=32, depth=2, dim=8, kernel_dim=8, dropout=0.0, drop_path_rate=0.0),
    "longconv_seq_": dict(seq_len=32, depth=2, dim=8),
}
NAMES = largekernel.list_models()
FAMILY = {}
for _name in NAMES:
    FAMILY.setdefault(next((p for p in TINY if _name.startswith(p)), _name), _name)
REPS = sorted(FAMILY.values())  # one model per family


def tiny(name: str) -> dict:
    for prefix, kwargs in TINY.items():
        if name.startswith(prefix):
            return dict(kwargs)
    raise AssertionError(f"no tiny configuration for the registered model {name!r}: add one to TINY")


def make_input(name: str, batch: int = 2) -> torch.Tensor:
    if "_seq_" in name:
        return torch.randn(batch, 1, 32)
    return torch.randn(batch, 3, 32, 32)


def test_every_family_is_covered():
    assert len(NAMES) >= 25 and len(REPS) == len(TINY)
    for name in NAMES:
        tiny(name)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_has_the_contract(name):
    with torch.device("meta"):
        model = create_model(name, **tiny(name))
        backbone = create_model(name, features_only=True, **tiny(name))
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg and len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert isinstance(model.num_features, int) and isinstance(model.head_hidden_size, int)
    for method in ("forward_features", "forward_head", "forward_intermediates", "prune_intermediate_layers",
                   "reset_classifier", "set_grad_checkpointing", "no_weight_decay", "get_classifier"):
        assert callable(getattr(model, method)), method
    assert backbone.feature_info.channels() == model.feature_info.channels()
    assert backbone.head is None and backbone.features_only


@pytest.mark.parametrize("name", REPS)
def test_classifier_contract(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **tiny(name)).eval()
    x = make_input(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg
    for key in ("mean", "std", "input_size", "num_classes", "first_conv", "classifier", "crop_pct"):
        assert key in cfg, key
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]
    sd = model.state_dict()
    assert cfg["first_conv"] + ".weight" in sd and cfg["classifier"] + ".weight" in sd
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 7

    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[:2] == (2, model.num_features)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        out = model(x)
        assert out.shape == (2, 7)
        torch.testing.assert_close(model.forward_head(feats), out)

        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")  # no classifier, no pooling: maps come back
        unpooled = model(x)
        assert unpooled.dim() == x.dim() and unpooled.shape[0] == 2
        model.reset_classifier(5, "avg")
        assert model(x).shape == (2, 5) and model.num_classes == 5
        assert model.get_classifier().out_features == 5
        with pytest.raises(ValueError, match="global_pool"):
            model.reset_classifier(5, "mean")

    unpooled_model = create_model(name, num_classes=0, global_pool="", **tiny(name)).eval()
    with torch.no_grad():
        assert unpooled_model(x).dim() == x.dim()


@pytest.mark.parametrize("name", REPS)
def test_intermediates_features_and_pruning(name):
    torch.manual_seed(0)
    model = create_model(name, **tiny(name)).eval()
    x = make_input(name, batch=1)
    info = model.feature_info
    channels, reductions = info.channels(), info.reduction()
    assert [e["num_chs"] for e in info] == channels  # iterable like timm's list of dicts
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(channels)
        for f, c, r in zip(inter, channels, reductions):
            assert f.shape[1] == c and f.shape[-1] == math.ceil(x.shape[-1] / r)
        torch.testing.assert_close(final, model.forward_features(x))
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(only) == 2
        torch.testing.assert_close(only[-1], inter[-1])
        early_final, early = model.forward_intermediates(x, indices=[0], stop_early=True)
        torch.testing.assert_close(early[0], inter[0])
        with pytest.raises(ValueError, match="indices"):
            model.forward_intermediates(x, indices=[len(channels)])
        with pytest.raises(ValueError, match="output_fmt"):
            model.forward_intermediates(x, output_fmt="NHWC")

        pruned = copy.deepcopy(model)
        n_before = sum(p.numel() for p in pruned.parameters())
        assert pruned.prune_intermediate_layers(indices=[0]) == [0]
        assert sum(p.numel() for p in pruned.parameters()) < n_before
        torch.testing.assert_close(pruned.forward_intermediates(x, intermediates_only=True)[0], inter[0])
        assert pruned.forward_features(x).shape == inter[0].shape

        backbone = create_model(name, features_only=True, out_indices=(0, len(channels) - 1), **tiny(name)).eval()
        assert backbone.feature_info.channels() == [channels[0], channels[-1]]
        assert not any(k.startswith("head.") for k in backbone.state_dict())
        backbone.load_state_dict({k: v for k, v in model.state_dict().items() if k in backbone.state_dict()})
        maps = backbone(x)
        torch.testing.assert_close(maps[0], inter[0])
        torch.testing.assert_close(maps[1], inter[-1])
    with pytest.raises(ValueError, match="out_indices"):
        create_model(name, features_only=True, out_indices=(len(channels),), **tiny(name))


@pytest.mark.parametrize("name", REPS)
def test_grad_checkpointing_recomputes_and_keeps_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **tiny(name))
    x = make_input(name)
    calls = [0]

    def count(*_):
        calls[0] += 1

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        model(x).sum().backward()
        plain_calls = calls[0]
        ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        calls[0] = 0
        model.set_grad_checkpointing(True)
        model(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert calls[0] > plain_calls, "set_grad_checkpointing did not recompute anything in backward"
    for n, g in ref.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", REPS)
def test_no_weight_decay_and_meta_device(name):
    model = create_model(name, **tiny(name))
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= set(params)
    assert {n for n, p in params.items() if p.ndim <= 1} <= names
    assert not any(params[n].ndim >= 4 and n.endswith("weight") for n in names)  # conv kernels are decayed
    with torch.device("meta"):
        meta = create_model(name, features_only=True, **tiny(name))
    assert all(p.is_meta for p in meta.parameters())
    assert meta.feature_info.channels() == model.feature_info.channels()


@pytest.mark.parametrize("name", [n for n in REPS if "_seq_" not in n])
def test_stem_level_gives_strides_2_to_32(name):
    kwargs = tiny(name)
    model = create_model(name, features_only=True, stem_features=True, **kwargs).eval()
    reductions = model.feature_info.reduction()
    assert reductions[0] == 2 and reductions[1:] == create_model(name, **kwargs).feature_info.reduction()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = model(x)
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert [m.shape[-1] for m in maps] == [math.ceil(32 / r) for r in reductions]
    assert all(m.shape[1] > 0 for m in maps)


def test_sequence_models_reject_stem_levels():
    with pytest.raises((TypeError, ValueError), match="stem_features"):
        create_model("sgconv_seq_tiny", stem_features=True, **tiny("sgconv_seq_tiny"))
