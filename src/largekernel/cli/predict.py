"""``largekernel predict CHECKPOINT IMAGE...``: class probabilities for image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from largekernel.errors import ImageError

__all__ = ["register", "run", "load_image"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="classify image files",
        description="Class probabilities for image files. Images are converted to the model's "
                    "channels, resized to its input size and normalised with the training data's "
                    "mean/std, all read from the checkpoint.")
    parser.add_argument("checkpoint", help="run directory, training checkpoint or .safetensors")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to show per image")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.add_argument("--output", help="segmentation models: directory for the masks (PNG, or NIfTI "
                                         "for .nii/.nii.gz inputs; default <checkpoint dir>/predictions)")
    parser.add_argument("--allow-large", "--force", dest="allow_large", action="store_true",
                        help="run even if the memory estimate exceeds the available memory")
    parser.set_defaults(func=run)


def load_image(path: str | Path, in_chans: int, image_size: int, mean: Sequence[float],
               std: Sequence[float]):
    """Read an image as a normalised ``in_chans x image_size x image_size`` float tensor.

    Raises:
        FileNotFoundError: Missing file.
        ImageError: Not a readable image, truncated, or a decompression bomb (names the file).
        ValueError: An unsupported channel count.
    """
    import numpy as np
    import torch
    from PIL import Image

    from largekernel.utils.images import open_image

    path = Path(path)
    if in_chans not in (1, 3):
        raise ValueError(f"predict supports models with 1 or 3 input channels, not {in_chans}")
    with open_image(path) as img:
        try:
            img = img.convert("L" if in_chans == 1 else "RGB")
            img = img.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
        except Exception as err:  # a mode Pillow cannot convert
            raise ImageError(f"cannot read image {path}: {type(err).__name__}: {err}", path=path) from None
    x = torch.from_numpy(arr)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


_CHUNK = 32  # images per forward pass: memory stays bounded however many files are given


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel.config_schema import DataInfo, PredictOptions, validate_model
    from largekernel.errors import CheckpointError, ConfigError
    from largekernel.train.loading import load_trained_model
    from largekernel.train.trainer import resolve_device
    from largekernel.utils.memory import check_inference_memory

    validate_model(PredictOptions, {"top_k": args.top_k, "device": args.device})
    from largekernel.tasks.segmentation.commands import is_segmentation_checkpoint, run_predict

    if is_segmentation_checkpoint(args.checkpoint):  # masks instead of class probabilities
        return run_predict(args)
    device = resolve_device(args.device)
    loaded = load_trained_model(args.checkpoint, use_ema=args.use_ema, device=device)
    info: dict[str, Any] = loaded.data_info or {}
    missing = [k for k in ("in_chans", "image_size", "mean", "std") if info.get(k) is None]
    if missing:
        raise CheckpointError(f"{loaded.source} lacks data-set metadata {missing}; cannot preprocess images")
    try:
        validate_model(DataInfo, info)
    except ConfigError as err:
        raise CheckpointError(f"{loaded.source}: invalid data-set metadata: {err}") from None
    in_chans, size = int(info["in_chans"]), info["image_size"]
    if not isinstance(size, int):
        raise CheckpointError(f"{loaded.source}: predict needs a square image_size, got {size!r}")
    chunk = min(_CHUNK, len(args.images))
    check_inference_memory(loaded.model_config, (chunk, in_chans, size, size),
                           f"predicting {len(args.images)} image(s) at {size}x{size} px",
                           extra_inputs=(len(args.images) - chunk) * in_chans * size * size * 4,
                           allow_large=args.allow_large, device=device)
    # every image is read before anything is printed: a bad file fails the command, not its tail
    images = [load_image(p, in_chans, size, info["mean"], info["std"]) for p in args.images]
    names = list(info.get("class_names") or [])
    for start in range(0, len(args.images), _CHUNK):
        paths = args.images[start:start + _CHUNK]
        batch = torch.stack(images[start:start + _CHUNK]).to(device)
        with torch.no_grad():
            probs = torch.softmax(loaded.model(batch).float(), dim=-1).cpu()
        if len(names) != probs.shape[1]:
            names = [str(i) for i in range(probs.shape[1])]
        k = min(args.top_k, probs.shape[1])
        for path, p in zip(paths, probs):
            top = p.topk(k)
            pairs = [(names[int(i)], float(v)) for v, i in zip(top.values, top.indices)]
            if args.json:
                sys.stdout.write(json.dumps({"image": str(path), "top": [{"class": c, "probability": v}
                                                                          for c, v in pairs],
                                             "probabilities": p.tolist()}) + "\n")
            else:
                sys.stdout.write(f"{path}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in pairs) + "\n")
    return 0
