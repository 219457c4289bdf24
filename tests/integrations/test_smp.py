"""segmentation_models_pytorch's timm-universal encoders with largekernel backbones (the real package)."""

from __future__ import annotations

import pytest
import torch

import largekernel

smp = pytest.importorskip("segmentation_models_pytorch")

URLK = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (5,), (3,)))
SMALL_DECODERS = {
    "Unet": dict(decoder_channels=(32, 16, 16, 8, 8)),
    "UnetPlusPlus": dict(decoder_channels=(32, 16, 16, 8, 8)),
    "FPN": dict(decoder_pyramid_channels=32, decoder_segmentation_channels=32),
    "DeepLabV3Plus": dict(decoder_channels=32),
    "Linknet": dict(),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    largekernel.register_with_timm()


def _train_step(net: torch.nn.Module, in_chans: int = 3) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, in_chans, 64, 64)
    target = torch.randint(0, 3, (2, 64, 64))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in net.encoder.named_parameters()}
    logits = net(x)
    assert logits.shape == (2, 3, 64, 64)
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in net.encoder.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "the encoder was not trained"


# UNet++ (the architecture smp breaks for stride-4 encoders) and DeepLabV3+ (output_stride=16) run by
# default; the other architectures take the same encoder path and run with ``-m slow``
@pytest.mark.parametrize("arch", [
    pytest.param(a, marks=() if a in ("UnetPlusPlus", "DeepLabV3Plus") else pytest.mark.slow)
    for a in sorted(SMALL_DECODERS)
])
def test_every_architecture_builds_and_trains_a_step(arch):
    net = getattr(smp, arch)("tu-unireplknet_a", encoder_weights=None, classes=3, **URLK, **SMALL_DECODERS[arch])
    # five real levels: smp inserts no 0-channel placeholder
    assert net.encoder.out_channels == [3, 4, 8, 16, 24, 32]
    _train_step(net)


@pytest.mark.slow
@pytest.mark.parametrize("encoder,kwargs,channels", [
    ("tu-lsnet_t", dict(dims=(16, 32, 48, 64), depths=(1, 2, 2, 2)), [1, 4, 8, 16, 32, 48]),
    ("tu-lk_convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), [1, 1, 8, 16, 24, 32]),
    ("tu-replknet_31b", dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32), large_kernel_sizes=(7, 7, 5, 3),
                             small_kernel=3), [1, 8, 8, 16, 24, 32]),
])
def test_unetplusplus_on_other_families(encoder, kwargs, channels):
    net = smp.UnetPlusPlus(encoder, encoder_weights=None, classes=3, in_channels=1,
                           decoder_channels=(32, 16, 16, 8, 8), **kwargs)
    assert net.encoder.out_channels == channels
    _train_step(net, in_chans=1)
