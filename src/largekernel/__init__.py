"""largekernel: fast, exact large-kernel convolutions and large-kernel ConvNets for PyTorch.

The package is layered, each layer only importing the ones before it:

* :mod:`largekernel.ops` -- functional convolution engine (dispatcher, native/FFT/compiled paths).
* :mod:`largekernel.nn` -- modules: drop-in convs, reparameterisable large-kernel layers, operators.
* :mod:`largekernel.models` -- model zoo and registry (UniRepLKNet, RepLKNet, ConvNeXt, ...).
* :mod:`largekernel.data`, :mod:`largekernel.train`, :mod:`largekernel.bench` -- tasks.
* :mod:`largekernel.cli` -- the ``largekernel`` command line.

Top-level names are resolved lazily so that ``import largekernel`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY_EXPORTS = {
    "accelerate": "largekernel.nn.acceleration",
    "to_torch_convs": "largekernel.nn.acceleration",
    "create_model": "largekernel.models.registry",
    "list_models": "largekernel.models.registry",
    "register_model": "largekernel.models.registry",
    "is_model": "largekernel.models.registry",
    "reparameterize": "largekernel.reparam",
    "export": "largekernel.deploy.export",
    "load_checkpoint": "largekernel.checkpoint",
    "save_checkpoint": "largekernel.checkpoint",
    "create_model_from": "largekernel.checkpoint",
    "CheckpointError": "largekernel.checkpoint",
    "nn": "largekernel",
    "ops": "largekernel",
    "models": "largekernel",
    "count_params": "largekernel.models.counting",
    "count_macs": "largekernel.models.counting",
    "register_with_timm": "largekernel.integrations.timm",
    "from_timm_cache": "largekernel.integrations.timm_cache",
}

__all__ = sorted(_LAZY_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'largekernel' has no attribute {name!r}")
    if module_name == "largekernel":  # a subpackage
        value = importlib.import_module(f"largekernel.{name}")
    else:
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
