"""``largekernel info CHECKPOINT|MODEL``: parameters, MACs, kernel sizes, train/deploy form."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "describe_model"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="describe a checkpoint or a registered model",
        description="Parameters, MACs, convolution kernel sizes and form (train/deploy) of a "
                    "checkpoint (run dir, .pt, .safetensors) or a registered model name.")
    parser.add_argument("target", nargs="?", help="checkpoint path or model name")
    parser.add_argument("--list", action="store_true", help="list registered model names")
    parser.add_argument("--model-kwargs", help="JSON options when TARGET is a model name")
    parser.add_argument("--image-size", type=int, help="input size for MACs (default: checkpoint's or 224)")
    parser.add_argument("--in-chans", type=int, help="input channels for MACs (default: checkpoint's or 3)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def describe_model(model, in_chans: int, image_size: int) -> dict[str, Any]:
    """Counts and kernel sizes of ``model`` (MACs for one ``in_chans x S x S`` image)."""
    from torch import nn

    from largekernel.models.counting import count_macs, count_params

    kernels: Counter = Counter()
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            k = "x".join(str(v) for v in module.kernel_size)
            kind = "depthwise" if module.groups == module.in_channels and module.groups > 1 else "dense"
            kernels[f"{kind} {k}"] += 1
    form = getattr(model, "largekernel_form", None)
    if form is None:
        # a training-form model still has branches/BNs that reparameterisation removes
        from largekernel.reparam import reparameterize

        fused = reparameterize(model, inplace=False)
        form = "train" if count_params(fused) != count_params(model) else "deploy"
    was_training = model.training
    model.eval()
    macs = count_macs(model, (1, in_chans, image_size, image_size))
    model.train(was_training)
    return {"params": count_params(model), "macs": macs, "input": [1, in_chans, image_size, image_size],
            "form": form, "conv_kernels": dict(sorted(kernels.items()))}


def run(args: argparse.Namespace) -> int:
    from largekernel.models.registry import create_model, is_model, list_models

    if args.list:
        sys.stdout.write("\n".join(list_models()) + "\n")
        return 0
    if not args.target:
        raise ValueError("give a checkpoint path or a model name (or --list)")
    info: dict[str, Any] = {}
    if Path(args.target).exists():
        from largekernel.train.loading import load_trained_model

        loaded = load_trained_model(args.target)
        model = loaded.model
        data = loaded.data_info or {}
        info.update(source=str(loaded.source), checkpoint_kind=loaded.kind, model=loaded.model_config,
                    data={k: data.get(k) for k in ("spec", "num_classes", "in_chans", "image_size")} if data else None)
        in_chans = args.in_chans or int(data.get("in_chans", 3))
        size = args.image_size or int(data.get("image_size", 224))
    elif is_model(args.target):
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError("--model-kwargs must be a JSON object")
        model = create_model(args.target, **kwargs)
        info["model"] = {"name": args.target, "kwargs": kwargs}
        in_chans = args.in_chans or int(kwargs.get("in_chans", 3))
        size = args.image_size or 224
    else:
        from largekernel.models.registry import model_entrypoint

        model_entrypoint(args.target)  # unknown name: raises ValueError with close matches
        raise FileNotFoundError(args.target)  # pragma: no cover
    info.update(describe_model(model, in_chans, size))
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
        return 0
    lines = [f"{info['model']['name']}  ({info['form']} form)"]
    if "source" in info:
        lines.append(f"  checkpoint  {info['source']} [{info['checkpoint_kind']}]")
    if info.get("data"):
        lines.append(f"  trained on  {info['data']}")
    lines.append(f"  params      {info['params']:,}")
    lines.append(f"  MACs        {info['macs'] / 1e6:,.2f} M at {'x'.join(map(str, info['input']))}")
    lines.append("  convs       " + ", ".join(f"{k}: {v}" for k, v in info["conv_kernels"].items()))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
