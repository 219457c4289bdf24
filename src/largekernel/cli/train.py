"""``largekernel train``: train a model (default: a small UniRepLKNet on ``digits``).

Examples::

    largekernel train                                   # the packaged default config
    largekernel train --config my.yaml epochs=10 model_kwargs.dims=[16,32,64,128]
    largekernel train --model convnext_atto --data lfw-faces --epochs 20 --amp bf16
    largekernel train --output runs/a --resume          # continue runs/a from its latest checkpoint
    torchrun --nproc_per_node=2 -m largekernel.cli train --output runs/ddp
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "build_config", "run"]

log = logging.getLogger(__name__)

# flag -> (config key, type, help); every config key is also settable as key=value
_FLAGS: list[tuple[str, str, type, str]] = [
    ("--task", "task", str, "classify (default) or segment (U-Net/UNet++ on the model as backbone)"),
    ("--model", "model", str, "model name (see `largekernel info --list`)"),
    ("--data", "data", str, "data set: digits, lfw-faces, pathfinder[32|64|128][-easy], folder:PATH, ucr:NAME[:pad], "
                            "fsdd[-2d], shapes-voxels, shapes-views, moving-digits-3d, moving-digits-2d"),
    ("--init-from", "init_from", str, "fine-tune: backbone weights from `largekernel pretrain` (encoder.safetensors "
                                      "or its run directory); the head is re-initialised"),
    ("--data-root", "data_root", str, "root directory for data sets that need one"),
    ("--image-size", "image_size", int, "input resolution (default: the data set's)"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--max-steps", "max_steps", int, "stop after this many optimiser steps"),
    ("--batch-size", "batch_size", int, "global batch size (split over DDP processes)"),
    ("--accum-steps", "accum_steps", int, "gradient accumulation steps"),
    ("--optimizer", "optimizer", str, "adamw or sgd"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--min-lr", "min_lr", float, "final learning rate of the cosine schedule"),
    ("--weight-decay", "weight_decay", float, "weight decay (not applied to biases/norms/1-D params)"),
    ("--warmup-epochs", "warmup_epochs", float, "linear warm-up length in epochs"),
    ("--warmup-steps", "warmup_steps", int, "linear warm-up length in steps (overrides epochs)"),
    ("--clip-grad", "clip_grad", float, "clip the gradient norm to this value"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing"),
    ("--mixup", "mixup", float, "mixup alpha (0: off)"),
    ("--cutmix", "cutmix", float, "cutmix alpha (0: off)"),
    ("--drop-path", "drop_path_rate", float, "stochastic depth rate"),
    ("--ema-decay", "ema_decay", float, "EMA decay (with --ema)"),
    ("--amp", "amp", str, "mixed precision: none, bf16 (CPU/CUDA) or fp16 (CUDA)"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N"),
    ("--threads", "threads", int, "torch CPU threads"),
    ("--seed", "seed", int, "random seed"),
    ("--output", "output", str, "output directory (default runs/<model>-<data>-<time>)"),
    ("--name", "name", str, "run name used for the default output directory"),
    ("--checkpoint-every", "checkpoint_every", int, "save a checkpoint every N steps (0: per epoch)"),
    ("--train-subset", "train_subset", int, "use only the first N training samples"),
    ("--eval-subset", "eval_subset", int, "use only the first N evaluation samples"),
    ("--num-workers", "num_workers", int, "data loader workers"),
    ("--bad-images", "bad_images", str, "folder: data sets: 'error' (stop, naming unreadable images) or 'skip'"),
]
_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--ema", "ema", True, "keep an exponential moving average of the weights"),
    ("--no-accelerate", "accelerate", False, "run convolutions on plain PyTorch instead of the engine"),
    ("--compile", "compile", True, "torch.compile the training step (with the engine inside unless "
                                   "--no-accelerate); the first steps compile, checkpoints are unchanged"),
    ("--grad-checkpointing", "grad_checkpointing", True, "trade compute for memory"),
    ("--resume", "resume", True, "continue from the latest checkpoint in --output"),
    ("--quiet", "quiet", True, "no progress bars or per-epoch lines"),
    ("--tensorboard", "tensorboard", True, "also write TensorBoard event files"),
    ("--no-augment", "augment", False, "disable data augmentation"),
    ("--no-plots", "plots", False, "do not write PNG plots"),
    ("--allow-large", "allow_large", True, "run even if the memory estimate exceeds the available memory"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model (default: small UniRepLKNet on digits)",
        description="Train a classifier. Options come from the packaged default config, then "
                    "--config FILE, then the flags below, then key=value overrides (any config key; "
                    "dotted keys reach into model_kwargs, values are YAML).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1])
    parser.add_argument("--config", help="YAML config file (keys = config options)")
    parser.add_argument("--model-kwargs", help='model options as JSON, e.g. \'{"dims": [16,32,64,128]}\'')
    for flag, key, typ, help_text in _FLAGS:
        parser.add_argument(flag, dest=key, type=typ, default=None, help=help_text)
    for flag, key, value, help_text in _SWITCHES:
        parser.add_argument(flag, dest=key, action="store_const", const=value, default=None, help=help_text)
    parser.add_argument("--force", dest="allow_large", action="store_const", const=True, default=None,
                        help="same as --allow-large")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Assemble the :class:`TrainConfig` from defaults, files, flags and overrides."""
    from largekernel.cli.config_assembly import ConfigKind, assemble_config
    from largekernel.train.config import apply_overrides, config_from_dict, load_config

    keys = [key for _, key, _, _ in _FLAGS] + [key for _, key, _, _ in _SWITCHES]
    return assemble_config(args, keys, ConfigKind(load=load_config, from_dict=config_from_dict,
                                                  apply_overrides=apply_overrides))


def run(args: argparse.Namespace) -> int:
    from largekernel.models.registry import is_model
    from largekernel.train.trainer import TrainingInterrupted, train

    cfg = build_config(args)
    if cfg.task == "segment":  # the model is a backbone; the segmentation builder checks its name
        from largekernel.tasks.segmentation.trainer import train_segmentation as train
    elif not is_model(cfg.model):
        from largekernel.models.registry import model_entrypoint

        model_entrypoint(cfg.model)  # raises ValueError with suggestions
    import torch

    root = logging.getLogger("largekernel")
    level, threads = root.level, torch.get_num_threads()
    if cfg.quiet:
        root.setLevel(logging.WARNING)
    from largekernel.data.folder import bad_images_policy

    try:
        with bad_images_policy(cfg.bad_images):
            if cfg.task != "segment":
                from largekernel.train.preflight import check_train_memory

                check_train_memory(cfg)  # before any data set or model is allocated
            summary = train(cfg)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        return 128 + int(err.signum)
    finally:  # process-wide settings: restore them for in-process callers (tests, notebooks)
        root.setLevel(level)
        torch.set_num_threads(threads)
    log.debug("final metrics %s", {k: v for k, v in summary["final"].items() if isinstance(v, float)})
    return 0
