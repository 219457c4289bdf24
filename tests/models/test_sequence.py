"""Tests for the SGConv / LongConv sequence classifiers (largekernel.models.sequence)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from largekernel.models.registry import create_model, list_models
from largekernel.models.sequence import SequenceClassifier

NAMES = ["sgconv_seq_tiny", "sgconv_seq_small", "longconv_seq_tiny"]
SMALL = {"seq_len": 64, "depth": 2, "dim": 8}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one intra-op thread avoids spin-wait oversubscription on the shared 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_registered():
    assert set(NAMES) <= set(list_models("*_seq_*"))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_timm_interface(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=2, **SMALL).eval()  # small has dropout
    x = torch.randn(4, 2, 64)
    assert model(x).shape == (4, 3)
    feats = model.forward_features(x)
    assert feats.shape == (4, 8, 64)
    assert model.forward_head(feats, pre_logits=True).shape == (4, 8)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.head
    # shorter sequences than seq_len are fine
    assert model(torch.randn(2, 2, 37)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (4, 8)
    model.reset_classifier(5, global_pool="max")
    torch.testing.assert_close(model(x), model.head(feats.amax(-1)))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(5, global_pool="cls")


def test_unknown_kwarg_raises():
    with pytest.raises(TypeError, match="kernel_size"):
        create_model("sgconv_seq_tiny", kernel_size=3)
    with pytest.raises(TypeError, match="kernel_dim"):
        create_model("longconv_seq_tiny", kernel_dim=3)  # LongConv has no sub-kernels


@pytest.mark.parametrize("name", ["sgconv_seq_tiny", "longconv_seq_tiny"])
def test_causal_features(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, **SMALL).eval()
    x = torch.randn(1, 1, 64)
    x2 = x.clone()
    x2[..., 30:] = torch.randn(1, 1, 34)
    f, f2 = model.forward_features(x), model.forward_features(x2)
    torch.testing.assert_close(f[..., :30], f2[..., :30])
    assert not torch.allclose(f[..., 30:], f2[..., 30:])
    bi = create_model(name, num_classes=2, bidirectional=True, **SMALL).eval()
    assert not torch.allclose(bi.forward_features(x)[..., :30], bi.forward_features(x2)[..., :30])


def test_forward_intermediates():
    torch.manual_seed(0)
    model = create_model("sgconv_seq_tiny", num_classes=2, seq_len=32, depth=3, dim=8).eval()
    x = torch.randn(2, 1, 32)
    final, outs = model.forward_intermediates(x)
    assert len(outs) == 3 and all(o.shape == (2, 8, 32) for o in outs)
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(model.norm(outs[-1].transpose(1, 2)).transpose(1, 2), model.forward_features(x))
    _, normed = model.forward_intermediates(x, [-1], norm=True)
    torch.testing.assert_close(normed[0], final)
    last_two = model.forward_intermediates(x, 2, intermediates_only=True)
    torch.testing.assert_close(last_two[0], outs[1])
    assert len(model.forward_intermediates(x, [0, -1], intermediates_only=True)) == 2
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, [5])


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"depth": 0}, "depth"),
        ({"dim": 0}, "dim"),
        ({"num_classes": -1}, "num_classes"),
        ({"global_pool": "token"}, "global_pool"),
        ({"mixer": "attention"}, "mixer"),
        ({"dropout": 1.0}, "dropout"),
        ({"drop_path_rate": -0.1}, "drop_path_rate"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SequenceClassifier(**{"seq_len": 16, "depth": 1, "dim": 4, **kwargs})
    model = SequenceClassifier(in_chans=3, seq_len=16, depth=1, dim=4)
    with pytest.raises(ValueError, match="input"):
        model(torch.randn(2, 1, 16))


def test_dtype_and_reparameterize():
    torch.manual_seed(0)
    model = SequenceClassifier(num_classes=2, seq_len=32, depth=1, dim=4, dtype=torch.float64).eval()
    x = torch.randn(2, 1, 32, dtype=torch.float64)
    y = model(x)
    assert y.dtype == torch.float64
    for module in model.modules():
        if hasattr(module, "reparameterize"):
            module.reparameterize()
    torch.testing.assert_close(model(x), y)


def _offset_task(n: int, length: int, generator: torch.Generator):
    """Noise with a +1 offset on one half; the label says which half. Average pooling makes the
    halves indistinguishable to any pointwise model: only mixing across ~L/2 lags solves it."""
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, length, generator=generator)
    first = (torch.arange(length) < length // 2).float()
    x += torch.where(y[:, None, None] == 1, first, 1 - first)
    return x, y


def _train(name: str, seq_len: int, steps: int = 40) -> tuple[float, float]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    length = 256
    model = create_model(name, num_classes=2, seq_len=seq_len, depth=1, dim=16, global_pool="avg")
    x, y = _offset_task(32, length, g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x).argmax(1) == y).float().mean().item()
        xt, yt = _offset_task(64, length, g)
        test_acc = (model(xt).argmax(1) == yt).float().mean().item()
    return train_acc, test_acc


@pytest.mark.parametrize("name", ["sgconv_seq_tiny", "longconv_seq_tiny"])
def test_learns_long_range_task(name):
    train_acc, test_acc = _train(name, seq_len=256)
    assert train_acc >= 0.95
    assert test_acc >= 0.8
    # control: the same model with a 1-tap kernel (no long-range mixing) stays near chance
    control_train, _ = _train(name, seq_len=1)
    assert control_train <= 0.75
