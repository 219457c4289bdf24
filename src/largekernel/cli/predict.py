"""``largekernel predict CHECKPOINT IMAGE...``: class probabilities for image files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

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
    parser.set_defaults(func=run)


def load_image(path: str | Path, in_chans: int, image_size: int, mean: Sequence[float],
               std: Sequence[float]):
    """Read an image as a normalised ``in_chans x image_size x image_size`` float tensor.

    Raises:
        FileNotFoundError: Missing file.
        ValueError: Not a readable image, or an unsupported channel count.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if in_chans not in (1, 3):
        raise ValueError(f"predict supports models with 1 or 3 input channels, not {in_chans}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if in_chans == 1 else "RGB")
            img = img.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    x = torch.from_numpy(arr)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel.train.loading import load_trained_model
    from largekernel.train.trainer import resolve_device

    if args.top_k < 1:
        raise ValueError(f"--top-k must be positive, got {args.top_k}")
    device = resolve_device(args.device)
    loaded = load_trained_model(args.checkpoint, use_ema=args.use_ema, device=device)
    info: dict[str, Any] = loaded.data_info or {}
    missing = [k for k in ("in_chans", "image_size", "mean", "std") if k not in info]
    if missing:
        raise ValueError(f"{loaded.source} lacks data-set metadata {missing}; cannot preprocess images")
    batch = torch.stack([load_image(p, int(info["in_chans"]), int(info["image_size"]), info["mean"],
                                    info["std"]) for p in args.images]).to(device)
    with torch.no_grad():
        probs = torch.softmax(loaded.model(batch).float(), dim=-1).cpu()
    names = list(info.get("class_names") or [str(i) for i in range(probs.shape[1])])
    k = min(args.top_k, probs.shape[1])
    for path, p in zip(args.images, probs):
        top = p.topk(k)
        pairs = [(names[int(i)], float(v)) for v, i in zip(top.values, top.indices)]
        if args.json:
            sys.stdout.write(json.dumps({"image": str(path), "top": [{"class": c, "probability": v}
                                                                      for c, v in pairs],
                                         "probabilities": p.tolist()}) + "\n")
        else:
            sys.stdout.write(f"{path}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in pairs) + "\n")
    return 0
