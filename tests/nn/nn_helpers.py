"""Helpers shared by the tests in tests/nn (imported as ``from nn_helpers import ...``).

pytest's default ("prepend") import mode puts this directory on ``sys.path`` for the test
modules next to it, so the plain module name resolves without a package ``__init__``.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread avoids spin-wait oversubscription on the shared 2-core box.

    Autouse in every test module that imports it.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randomise_bns(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm in ``module`` random running statistics and affine parameters.

    Fresh BNs are the identity in eval mode, which would let a wrong BN fold pass unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
