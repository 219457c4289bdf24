"""count_params / count_macs: independent checks on small nets and the published model figures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import largekernel
from largekernel.models.counting import count_macs, count_params

# published figures (spec): params after reparameterisation, 1000 classes; MACs at 224x224
PUBLISHED_PARAMS_M = {"a": 4.4, "f": 6.2, "p": 10.7, "n": 18.3, "t": 31, "s": 56, "b": 98, "l": 218, "xl": 386}
PUBLISHED_MACS_G = {"a": 0.64, "f": 0.91, "p": 1.57, "n": 2.77, "t": 4.90, "s": 9.09}


def _round_to(value: float, published: float) -> bool:
    """``value`` matches ``published`` within one unit of its last published digit.

    (The papers round some figures and truncate others, e.g. xl 386.5M is published as 386M.)
    """
    text = repr(published)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(value - published) < 10 ** -decimals


def test_count_params_simple_and_shared():
    lin = nn.Linear(10, 5)
    assert count_params(lin) == 10 * 5 + 5
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(shared) == 55
    frozen = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    frozen[0].requires_grad_(False)
    assert count_params(frozen, trainable_only=True) == 8
    with pytest.raises(TypeError):
        count_params("not a model")


def test_count_macs_against_manual_formula():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # out 8 x 5 x 6 (input 9 x 11)
        nn.Conv2d(8, 8, 5, padding=2, groups=8),  # depthwise
        nn.Flatten(),
        nn.Linear(8 * 5 * 6, 7),
    )
    n = 2
    manual = n * 8 * 5 * 6 * 3 * 9 + n * 8 * 5 * 6 * 1 * 25 + n * 7 * 240
    assert count_macs(net, (n, 3, 9, 11)) == manual
    conv1d = nn.Conv1d(4, 6, 7, dilation=2, padding=6)
    assert count_macs(conv1d, (1, 4, 20)) == 6 * 20 * 4 * 7
    with pytest.raises(ValueError, match="input_size"):
        count_macs(net, (1, 3, 0, 4))


def test_count_macs_restores_training_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net.train()
    count_macs(net, (1, 3, 8, 8))
    assert net.training


@pytest.mark.parametrize("variant", list(PUBLISHED_PARAMS_M))
def test_unireplknet_published_params_and_macs(variant):
    with torch.device("meta"):
        model = largekernel.create_model(f"unireplknet_{variant}", deploy=True)
    params = count_params(model) / 1e6
    assert _round_to(params, PUBLISHED_PARAMS_M[variant]), params
    if variant in PUBLISHED_MACS_G:
        macs = count_macs(model, (1, 3, 224, 224)) / 1e9
        assert _round_to(macs, PUBLISHED_MACS_G[variant]), macs


def test_unireplknet_training_form_params():
    # published train-time sizes: a 4.65M, xl 388.7M
    with torch.device("meta"):
        a = largekernel.create_model("unireplknet_a")
        xl = largekernel.create_model("unireplknet_xl")
    assert _round_to(count_params(a) / 1e6, 4.65)
    assert _round_to(count_params(xl) / 1e6, 388.7)


def test_replknet_31b_published_params_and_macs():
    with torch.device("meta"):
        model = largekernel.create_model("replknet_31b", deploy=True)
    assert _round_to(count_params(model) / 1e6, 79)
    assert _round_to(count_macs(model, (1, 3, 224, 224)) / 1e9, 15.3)


# ---- exact parameter counts, from a closed-form count of the spec's architecture -------------
_SPEC = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "specs" / "unireplknet.md"


def _spec_sizes() -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The ``| name | depths | dims |`` table of the UniRepLKNet spec, parsed."""
    if not _SPEC.is_file():
        pytest.skip(f"shared spec not found at {_SPEC}")
    lines = _SPEC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.replace(" ", "") == "|name|depths|dims|")
    sizes = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, depths, dims = (c.strip() for c in line.strip().strip("|").split("|"))
        sizes[name] = (tuple(map(int, depths.split(","))), tuple(map(int, dims.split(","))))
    return sizes


def _spec_kernels(depths: tuple[int, ...]) -> list[list[int]]:
    """The spec's default per-block kernel sizes for ``depths``."""
    if depths[0] == 2:
        return [[3, 3], [13, 13], [13] * depths[2], [13, 13]]
    third = [13, 3] * 9 if depths[2] == 18 else [13, 3, 3] * 9
    return [[3, 3, 3], [13, 13, 13], third, [13, 13, 13]]


def _unireplknet_params(depths, dims, deploy: bool, num_classes: int = 1000, in_chans: int = 3) -> int:
    """Parameters of UniRepLKNet counted by hand from the spec (training or deploy form)."""
    from largekernel.nn.dilated_reparam import DILATED_BRANCHES

    def conv(cin, cout, k, bias=True):
        return cin * cout * k * k + (cout if bias else 0)

    half = dims[0] // 2
    n = conv(in_chans, half, 3) + 2 * half + conv(half, dims[0], 3) + 2 * dims[0]  # stem
    n += sum(conv(dims[i - 1], dims[i], 3) + 2 * dims[i] for i in range(1, 4))  # downsampling
    for c, kernels in zip(dims, _spec_kernels(depths)):
        for k in kernels:
            se = conv(c, c // 4, 1) + conv(c // 4, c, 1)
            ffn = conv(c, 4 * c, 1) + 4 * c * c  # pwconv1 with bias, pwconv2 without
            if deploy:  # BN folded into the dwconv (bias), GRN beta / BN / layer scale into pwconv2's bias
                mixer = c * k * k + c
                n += mixer + se + ffn + 4 * c + c
            else:
                if k >= 7:
                    ks, _ = DILATED_BRANCHES[k]
                    mixer = c * k * k + 2 * c + sum(c * s * s + 2 * c for s in ks)
                else:
                    mixer = c * k * k
                n += mixer + 2 * c + se + ffn + 8 * c + 2 * c + c  # norm BN, GRN gamma+beta, BN, gamma
    return n + 2 * dims[-1] + dims[-1] * num_classes + num_classes  # head LayerNorm + Linear


@pytest.mark.parametrize("deploy", [True, False], ids=["deploy", "train"])
def test_unireplknet_params_exact(deploy):
    sizes = _spec_sizes()
    assert set(sizes) == {f"{v}" for v in PUBLISHED_PARAMS_M}
    counts = {}
    for variant, (depths, dims) in sizes.items():
        with torch.device("meta"):
            model = largekernel.create_model(f"unireplknet_{variant}", deploy=deploy)
        counts[variant] = count_params(model)
        assert counts[variant] == _unireplknet_params(depths, dims, deploy), variant
    if deploy:  # and the hand count is the published one
        for variant, published in PUBLISHED_PARAMS_M.items():
            assert _round_to(counts[variant] / 1e6, published), (variant, counts[variant])
    else:  # published train-time sizes: a 4.65M, xl 388.7M
        assert _round_to(counts["a"] / 1e6, 4.65) and _round_to(counts["xl"] / 1e6, 388.7)


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny", "inception_next_atto", "inception_next_tiny"])
def test_timm_architectures_params_exact(name):
    # timm's own models are the independent reference (built on meta: no memory, no download)
    import timm

    with torch.device("meta"):
        ours = largekernel.create_model(name)
        ref = timm.create_model(name, pretrained=False)
    assert count_params(ours) == sum(p.numel() for p in ref.parameters())
