"""Small model configurations and helpers shared by the deployment tests."""

from __future__ import annotations

import torch
from torch import nn

import largekernel

# every registered family at a size that exports in about a second
SMALL = {
    "convnext_atto": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "inception_next_atto": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "unireplknet_a": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), kernel_sizes=((13,), (13,), (13,), (7,))),
    "replknet_31b": dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)),
    "lsnet_t": dict(depths=(0, 1, 1, 1), dims=(16, 32, 64, 96)),
    "sgconv_seq_tiny": dict(depth=1, dim=16, seq_len=64),
    "longconv_seq_tiny": dict(depth=1, dim=16, seq_len=64),
}


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial statistics/affine, so fusions are actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    for name, p in model.named_parameters():
        if name.endswith("gamma") or name.endswith("beta"):  # layer scales / GRN start at 0 or 1e-6
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def small_model(name: str, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    model = largekernel.create_model(name, num_classes=num_classes, **SMALL[name])
    with torch.no_grad():
        randomise_bn(model)
    return model.eval()


def example_input(name: str, batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if "seq" in name:
        return torch.randn(batch, 1, SMALL[name]["seq_len"], generator=g)
    return torch.randn(batch, 3, size, size, generator=g)
