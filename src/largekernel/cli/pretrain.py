"""``largekernel pretrain``: masked image pre-training (SparK-style) of a backbone, labels unused.

Examples::

    largekernel pretrain                                   # small UniRepLKNet on the digits images
    largekernel pretrain --model convnext_atto --data lfw-faces --mask-ratio 0.6 --epochs 20
    largekernel pretrain --config my.yaml decoder_width=256 --output runs/mim
    largekernel pretrain --output runs/mim --resume        # continue from the latest checkpoint
    largekernel train --init-from runs/mim/encoder.safetensors ...   # then fine-tune
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "build_config", "run"]

log = logging.getLogger(__name__)

# classifier-only options that do not apply without labels
_NOT_FOR_PRETRAIN = {"task", "label_smoothing", "mixup", "cutmix", "ema", "ema_decay", "init_from", "layer_decay"}

_OWN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--mask-ratio", "mask_ratio", float, "fraction of final-stride patches hidden, in (0, 1) (default 0.6)"),
    ("--decoder-width", "decoder_width", int, "decoder channels at the deepest scale (halved per level)"),
    ("--recon-images", "recon_images", int, "images in the per-epoch reconstruction PNG (0: none)"),
]
_OWN_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--no-norm-pix-loss", "norm_pix_loss", False, "regress raw pixels instead of per-patch normalised ones"),
]


def _flags():
    from largekernel.cli.train import _FLAGS, _SWITCHES

    flags = [f for f in _FLAGS if f[1] not in _NOT_FOR_PRETRAIN] + _OWN_FLAGS
    switches = [s for s in _SWITCHES if s[1] not in _NOT_FOR_PRETRAIN] + _OWN_SWITCHES
    return flags, switches


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="masked image pre-training of a backbone (no labels)",
        description="Pre-train the encoder of a features_only backbone by masked image modelling "
                    "(SparK-style sparse masked encoder, light U-Net decoder). Options come from the "
                    "packaged configs/pretrain_digits.yaml, then --config FILE, then the flags below, "
                    "then key=value overrides. Writes <output>/encoder.safetensors for "
                    "`largekernel train --init-from`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1])
    parser.add_argument("--config", help="YAML config file (keys = config options)")
    parser.add_argument("--model-kwargs", help='model options as JSON, e.g. \'{"dims": [16,32,64,128]}\'')
    flags, switches = _flags()
    for flag, key, typ, help_text in flags:
        parser.add_argument(flag, dest=key, type=typ, default=None, help=help_text)
    for flag, key, value, help_text in switches:
        parser.add_argument(flag, dest=key, action="store_const", const=value, default=None, help=help_text)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """Assemble the :class:`PretrainConfig` from the default file, ``--config``, flags and overrides."""
    from largekernel.cli.config_assembly import ConfigKind, assemble_config
    from largekernel.pretrain.config import apply_pretrain_overrides, load_pretrain_config, pretrain_config_from_dict

    flags, switches = _flags()
    keys = [f[1] for f in flags] + [s[1] for s in switches]
    return assemble_config(args, keys, ConfigKind(load=load_pretrain_config, from_dict=pretrain_config_from_dict,
                                                  apply_overrides=apply_pretrain_overrides))


def run(args: argparse.Namespace) -> int:
    import torch

    from largekernel.pretrain.trainer import pretrain
    from largekernel.train.trainer import TrainingInterrupted

    cfg = build_config(args)
    root = logging.getLogger("largekernel")
    level, threads = root.level, torch.get_num_threads()
    if cfg.quiet:
        root.setLevel(logging.WARNING)
    try:
        summary = pretrain(cfg)
    except TrainingInterrupted as err:
        log.warning("%s", err)
        return 128 + int(err.signum)
    finally:  # process-wide settings: restore them for in-process callers (tests, notebooks)
        root.setLevel(level)
        torch.set_num_threads(threads)
    log.debug("final masked loss %.4f", summary["final"]["loss"])
    return 0
