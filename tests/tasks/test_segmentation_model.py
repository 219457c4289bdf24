"""Segmentation models: any size (odd included) in 2-D/3-D, U-Net/UNet++, deep supervision, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from largekernel.models.features import FeatureInfo
from largekernel.tasks.segmentation import (
    DiceCELoss,
    LKEncoder,
    SegmentationModel,
    UNetDecoder,
    UNetPlusPlusDecoder,
    build_segmentation_model,
)

TINY = dict(dims=[4, 8, 8, 8], depths=[1, 1, 1, 1], kernel_sizes=[5, 3, 3, 3])


def _tiny(spatial_dims: int, decoder: str = "unet", deep_supervision: bool = False, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_segmentation_model(num_classes=3, in_chans=2, spatial_dims=spatial_dims, decoder=decoder,
                                    deep_supervision=deep_supervision, backbone_kwargs=TINY,
                                    stem_channels=4, **kw)


@settings(max_examples=6, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), decoder=st.sampled_from(["unet", "unetpp"]))
def test_2d_any_size_keeps_shape(h, w, decoder):
    model = _tiny(2, decoder).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 2, h, w))
    assert y.shape == (2, 3, h, w)
    assert torch.isfinite(y).all()


@settings(max_examples=3, deadline=None)
@given(size=st.tuples(st.integers(3, 19), st.integers(3, 19), st.integers(3, 19)),
       decoder=st.sampled_from(["unet", "unetpp"]))
def test_3d_odd_sizes_keep_shape(size, decoder):
    model = _tiny(3, decoder).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 2, *size))
    assert y.shape == (1, 3, *size)


def test_padding_does_not_leak_into_the_kept_region():
    # the crop keeps the original voxels: a 1x1 "backbone-free" check through the public pieces
    from largekernel.tasks.segmentation.padding import crop_to, pad_to_multiple

    x = torch.randn(1, 2, 5, 7, 3)
    padded, size = pad_to_multiple(x, (4, 8, 2))
    assert padded.shape[2:] == (8, 8, 4)
    assert torch.equal(crop_to(padded, size), x)
    assert torch.equal(padded[:, :, 5:, :7, :3], x[:, :, 4:5].expand(-1, -1, 3, -1, -1))  # replicated edge


def test_unireplknet_backbone_2d_and_3d():
    torch.manual_seed(0)
    kw = dict(dims=[8, 8, 16, 16], depths=[1, 1, 1, 1], kernel_sizes=[[7], [7], [3], [3]], stem_stride=2)
    m2 = build_segmentation_model("unireplknet_a", num_classes=4, in_chans=1, spatial_dims=2,
                                  backbone_kwargs=kw).eval()
    assert m2(torch.randn(1, 1, 45, 37)).shape == (1, 4, 45, 37)
    m3 = build_segmentation_model("unireplknet_a", num_classes=2, in_chans=1, spatial_dims=3,
                                  backbone_kwargs=kw, decoder="unetpp").eval()
    assert m3(torch.randn(1, 1, 13, 18, 9)).shape == (1, 2, 13, 18, 9)


@pytest.mark.parametrize("decoder,levels", [("unet", 5), ("unetpp", 5)])
def test_deep_supervision_outputs(decoder, levels):
    model = _tiny(2, decoder, deep_supervision=True).train()
    x = torch.randn(2, 2, 21, 30)
    outputs = model(x)
    # 4 backbone stages + the full-resolution stem = 5 levels -> 4 decoder outputs
    assert isinstance(outputs, list) and len(outputs) == levels - 1
    assert all(o.shape == (2, 3, 21, 30) for o in outputs)
    target = torch.randint(0, 3, (2, 21, 30))
    loss = DiceCELoss()(outputs, target)
    loss.backward()
    # every auxiliary head receives gradient
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in model.aux_heads)
    model.eval()
    assert isinstance(model(x), torch.Tensor)


def test_unetpp_nested_node_count_and_deep_supervision_nodes():
    dec = UNetPlusPlusDecoder(2, [4, 8, 16, 32])
    assert len(dec.nodes) == 6  # L(L-1)/2 nested nodes for L = 4 levels
    feats = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([4, 8, 16, 32])]
    outs = dec(feats)
    assert len(outs) == 3 and all(o.shape[2:] == (16, 16) for o in outs)
    unet = UNetDecoder(2, [4, 8, 16, 32])
    assert [o.shape[2:] for o in unet(feats)] == [(16, 16), (8, 8), (4, 4)]


class _Features2d(nn.Module):
    """A minimal third-party-style features_only backbone (2-D convs, feature_info)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.feature_info = FeatureInfo([dict(num_chs=4, reduction=2, module="a"),
                                         dict(num_chs=8, reduction=4, module="b")])

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


def test_any_features_only_backbone():
    model = SegmentationModel(_Features2d(), num_classes=2).eval()
    assert model.spatial_dims == 2
    assert model(torch.randn(1, 1, 11, 9)).shape == (1, 2, 11, 9)


def test_backbone_with_wrong_spatial_dims_is_refused():
    with pytest.raises(ValueError, match=r"backbone is 2-D but the decoder has spatial_dims=3"):
        SegmentationModel(_Features2d(), num_classes=2, spatial_dims=3)
    with pytest.raises(ValueError, match=r"backbone is 3-D but the decoder has spatial_dims=2"):
        SegmentationModel(LKEncoder(3, 1), num_classes=2, spatial_dims=2)


def test_named_2d_only_backbone_for_a_3d_decoder_is_refused():
    with pytest.raises(ValueError, match=r"backbone 'convnext_atto' is 2-D but spatial_dims=3"):
        build_segmentation_model("convnext_atto", num_classes=3, spatial_dims=3)


def test_input_with_wrong_spatial_dims_is_refused():
    model = _tiny(2).eval()
    with pytest.raises(ValueError, match=r"x must be N x C x 2 spatial dims"):
        model(torch.randn(1, 2, 8, 8, 8))


@pytest.mark.parametrize("backbone", ["lk_encoder", "unireplknet_a"])
def test_out_indices_out_of_range_names_the_argument(backbone):
    with pytest.raises(ValueError, match=r"out_indices \[0, 4\] out of range.*4 stages"):
        build_segmentation_model(backbone, num_classes=2, in_chans=1, out_indices=[0, 4],
                                 backbone_kwargs=dict(dims=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                                                      kernel_sizes=[[3], [3], [3], [3]]))


def test_out_indices_subset_is_used():
    model = _tiny(2, out_indices=[0, 1])
    assert model.backbone.feature_info.reduction() == [2, 4]
    assert model.stride == 4
    assert model.eval()(torch.randn(1, 2, 10, 7)).shape == (1, 3, 10, 7)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="decoder must be one of"):
        _tiny(2, decoder="fpn")
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationModel(_Features2d(), num_classes=1)
    with pytest.raises(TypeError, match="features_only"):
        SegmentationModel(nn.Conv2d(1, 1, 1), num_classes=2)
    with pytest.raises(ValueError, match="decoder_channels must be"):
        _tiny(2, decoder_channels=[8, 8])
