"""Instruments for seeing why large kernels work.

* :mod:`largekernel.analysis.erf` -- effective receptive fields (RepLKNet's definition).
* :mod:`largekernel.analysis.kernel_stats` -- per-layer kernel statistics, kernel images, comparisons.
* :mod:`largekernel.analysis.profile` -- per-module MACs, bytes, arithmetic intensity, time, roofline.
* :mod:`largekernel.analysis.peak` -- this machine's measured matmul peak and memory bandwidth.
* :mod:`largekernel.analysis.experiment` -- the kernel-size experiment.

Every function returns plain data (tensors, dataclasses, dicts); plots are optional PNG files.
The sub-modules share their main function's name, so import the functions from them:

Example:
    >>> from largekernel.analysis.erf import erf
    >>> from largekernel.analysis.kernel_stats import kernel_stats
    >>> from largekernel.analysis.profile import profile_model
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ERFResult": "largekernel.analysis.erf",
    "AreaRatio": "largekernel.analysis.erf",
    "plot_erf_comparison": "largekernel.analysis.erf",
    "compare_kernel_stats": "largekernel.analysis.kernel_stats",
    "plot_kernels": "largekernel.analysis.kernel_stats",
    "LayerStats": "largekernel.analysis.kernel_stats",
    "profile_model": "largekernel.analysis.profile",
    "ModelProfile": "largekernel.analysis.profile",
    "LayerProfile": "largekernel.analysis.profile",
    "measure_peak": "largekernel.analysis.peak",
    "MachinePeak": "largekernel.analysis.peak",
    "run_kernel_size_experiment": "largekernel.analysis.experiment",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'largekernel.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    return value


def __dir__() -> list[str]:
    return __all__
