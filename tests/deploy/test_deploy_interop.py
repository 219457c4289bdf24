"""timm's reparameterize_model protocol in both directions, and torch.compile without graph breaks."""

from __future__ import annotations

import pytest
import torch
from deploy_helpers import example_input, small_model
from torch import nn

import largekernel

timm = pytest.importorskip("timm", reason="timm is needed for the interoperability checks")
from timm.utils.model import reparameterize_model  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name", ["unireplknet_a", "replknet_31b", "lsnet_t"])
def test_timm_utility_fuses_largekernel_models(name):
    model = small_model(name)
    x = example_input(name)
    with torch.no_grad():
        ref = model(x)
        by_timm = reparameterize_model(model)
        ours = largekernel.reparameterize(model)
        assert _rel(by_timm(x), ref) < 1e-5
    # timm's walk reaches every block: the same fused layout and weights as our own function
    assert by_timm.state_dict().keys() == ours.state_dict().keys()
    assert sum(p.numel() for p in by_timm.parameters()) < sum(p.numel() for p in model.parameters())
    for k, v in ours.state_dict().items():
        assert torch.allclose(by_timm.state_dict()[k], v, atol=1e-6), k


def _timm_blocks() -> nn.Module:
    """timm's RepViT and FastViT/MobileOne reparameterisable blocks at tiny width (random init)."""
    from timm.models.fastvit import MobileOneBlock
    from timm.models.repvit import RepViTBlock

    torch.manual_seed(0)
    net = nn.Sequential(
        MobileOneBlock(8, 8, 3, group_size=1, num_conv_branches=2),
        RepViTBlock(8, 2, 3, use_se=False, act_layer=nn.GELU),
        MobileOneBlock(8, 16, 3, stride=2),
    )
    # non-trivial BN statistics so that a missed fusion would change the output
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def test_largekernel_fuses_timm_reparameterisable_blocks():
    net = _timm_blocks()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        ref = net(x)
        ours = largekernel.reparameterize(net)
        theirs = reparameterize_model(net)
        assert _rel(ours(x), ref) < 1e-5
    # the same result as timm's own utility: same modules, same weights
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    for k, v in theirs.state_dict().items():
        assert torch.allclose(ours.state_dict()[k], v, atol=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("name", ["repvit_m0_9", "fastvit_t8"])
def test_largekernel_fuses_whole_timm_models(name):
    model = timm.create_model(name, pretrained=False, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _rel(largekernel.reparameterize(model)(x), model(x)) < 1e-4


# ------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unireplknet_a", pytest.param("convnext_atto", marks=pytest.mark.slow)])
def test_no_graph_breaks_in_either_form(name):
    import torch._dynamo

    model = small_model(name)
    x = example_input(name, batch=2, size=32)
    for form, net in (("train", model.train()), ("deploy", largekernel.reparameterize(model))):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(net)(x)
        assert explanation.graph_break_count == 0, (form, explanation.break_reasons)
        assert explanation.graph_count == 1


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    """A compiled (aot_eager backend: the autograd graph without Inductor's C++ build) train step."""
    import torch._dynamo

    torch._dynamo.reset()
    model = small_model("convnext_atto").train()
    x = example_input("convnext_atto", batch=2, size=32)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out_c = compiled(x)
    out_c.sum().backward()
    grads_c = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out_e = model(x)
    out_e.sum().backward()
    assert _rel(out_c, out_e) < 1e-5
    for gc, p in zip(grads_c, model.parameters()):
        assert torch.allclose(gc, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_atto", "inception_next_atto", "unireplknet_a", "replknet_31b",
                                  "lsnet_t", "sgconv_seq_tiny", "longconv_seq_tiny"])
def test_inductor_compiles_every_family_in_both_forms(name):
    import torch._dynamo

    model = small_model(name)
    x = example_input(name, batch=2, size=32)
    for net in (model, largekernel.reparameterize(model)):
        torch._dynamo.reset()
        with torch.no_grad():
            ref = net(x)
            out = torch.compile(net, fullgraph=True)(x)
        assert _rel(out, ref) < 1e-4
