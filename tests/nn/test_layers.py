"""Shared layers against direct float64 formulas."""

from __future__ import annotations

import pytest
import torch

from largekernel.nn.layers import GRN, DropPath, LayerNorm2d, SqueezeExcite


def test_layernorm2d_matches_formula():
    torch.manual_seed(0)
    ln = LayerNorm2d(6).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    expected = (x - u) / torch.sqrt(s + 1e-6) * ln.weight[:, None, None] + ln.bias[:, None, None]
    torch.testing.assert_close(ln(x), expected)


def test_layernorm2d_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 6, \.\.\.\)"):
        LayerNorm2d(6)(torch.randn(1, 5, 3, 3))


def test_grn_matches_formula_and_starts_as_identity():
    torch.manual_seed(0)
    grn = GRN(4).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(grn(x), x)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    g = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    n = g / (g.mean(-1, keepdim=True) + 1e-6)
    expected = grn.gamma * (x * n) + grn.beta + x
    torch.testing.assert_close(grn(x), expected)
    assert GRN(4, use_bias=False).beta is None


def test_drop_path_eval_identity_and_train_expectation():
    dp = DropPath(0.5)
    x = torch.ones(4000, 3)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = (y[:, 0] != 0).float().mean().item()
    assert 0.4 < kept < 0.6  # ~half the samples survive ...
    assert torch.all((y == 0) | (y == 2))  # ... scaled by 1/(1-p)
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_squeeze_excite_matches_formula():
    torch.manual_seed(0)
    se = SqueezeExcite(8, 2).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    s = x.mean((2, 3))
    hidden = torch.relu(s @ se.down.weight[:, :, 0, 0].T + se.down.bias)
    scale = torch.sigmoid(hidden @ se.up.weight[:, :, 0, 0].T + se.up.bias)
    torch.testing.assert_close(se(x), x * scale[:, :, None, None])
    # 1-D and 3-D inputs use the same weights
    x1 = torch.randn(2, 8, 7, dtype=torch.float64)
    assert se(x1).shape == x1.shape
