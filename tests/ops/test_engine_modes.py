"""The engine behaves like PyTorch's own convolution in every mode: memory format, autocast, FX,
TorchScript, tracing, export, reparameterisation after ``accelerate`` (issue 11)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import largekernel
from largekernel import ops
from largekernel.nn.conv import Conv2d


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)


# --- memory format -------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("k", [5, 13, 17, 31])
def test_contiguous_input_gives_contiguous_output(k, requires_grad):
    # large kernels run channels-last inside the engine; the caller must still get NCHW back
    x = torch.randn(2, 8, 20, 20, requires_grad=requires_grad)
    w = torch.randn(8, 1, k, k, requires_grad=requires_grad)
    y = ops.conv(x, w, padding=k // 2, groups=8)
    assert y.is_contiguous()
    y.view(2, -1)  # fails on a channels-last result
    if requires_grad:
        gx, gw = torch.autograd.grad(y.sum(), (x, w))
        assert gx.is_contiguous() and gw.is_contiguous()


@pytest.mark.parametrize("nd", [2, 3])
def test_channels_last_input_gives_channels_last_output(nd):
    x = _cl(torch.randn((2, 8) + (9,) * nd, requires_grad=True).detach()).requires_grad_()
    w = torch.randn((8, 1) + (7,) * nd, requires_grad=True)
    y = ops.conv(x, w, padding=3, groups=8)
    ref = (F.conv2d if nd == 2 else F.conv3d)(x.detach(), w.detach(), padding=3, groups=8)
    fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
    assert ref.is_contiguous(memory_format=fmt) and y.is_contiguous(memory_format=fmt)
    gx = torch.autograd.grad(y.sum(), x)[0]
    assert gx.is_contiguous(memory_format=fmt)


def _small_replknet():
    from largekernel.models.replknet import RepLKNet

    torch.manual_seed(0)
    return RepLKNet(
        large_kernel_sizes=(13, 11, 9, 7), layers=(1, 1, 1, 1), channels=(8, 16, 24, 32),
        small_kernel=5, num_classes=5,
    )


def test_accelerated_training_gradients_match_plain_pytorch():
    """Accelerated and plain models agree in float32 training (train-mode BatchNorm included): the
    accelerated model's gradients are as close to a float64 reference as PyTorch's own are."""
    plain = largekernel.to_torch_convs(_small_replknet())
    fast = largekernel.accelerate(copy.deepcopy(plain))
    ref = copy.deepcopy(plain).double()
    assert any(isinstance(m, largekernel.nn.Conv2d) for m in fast.modules())
    x = torch.randn(4, 3, 64, 64)
    for m in (plain, fast, ref):
        m.train()
    outs = [plain(x), fast(x), ref(x.double())]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for out in outs:
        out.square().sum().backward()
    scale = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, pp), (_, pf), (_, pr) in zip(plain.named_parameters(), fast.named_parameters(), ref.named_parameters()):
        err_plain = (pp.grad.double() - pr.grad).abs().max().item()
        err_fast = (pf.grad.double() - pr.grad).abs().max().item()
        # channels-last train-mode BatchNorm (the old behaviour) was 10-35 % off on this model
        assert err_fast <= 4 * err_plain + 1e-6 * scale, (name, err_fast, err_plain)


# --- autocast ------------------------------------------------------------------------------------


def test_autocast_bf16_accelerated_model_matches_plain_autocast():
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=4, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (13,), (13,), (3,)))
    plain = largekernel.to_torch_convs(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        yp = plain(x)
    assert y.dtype == yp.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), yp.float(), rtol=0.05, atol=0.05)
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_autocast_leaves_float64_alone_like_pytorch():
    x = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    w = torch.randn(4, 1, 9, 9, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.conv(x, w, padding=4, groups=4)
        ref = F.conv2d(x, w, padding=4, groups=4)
    assert y.dtype == ref.dtype == torch.float64


# --- FX, TorchScript, tracing, export ------------------------------------------------------------


def _mixed_model() -> nn.Module:
    return nn.Sequential(
        Conv2d(4, 4, 13, padding=6, groups=4),
        nn.BatchNorm2d(4),
        nn.GELU(),
        Conv2d(4, 8, 3, padding=1, padding_mode="reflect"),
        Conv2d(8, 8, (7, 5), padding="same", groups=8, bias=False),
    ).eval()


def test_fx_symbolic_trace_keeps_the_engine():
    m = _mixed_model()
    gm = torch.fx.symbolic_trace(m)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert ops.conv in targets  # the engine call is one leaf node, not PyTorch's conv
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(gm(x), m(x))
    with ops.record_impls() as steps:
        gm(x)
    assert len([s for s in steps if s.stage == "forward"]) == 3


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("unireplknet_a", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_sizes=((3,), (13,), (13,), (3,)))),
        ("replknet_31b", dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32))),
        ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))),
        ("inception_next_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))),
    ],
)
def test_fx_traces_library_models(name, kwargs):
    model = largekernel.create_model(name, num_classes=3, **kwargs).eval()
    gm = torch.fx.symbolic_trace(model)
    assert ops.conv in [n.target for n in gm.graph.nodes if n.op == "call_function"]
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(gm(x), model(x))


def test_torchscript_script_and_save():
    m = _mixed_model()
    scripted = torch.jit.script(m)
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(scripted(x), m(x), rtol=1e-5, atol=1e-5)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x), m(x), rtol=1e-5, atol=1e-5)


def test_jit_trace_and_export():
    m = _mixed_model()
    x = torch.randn(1, 4, 16, 16)
    traced = torch.jit.trace(m, x)
    torch.testing.assert_close(traced(x), m(x), rtol=1e-5, atol=1e-5)
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x), m(x), rtol=1e-5, atol=1e-5)


# --- reparameterise after accelerate, exports ------------------------------------------------------


def test_reparameterize_after_accelerate_keeps_engine_convs():
    plain = largekernel.to_torch_convs(_small_replknet()).eval()
    fast = largekernel.accelerate(copy.deepcopy(plain))
    fused = largekernel.reparameterize(fast)
    fused_convs = [m for n, m in fused.named_modules() if n.endswith("lkb_reparam")]
    assert fused_convs and all(isinstance(m, largekernel.nn.Conv2d) for m in fused_convs)
    # a plain model stays plain after fusion
    plain_fused = largekernel.reparameterize(plain)
    assert not any(isinstance(m, largekernel.nn.Conv2d) for m in plain_fused.modules())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(fused(x), plain_fused(x), rtol=1e-4, atol=1e-5)


def test_top_level_exports():
    assert largekernel.to_torch_convs is largekernel.nn.acceleration.to_torch_convs
    assert "to_torch_convs" in dir(largekernel)


def test_accelerate_leaves_convs_the_engine_never_speeds_up():
    net = nn.Sequential(
        nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 8, 7, padding=3, groups=8), nn.Conv3d(8, 8, 5, padding=2, groups=8),
    )
    largekernel.accelerate(net)
    assert [type(m).__module__ for m in net] == ["torch.nn.modules.conv"] * 3 + ["largekernel.nn.conv"] * 2
    everything = largekernel.accelerate(copy.deepcopy(net), only_helpful=False)
    assert all(type(m).__module__ == "largekernel.nn.conv" for m in everything)


def test_pytorch_bound_calls_are_decided_once(monkeypatch):
    """After the first call, a call the dispatcher hands to PyTorch skips dispatch entirely."""
    import importlib

    conv_module = importlib.import_module("largekernel.ops.conv")

    x = torch.randn(1, 8, 14, 14)
    w = torch.randn(8, 1, 5, 5)
    with torch.no_grad():
        first = ops.conv(x, w, None, 1, 2, 1, 8)

    def boom(*args, **kwargs):
        raise AssertionError("dispatch ran again")

    monkeypatch.setattr(conv_module, "choose_plan", boom)
    monkeypatch.setattr(conv_module, "normalize_conv_args", boom)
    with torch.no_grad(), ops.record_impls() as steps:
        again = ops.conv(x, w, None, 1, 2, 1, 8)
    torch.testing.assert_close(again, first)
    assert [s.impl for s in steps] == ["torch"]
    # a different signature is dispatched afresh
    with pytest.raises(AssertionError, match="dispatch ran again"), torch.no_grad():
        ops.conv(x, w, None, 1, 3, 1, 8)


def test_kernel_zero_blocks_have_no_batchnorm():
    from largekernel.models.unireplknet import UniRepLKNetBlock

    for deploy in (False, True):
        block = UniRepLKNetBlock(8, 0, deploy=deploy)
        assert not any(k.startswith("norm.") for k in block.state_dict()), deploy
    model = largekernel.create_model(
        "unireplknet_a", num_classes=3, depths=(1, 2, 1, 1), dims=(8, 16, 24, 32),
        kernel_sizes=((3,), (13, 0), (5,), (3,)),
    )
    keys = model.state_dict().keys()
    assert not any(k.startswith("stages.1.1.norm.") for k in keys)
    assert any(k.startswith("stages.1.0.norm.") or k.startswith("stages.1.0.dwconv") for k in keys)
    fused = largekernel.reparameterize(model)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fused(x), model.eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nd", [2, 3])
def test_record_shows_the_compiled_paths_really_ran(nd):
    from largekernel.ops import native

    if native.kernels_module() is None:
        pytest.skip(f"compiled kernels unavailable: {native.kernels_module()}")
    x = torch.randn((2, 16) + (12,) * nd, requires_grad=True)
    w = torch.randn((16, 1) + (9,) * nd, requires_grad=True)
    with ops.record_impls() as steps:
        ops.conv(x, w, padding=4, groups=16).sum().backward()
    impls = {(s.stage, s.impl) for s in steps}
    assert ("grad_weight", "kernels") in impls
    with ops.force_impl(forward="kernels"), ops.record_impls() as steps:
        ops.conv(x, w, padding=4, groups=16)
    assert [(s.stage, s.impl) for s in steps] == [("forward", "kernels")]


def test_timm_fx_feature_extraction_on_an_accelerated_timm_model():
    import timm
    from timm.models._features_fx import FeatureGraphNet

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False).eval()
    reference = copy.deepcopy(model)
    largekernel.accelerate(model)
    assert sum(type(m).__module__ == "largekernel.nn.conv" for m in model.modules()) == 12  # the 7x7 dw convs
    x = torch.randn(1, 3, 64, 64)
    feats = FeatureGraphNet(model, out_indices=(1, 2, 3))(x)
    ref = FeatureGraphNet(reference, out_indices=(1, 2, 3))(x)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_torchscript_of_an_accelerated_timm_model_that_scripted_before():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=4).eval()
    model.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)  # a plain conv, as in the original
    largekernel.accelerate(model, only_helpful=False)  # every conv on the engine
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


def test_relaid_out_call_keeps_format_and_is_not_cached_as_a_plain_pytorch_call():
    """A channels-last 3-D grouped stride-2 conv is computed in NCDHW (PyTorch's channels-last weight
    gradient is broken there), comes back channels-last, and stays on that route on every call."""
    fmt = torch.channels_last_3d
    for _ in range(3):  # the second and third calls must not take a cached "plain PyTorch" route
        x = torch.randn(2, 2, 3, 4, 2).contiguous(memory_format=fmt).requires_grad_()
        w = torch.randn(4, 1, 2, 2, 1, requires_grad=True)
        y = ops.conv(x, w, None, (2, 1, 1), (1, 0, 3), (2, 1, 1), 2)
        assert y.is_contiguous(memory_format=fmt) and not y.is_contiguous()
        gw = torch.autograd.grad(y.sum(), w)[0]
        x64, w64 = x.detach().double().contiguous(), w.detach().double().requires_grad_()
        ref = torch.autograd.grad(F.conv3d(x64, w64, None, (2, 1, 1), (1, 0, 3), (2, 1, 1), 2).sum(), w64)[0]
        torch.testing.assert_close(gw.double(), ref, rtol=1e-5, atol=1e-5)
