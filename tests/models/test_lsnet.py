"""LSNet: the published architecture (counts, keys and shapes from running the official code, see
shared/specs/lsnet.md), exact fusion, SKA's interleaved sharing, timm API."""

import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from largekernel.models.counting import count_params
from largekernel.models.lsnet import LSConv, LSNet, LSNetAttention, RepVGGDW, make_divisible
from largekernel.models.registry import create_model, list_models

D = torch.float64
SMALL = dict(dims=(16, 32, 48, 64), depths=(1, 2, 2, 2))

# parameter counts of the official model/lsnet.py (training form), from the spec
OFFICIAL = {
    "lsnet_t": dict(full=11_409_832, no_head=11_024_064),
    "lsnet_s": dict(full=16_146_304, no_head=15_696_408),
    "lsnet_b": dict(full=23_313_608, no_head=22_799_584),
}


def randomize_bn(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(0.5 * torch.randn(m.num_features, generator=gen))


def test_registered():
    assert {"lsnet_t", "lsnet_s", "lsnet_b"} <= set(list_models("lsnet_*"))


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_parameter_counts(name):
    with torch.device("meta"):
        full = create_model(name)
        bare = create_model(name, num_classes=0)
    assert count_params(full) == OFFICIAL[name]["full"]
    assert count_params(bare) == OFFICIAL[name]["no_head"]


def test_lsnet_t_per_part_counts_buffers_and_fused_count():
    model = create_model("lsnet_t")
    parts = [model.patch_embed, model.blocks1, model.blocks2, model.blocks3, model.blocks4, model.head]
    assert [count_params(p) for p in parts] == [23_696, 0, 177_616, 2_668_544, 8_154_208, 385_768]
    params = dict(model.named_parameters())
    assert sum(v.numel() for k, v in model.state_dict().items() if k not in params) == 69_321
    model.eval().reparameterize()
    assert count_params(model) == 11_370_488  # the official deploy (fused) form


def test_official_state_dict_keys_and_shapes():
    sd = create_model("lsnet_t").state_dict()
    expected = {
        "patch_embed.0.c.weight": (16, 3, 3, 3),
        "patch_embed.2.c.weight": (32, 16, 3, 3),
        "patch_embed.4.c.weight": (64, 32, 3, 3),
        "blocks2.0.c.weight": (64, 1, 3, 3),
        "blocks2.1.c.weight": (128, 64, 1, 1),
        "blocks2.2.mixer.conv.c.weight": (128, 1, 3, 3),
        "blocks2.2.mixer.conv1.c.weight": (128, 1, 1, 1),
        "blocks2.2.se.fc1.weight": (32, 128, 1, 1),
        "blocks2.2.se.fc1.bias": (32,),
        "blocks2.2.se.fc2.weight": (128, 32, 1, 1),
        "blocks2.2.ffn.m.pw1.c.weight": (256, 128, 1, 1),
        "blocks2.2.ffn.m.pw2.c.weight": (128, 256, 1, 1),
        "blocks2.3.mixer.lkp.cv1.c.weight": (64, 128, 1, 1),
        "blocks2.3.mixer.lkp.cv2.c.weight": (64, 1, 7, 7),
        "blocks2.3.mixer.lkp.cv3.c.weight": (64, 64, 1, 1),
        "blocks2.3.mixer.lkp.cv4.weight": (144, 64, 1, 1),
        "blocks2.3.mixer.lkp.cv4.bias": (144,),
        "blocks2.3.mixer.lkp.norm.weight": (144,),
        "blocks2.3.mixer.bn.running_var": (128,),
        "blocks4.3.mixer.m.attention_biases": (4, 16),
        "blocks4.3.mixer.m.attention_bias_idxs": (16, 16),
        "blocks4.3.mixer.m.qkv.c.weight": (512, 384, 1, 1),
        "blocks4.3.mixer.m.qkv.bn.weight": (512,),
        "blocks4.3.mixer.m.proj.1.c.weight": (384, 384, 1, 1),
        "blocks4.3.mixer.m.dw.c.weight": (64, 1, 3, 3),
        "head.bn.weight": (384,),
        "head.l.weight": (1000, 384),
        "head.l.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "blocks1.0.mixer.conv.c.weight" not in sd  # lsnet_t's first stage is empty
    assert sd["blocks4.3.mixer.m.attention_bias_idxs"].dtype == torch.long


def test_init_as_published():
    model = create_model("lsnet_t")
    blk = model.blocks2[2]
    assert torch.all(blk.ffn.m.pw2.bn.weight == 0) and torch.all(blk.ffn.m.pw1.bn.weight == 1)
    assert torch.all(model.blocks4[3].mixer.m.proj[1].bn.weight == 0)
    assert torch.all(model.blocks4[3].mixer.m.attention_biases == 0)
    assert torch.all(model.head.l.bias == 0)


def test_attention_bias_index_is_dy_times_4_plus_dx():
    attn = LSNetAttention(64, resolution=4)
    idx = attn.attention_bias_idxs
    pos = [(y, x) for y in range(4) for x in range(4)]
    ref = torch.tensor([[4 * abs(a[0] - b[0]) + abs(a[1] - b[1]) for b in pos] for a in pos])
    assert torch.equal(idx, ref)


def test_attention_matches_a_plain_reimplementation():
    torch.manual_seed(0)
    attn = LSNetAttention(32, key_dim=4, num_heads=2, attn_ratio=4, resolution=3).to(D).eval()
    randomize_bn(attn, 5)
    with torch.no_grad():
        attn.attention_biases.normal_()
    x = torch.randn(2, 32, 3, 3, dtype=D)
    qkv = attn.qkv(x)
    q, k, v = qkv[:, :8], qkv[:, 8:16], qkv[:, 16:]
    q = attn.dw(q)
    out = torch.zeros(2, 32, 9, dtype=D)
    for h in range(2):
        qh, kh, vh = (t.flatten(2) for t in (q[:, 4 * h : 4 * h + 4], k[:, 4 * h : 4 * h + 4], v[:, 16 * h : 16 * h + 16]))
        logits = torch.einsum("bci,bcj->bij", qh, kh) / 2.0
        for i in range(9):
            for j in range(9):
                dy, dx = abs(i // 3 - j // 3), abs(i % 3 - j % 3)
                logits[:, i, j] += attn.attention_biases[h, 3 * dy + dx]
        out[:, 16 * h : 16 * h + 16] = torch.einsum("bcj,bij->bci", vh, logits.softmax(-1))
    ref = attn.proj(out.view(2, 32, 3, 3))
    torch.testing.assert_close(attn(x), ref, rtol=1e-10, atol=1e-10)


def test_ska_uses_interleaved_channel_sharing():
    """LSConv against a direct float64 loop with kernel group ``c mod (C/8)`` (the official mapping)."""
    torch.manual_seed(0)
    m = LSConv(16, ska_impl="unfold").to(D).eval()
    randomize_bn(m, 1)
    x = torch.randn(1, 16, 5, 6, dtype=D)
    w = m.lkp(x)  # (1, 2, 9, 5, 6)
    xp = F.pad(x, (1, 1, 1, 1))
    ref = torch.zeros_like(x)
    for c in range(16):
        for i in range(3):
            for j in range(3):
                ref[:, c] += xp[:, c, i : i + 5, j : j + 6] * w[:, c % 2, 3 * i + j]
    torch.testing.assert_close(m(x), m.bn(ref) + x, rtol=1e-10, atol=1e-10)
    m.ska_impl = "taps"
    torch.testing.assert_close(m(x), m.bn(ref) + x, rtol=1e-10, atol=1e-10)


def test_se_width_rule():
    assert [make_divisible(c / 4) for c in (64, 96, 128, 192, 320, 448, 512)] == [16, 24, 32, 48, 80, 112, 128]


@pytest.mark.parametrize("name", ["lsnet_t", "lsnet_s"])
def test_forward_backward_64px(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_stage_layout_of_lsnet_t():
    model = create_model("lsnet_t", num_classes=0)
    assert model.feature_info.channels() == [64, 128, 256, 384]
    assert model.feature_info.reduction() == [8, 16, 32, 64]
    kinds = [[b.kind for b in getattr(model, f"blocks{i}") if hasattr(b, "kind")] for i in range(1, 5)]
    assert kinds[0] == [] and kinds[1] == ["repdw", "lsconv"]
    assert kinds[3] == ["repdw", "attention"] * 5


def test_reparameterize_exact_including_head():
    torch.manual_seed(0)
    model = LSNet(num_classes=7, **SMALL).to(D).eval()
    randomize_bn(model, 1)
    x = torch.randn(2, 3, 48, 48, dtype=D)
    before = model(x)
    model.reparameterize()
    assert all(m.fused is not None for m in model.modules() if isinstance(m, RepVGGDW))
    assert isinstance(model.head.bn, nn.Identity)
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-10)


def test_repvggdw_fusion_against_one_conv():
    m = RepVGGDW(6).to(D).eval()
    randomize_bn(m, 3)
    x = torch.randn(2, 6, 5, 7, dtype=D)
    y = m(x)
    m.reparameterize()
    assert isinstance(m.fused, nn.Conv2d) and m.fused.kernel_size == (3, 3) and m.fused.groups == 6
    torch.testing.assert_close(F.conv2d(x, m.fused.weight, m.fused.bias, padding=1, groups=6), y, rtol=1e-10, atol=1e-10)


def test_project_reparameterize_walker():
    import largekernel

    torch.manual_seed(0)
    model = LSNet(num_classes=5, **SMALL).to(D).eval()
    randomize_bn(model, 4)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    before = model(x)
    fused = largekernel.reparameterize(model)
    assert not any(isinstance(m, RepVGGDW) and m.fused is None for m in fused.modules())
    torch.testing.assert_close(fused(x), before, rtol=1e-9, atol=1e-9)


def test_features_only_and_stem_levels():
    torch.manual_seed(0)
    model = create_model("lsnet_t", features_only=True, out_indices=(1, 3))
    assert model.head is None and not any(k.startswith("head") for k in model.state_dict())
    assert model.feature_info.channels() == [128, 384]
    feats = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 128, 4, 4), (2, 384, 1, 1)]
    five = create_model("lsnet_t", features_only=True, stem_features=2, out_indices=(0, 1, 2, 3, 4))
    assert five.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert five.feature_info.channels() == [16, 32, 64, 128, 256]
    maps = five(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 2]


def test_timm_api():
    torch.manual_seed(0)
    model = create_model("lsnet_t", num_classes=10, in_chans=1, **SMALL).eval()
    x = torch.randn(2, 1, 32, 32)
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert isinstance(model.get_classifier(), nn.Linear)
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    with pytest.raises(TypeError, match="unknown keyword"):
        create_model("lsnet_t", num_class=10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dims=(16, 30, 48, 64)), "divisible by 8"),
        (dict(dims=(16, 32, 48, 62)), "num_heads"),
        (dict(dims=(18, 32, 48, 64)), "divisible by 4"),
        (dict(depths=(1, 2, 2)), "equal length"),
        (dict(ska_impl="cuda"), "ska_impl"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(SMALL)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LSNet(**args)


def test_onnx_export_small_model():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = LSNet(num_classes=5, **SMALL).eval()
    randomize_bn(model, 6)
    x = torch.randn(1, 3, 32, 32)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"])
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(torch.from_numpy(out), ref, rtol=1e-4, atol=1e-4)
