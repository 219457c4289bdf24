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
    parser.add_argument("--allow-large", "--force", dest="allow_large", action="store_true",
                        help="run even if the memory estimate exceeds the available memory")
    parser.set_defaults(func=run)


def _infer_in_chans(model, kwargs: dict | None = None) -> int | None:
    """Input channels of ``model``: its recorded ``in_chans``, else the first convolution's."""
    from torch import nn

    for source in (kwargs or {}, getattr(model, "largekernel_config", {}).get("kwargs", {})):
        if isinstance(source.get("in_chans"), int):
            return int(source["in_chans"])
    if isinstance(getattr(model, "in_chans", None), int):
        return int(model.in_chans)
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            return int(getattr(module, "in_channels", getattr(module, "in_features", 0))) or None
    return None


def describe_model(model, in_chans: int, image_size: int, *, macs_model=None) -> dict[str, Any]:
    """Counts and kernel sizes of ``model`` (MACs for one ``in_chans x S x S`` image).

    Args:
        model: The model.
        in_chans: Input channels for the MAC count.
        image_size: Input side for the MAC count.
        macs_model: A meta-device twin of ``model`` to count MACs on (no memory for activations).
    """
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
    macs = None
    if macs_model is not None:
        try:  # shapes only, with PyTorch's convolutions (same MACs as the engine's)
            from largekernel.utils.memory import plain_convs

            macs = count_macs(plain_convs(macs_model).eval(), (1, in_chans, image_size, image_size))
        except Exception:  # a layer that cannot run on the meta device: count on the real model
            macs = None
    if macs is None:
        was_training = model.training
        model.eval()
        macs = count_macs(model, (1, in_chans, image_size, image_size))
        model.train(was_training)
    return {"params": count_params(model), "macs": macs, "input": [1, in_chans, image_size, image_size],
            "form": form, "conv_kernels": dict(sorted(kernels.items()))}


def run(args: argparse.Namespace) -> int:
    from largekernel.config_schema import InfoOptions, validate_model
    from largekernel.models.registry import create_model, is_model, list_models
    from largekernel.utils.memory import check_inference_memory, check_memory, meta_model, tensor_bytes

    if args.list:
        sys.stdout.write("\n".join(list_models()) + "\n")
        return 0
    if not args.target:
        raise ValueError("give a checkpoint path or a model name (or --list)")
    kwargs = None
    if args.model_kwargs:
        try:
            kwargs = json.loads(args.model_kwargs)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"--model-kwargs must be a JSON object: {err}") from None
    opts = validate_model(InfoOptions, {"image_size": args.image_size, "in_chans": args.in_chans,
                                        "model_kwargs": kwargs})
    info: dict[str, Any] = {}
    macs_model = None
    if Path(args.target).exists():
        from largekernel.train.loading import load_trained_model

        loaded = load_trained_model(args.target)
        model = loaded.model
        data = loaded.data_info or {}
        info.update(source=str(loaded.source), checkpoint_kind=loaded.kind, model=loaded.model_config,
                    data={k: data.get(k) for k in ("spec", "num_classes", "in_chans", "image_size")} if data else None)
        # no data-set metadata: the model itself says how many channels it takes (not "3")
        in_chans = opts.in_chans or data.get("in_chans") or _infer_in_chans(model) or 3
        size = opts.image_size or (data.get("image_size") if isinstance(data.get("image_size"), int) else None) or 224
    elif is_model(args.target):
        kwargs = dict(opts.model_kwargs or {})
        try:  # the size first, on the meta device: huge dims must not allocate
            macs_model = meta_model(lambda: create_model(args.target, **kwargs))
        except TypeError as err:
            raise ValueError(f"--model-kwargs do not fit {args.target}: {err}") from None
        if macs_model is not None:
            check_memory(tensor_bytes(macs_model, 4), f"building {args.target} with {kwargs}",
                         allow_large=args.allow_large, override="--allow-large")
        model = create_model(args.target, **kwargs)
        info["model"] = {"name": args.target, "kwargs": kwargs}
        in_chans = opts.in_chans or _infer_in_chans(model, kwargs) or 3
        size = opts.image_size or 224
    else:
        from largekernel.models.registry import model_entrypoint

        model_entrypoint(args.target)  # unknown name: raises ValueError with close matches
        raise FileNotFoundError(args.target)  # pragma: no cover
    if macs_model is None:
        check_inference_memory(info.get("model"), (1, in_chans, size, size), f"counting MACs at {size} px",
                               allow_large=args.allow_large)
    info.update(describe_model(model, in_chans, size, macs_model=macs_model))
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
