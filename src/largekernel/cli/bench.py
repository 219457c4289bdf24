"""``largekernel bench {conv,ops,train,accelerate,deploy}``: benchmarks against PyTorch, as JSON and plots.

Each benchmark lives in ``largekernel.bench.<name>`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; this module only wires them into the command line.
"""

from __future__ import annotations

import argparse
import importlib

_BENCHMARKS = {
    "conv": "convolution engine vs PyTorch (1-D/2-D/3-D depthwise, forward and backward)",
    "ops": "every large-receptive-field operator next to a 7x7 depthwise conv",
    "train": "training throughput with and without the engine",
    "accelerate": "whole models with and without largekernel.accelerate (never slower?)",
    "deploy": "inference runtimes (eager, engine, torch.compile, onnxruntime, OpenVINO) for deploy-form models",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (JSON + plot)")
    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in _BENCHMARKS.items():
        sub = kinds.add_parser(name, help=help_text)
        module = importlib.import_module(f"largekernel.bench.{name}")
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
