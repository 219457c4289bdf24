"""``largekernel reparameterize CHECKPOINT OUT``: write the fused deploy form (safetensors + JSON)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reparameterize", help="fuse a trained model into its deploy form",
        description="Load a run directory / training checkpoint / .safetensors, fuse every "
                    "reparameterisable branch and BN, and save OUT (.safetensors + .json).")
    parser.add_argument("checkpoint", help="run directory, training checkpoint or .safetensors")
    parser.add_argument("out", help="output .safetensors file (or a directory: OUT/model.safetensors)")
    parser.add_argument("--ema", dest="use_ema", action="store_const", const=True, default=None)
    parser.add_argument("--check", action="store_true",
                        help="verify that the deploy model gives the same outputs on random input")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel.checkpoint import save_checkpoint
    from largekernel.reparam import reparameterize
    from largekernel.train.loading import load_trained_model

    loaded = load_trained_model(args.checkpoint, use_ema=args.use_ema)
    out = Path(args.out)
    if out.is_dir() or (out.suffix == "" and not out.exists()):
        out = out / "model.safetensors"
    if out.suffix != ".safetensors":
        raise ValueError(f"OUT must end in .safetensors (or be a directory), got {args.out!r}")
    deploy = reparameterize(loaded.model, inplace=False)
    if args.check:
        from largekernel.utils.memory import check_inference_memory

        info = loaded.data_info or {}
        size = int(info.get("image_size", 32)) if isinstance(info.get("image_size", 32), int) else 32
        check_inference_memory(loaded.model_config, (2, int(info.get("in_chans", 3)), size, size),
                               f"checking the deploy model at {size} px")
        x = torch.randn(2, int(info.get("in_chans", 3)), int(info.get("image_size", 32)),
                        int(info.get("image_size", 32)), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a, b = loaded.model(x), deploy(x)
        err = float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
        sys.stdout.write(f"max relative output difference train vs deploy: {err:.2e}\n")
    metadata = {"data": loaded.data_info} if loaded.data_info else {}
    save_checkpoint(deploy, out, metadata=metadata)
    n_before = sum(p.numel() for p in loaded.model.parameters())
    n_after = sum(p.numel() for p in deploy.parameters())
    sys.stdout.write(f"wrote {out} ({n_before:,} -> {n_after:,} parameters)\n")
    return 0
