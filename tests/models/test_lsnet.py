import pytest
import torch
from torch import nn

from largekernel.models.lsnet import LSNet, RepDW
from largekernel.models.registry import create_model, list_models
from largekernel.nn.ls_conv import ConvBN, LSConv

D = torch.float64
SMALL = dict(dims=(16, 32, 48, 64), depths=(1, 2, 2, 2))


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


@pytest.mark.parametrize("name", ["lsnet_t", "lsnet_s", "lsnet_b"])
def test_each_size_forward_backward_64px(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_stage_layout_of_lsnet_t():
    model = create_model("lsnet_t", num_classes=0)
    assert model.feature_info.channels() == [64, 128, 256, 384]
    assert model.feature_info.reduction() == [8, 16, 32, 64]
    kinds = [[b.kind for b in s if hasattr(b, "kind")] for s in model.stages]
    assert kinds[0] == [] and kinds[1] == ["repdw", "lsconv"]
    assert kinds[3][:2] == ["repdw", "attention"] and len(kinds[3]) == 10


def test_reparameterize_exact():
    torch.manual_seed(0)
    model = LSNet(num_classes=7, **SMALL).to(D).eval()
    randomize_bn(model, 1)
    x = torch.randn(2, 3, 48, 48, dtype=D)
    before = model(x)
    model.reparameterize()
    assert all(m.fused is not None for m in model.modules() if isinstance(m, RepDW))
    assert all(isinstance(m.bn, nn.Identity) for m in model.modules() if isinstance(m, ConvBN))
    torch.testing.assert_close(model(x), before, rtol=1e-9, atol=1e-9)


def test_reparameterize_any_module_order():
    """An external walker may call reparameterize() on children before or after their parents."""
    torch.manual_seed(0)
    model = LSNet(num_classes=5, **SMALL).to(D).eval()
    randomize_bn(model, 2)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    before = model(x)
    for m in list(model.modules())[::-1]:  # children first
        if m is not model and hasattr(m, "reparameterize"):
            m.reparameterize()
    model.reparameterize()  # then the whole model again: idempotent
    torch.testing.assert_close(model(x), before, rtol=1e-9, atol=1e-9)


def test_repdw_reparameterize_exact():
    m = RepDW(6).to(D).eval()
    randomize_bn(m, 3)
    x = torch.randn(2, 6, 5, 7, dtype=D)
    y = m(x)
    ref = m.conv(x) + m.conv1(x) + x
    m.reparameterize()
    assert isinstance(m.fused, nn.Conv2d) and m.fused.kernel_size == (3, 3) and m.fused.groups == 6
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m(x), ref, rtol=1e-10, atol=1e-10)


def test_features_only_and_intermediates():
    torch.manual_seed(0)
    model = create_model("lsnet_t", features_only=True, out_indices=(1, 3), num_classes=0)
    assert model.head is None
    assert model.feature_info.channels() == [128, 384]
    feats = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 128, 4, 4), (2, 384, 1, 1)]
    full = LSNet(num_classes=3, **SMALL).eval()
    x = torch.randn(1, 3, 64, 64)
    inter = full.forward_intermediates(x)
    assert [f.shape[1] for f in inter] == [16, 32, 48, 64]
    assert [64 // f.shape[-1] for f in inter] == full.feature_info.reduction()
    torch.testing.assert_close(inter[-1], full.forward_features(x))
    assert len(full.forward_intermediates(x, 2)) == 2
    with pytest.raises(RuntimeError, match="features_only"):
        model.forward_head(feats[-1])


def test_timm_api():
    torch.manual_seed(0)
    model = create_model("lsnet_t", num_classes=10, in_chans=1, dims=SMALL["dims"], depths=SMALL["depths"]).eval()
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


def test_ska_impls_agree_in_model():
    torch.manual_seed(0)
    model = LSNet(num_classes=3, ska_impl="unfold", **SMALL).to(D).eval()
    x = torch.randn(1, 3, 32, 32, dtype=D)
    a = model(x)
    for m in model.modules():
        if isinstance(m, LSConv):
            m.ska_impl = "taps"
    torch.testing.assert_close(model(x), a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dims=(16, 30, 48, 64)), "ls_groups"),
        (dict(dims=(16, 32, 48, 60)), "num_heads"),
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


def test_project_reparameterize_walker():
    largekernel = pytest.importorskip("largekernel")
    torch.manual_seed(0)
    model = LSNet(num_classes=5, **SMALL).to(D).eval()
    randomize_bn(model, 4)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    before = model(x)
    fused = largekernel.reparameterize(model)
    assert not any(isinstance(m, RepDW) and m.fused is None for m in fused.modules())
    torch.testing.assert_close(fused(x), before, rtol=1e-9, atol=1e-9)


def test_onnx_export_small_model():
    onnx = pytest.importorskip("onnx")
    import io

    torch.manual_seed(0)
    model = LSNet(num_classes=5, **SMALL).eval()
    x = torch.randn(1, 3, 32, 32)
    buf = io.BytesIO()
    try:
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"])
    except (ImportError, ModuleNotFoundError) as exc:
        pytest.skip(f"ONNX export tooling unavailable: {exc}")
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:
        return
    (out,) = ReferenceEvaluator(proto).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), rtol=1e-4, atol=1e-4)
