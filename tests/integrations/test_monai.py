"""largekernel backbones as MONAI FlexibleUNet encoders (the real package), 2-D and 3-D."""

from __future__ import annotations

import pytest
import torch

monai = pytest.importorskip("monai")

from monai.networks.blocks import BaseEncoder  # noqa: E402
from monai.networks.nets import FlexibleUNet  # noqa: E402
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE  # noqa: E402

from largekernel.integrations.monai import LargeKernelEncoder, register_with_monai  # noqa: E402


@pytest.fixture(scope="module")
def names():
    return register_with_monai(["unireplknet_a", "lsnet_t", "replknet_31b"])


def test_registered_through_the_base_encoder_protocol(names):
    assert names == ["unireplknet_a", "lsnet_t", "replknet_31b"]
    assert issubclass(LargeKernelEncoder, BaseEncoder)
    entry = FLEXUNET_BACKBONE.register_dict["lsnet_t"]
    assert entry["feature_number"] == 5 and entry["feature_channel"] == (16, 32, 64, 128, 256)
    assert FLEXUNET_BACKBONE.register_dict["unireplknet_a"]["feature_channel"] == (20, 40, 80, 160, 320)
    with pytest.raises(ValueError, match="patterns"):
        register_with_monai(["convnext_*"])


def test_flexible_unet_2d_trains_a_step(names):
    torch.manual_seed(0)
    net = FlexibleUNet(in_channels=1, out_channels=3, backbone="lsnet_t", spatial_dims=2,
                       decoder_channels=(32, 16, 16, 8, 8))
    x = torch.randn(2, 1, 64, 64)
    out = net(x)
    assert out.shape == (2, 3, 64, 64)
    loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    grads = [p.grad for p in net.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_flexible_unet_3d_with_unireplknet(names):
    torch.manual_seed(0)
    net = FlexibleUNet(in_channels=1, out_channels=2, backbone="unireplknet_a", spatial_dims=3,
                       decoder_channels=(32, 16, 8, 8, 4))
    feats = net.encoder(torch.randn(2, 1, 32, 32, 32))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
    assert [f.shape[1] for f in feats] == [20, 40, 80, 160, 320]
    out = net(torch.randn(2, 1, 32, 32, 32))
    assert out.shape == (2, 2, 32, 32, 32)


def test_3d_needs_a_3d_backbone(names):
    with pytest.raises(ValueError, match="spatial_dims=3"):
        FlexibleUNet(in_channels=1, out_channels=2, backbone="lsnet_t", spatial_dims=3)


def test_3d_encoder_levels_at_tiny_width():
    enc = LargeKernelEncoder("unireplknet_a", spatial_dims=3, in_channels=1, depths=(1, 1, 1, 1),
                             dims=(8, 16, 24, 32), kernel_sizes=((3,), (7,), (5,), (3,))).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16, 16), (8, 8, 8, 8), (16, 4, 4, 4), (24, 2, 2, 2),
                                                   (32, 1, 1, 1)]
