"""``largekernel evaluate`` / ``predict`` for segmentation checkpoints (dispatched by those commands).

A checkpoint is a segmentation one when its model config is named ``"segmentation"``
(:data:`~largekernel.tasks.segmentation.model.SEGMENTATION_MODEL_NAME`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from largekernel.tasks.segmentation.model import SEGMENTATION_MODEL_NAME, build_segmentation_model

__all__ = ["is_segmentation_checkpoint", "load_segmentation_model", "run_evaluate", "run_predict"]

log = logging.getLogger(__name__)


def _model_name(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        from largekernel.train.loading import read_deploy_metadata

        return read_deploy_metadata(path).get("name")
    from largekernel.train import checkpointing as ckpt

    return (ckpt.load_training_checkpoint(path).get("model_config") or {}).get("name")


def is_segmentation_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` (run directory or checkpoint) holds a segmentation model.

    Returns ``False`` for anything that is not recognisably one (the classification code then
    reports problems with the file in its own words).
    """
    from largekernel.train.loading import resolve_checkpoint

    try:
        return _model_name(resolve_checkpoint(path)) == SEGMENTATION_MODEL_NAME
    except Exception:  # a missing or broken file: let the caller's loader explain
        return False


def load_segmentation_model(path: str | Path, *, use_ema: bool | None = None, device: str | torch.device = "cpu"):
    """Rebuild a segmentation model (eval mode) from a run directory, training or deploy checkpoint.

    Returns:
        A :class:`largekernel.train.loading.LoadedModel`.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        ValueError: Not a segmentation checkpoint, or weights that do not fit.
    """
    from largekernel.train import checkpointing as ckpt
    from largekernel.train.loading import LoadedModel, read_deploy_metadata, resolve_checkpoint

    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        doc = read_deploy_metadata(path)
        config = {"name": doc.get("name"), "kwargs": doc.get("kwargs") or {}}
        weights = load_file(str(path))
        data_info = (doc.get("metadata") or {}).get("data")
        deploy = doc.get("form") == "deploy"
        kind = "deploy" if deploy else "train"
    else:
        state = ckpt.load_training_checkpoint(path)
        config = state.get("model_config") or {}
        weights = state["model"]
        if use_ema is None:
            use_ema = False
            metrics_file = path.parent / "metrics.json"
            if state.get("ema") is not None and metrics_file.is_file():
                try:
                    use_ema = json.loads(metrics_file.read_text()).get("weights") == "ema"
                except (OSError, json.JSONDecodeError):
                    pass
        if use_ema:
            if state.get("ema") is None:
                raise ValueError(f"{path} has no EMA weights (the run was trained without ema)")
            weights = state["ema"]["model"]
        data_info, deploy, kind = state.get("data_info"), False, "train"
    if config.get("name") != SEGMENTATION_MODEL_NAME:
        raise ValueError(f"{path} holds a {config.get('name')!r} model, not a segmentation model")
    model = build_segmentation_model(**config["kwargs"])
    if deploy:
        from largekernel.reparam import reparameterize

        model = reparameterize(model, inplace=True)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"weights in {path} do not fit the recorded segmentation model: "
                         f"{str(err).splitlines()[0]}") from None
    return LoadedModel(model.to(device).eval(), data_info, path, kind, config)


def _options(loaded) -> dict[str, Any]:
    """The run's ``segmentation`` options (window/overlap), from the deploy metadata or config."""
    from largekernel.train.loading import read_deploy_metadata

    if loaded.source.suffix == ".safetensors":
        return dict((read_deploy_metadata(loaded.source).get("metadata") or {}).get("segmentation") or {})
    from largekernel.train import checkpointing as ckpt

    return dict((ckpt.load_training_checkpoint(loaded.source).get("config") or {}).get("segmentation") or {})


def _window(info: dict[str, Any], options: dict[str, Any]) -> int | None:
    if options.get("window"):
        return int(options["window"])
    return int(info["image_size"]) if int(info.get("spatial_dims", 2)) == 3 else None


def run_evaluate(args: argparse.Namespace) -> int:
    """``largekernel evaluate`` for a segmentation checkpoint: eval.json + a per-class table."""
    from torch.utils.data import DataLoader, Subset

    from largekernel.data.segmentation import build_segmentation_dataset
    from largekernel.tasks.segmentation.evaluation import evaluate_segmentation
    from largekernel.tasks.segmentation.losses import DiceCELoss
    from largekernel.tasks.segmentation.trainer import format_dice_table
    from largekernel.train.trainer import resolve_device

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    loaded = load_segmentation_model(args.checkpoint, use_ema=args.use_ema, device=device)
    info = loaded.data_info or {}
    spec = args.data or info.get("spec") or info.get("name")
    if not spec:
        raise ValueError(f"{loaded.source} records no data set; pass --data")
    # the recorded size regenerates the same data (shapes); MNI152 slices keep their native size
    image_size = args.image_size or (info.get("image_size") if not args.data else None)
    dataset = build_segmentation_dataset(spec, args.split, image_size=image_size, augment=False)
    num_classes = int(info.get("num_classes") or dataset.info.num_classes)
    if dataset.info.num_classes != num_classes:
        raise ValueError(f"--data {spec!r} has {dataset.info.num_classes} classes but the model was "
                         f"trained on {num_classes}")
    if args.limit:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    sizes = {tuple(dataset[i][1].shape) for i in range(min(len(dataset), 2))}
    loader = DataLoader(dataset, batch_size=args.batch_size if len(sizes) == 1 else 1, shuffle=False)
    options = _options(loaded)
    metrics = evaluate_segmentation(loaded.model, loader, num_classes, device, loss_fn=DiceCELoss(),
                                    amp=args.amp, window=_window(info, options),
                                    overlap=float(options.get("overlap", 0.25)))
    class_names = list(info.get("class_names") or dataset.info.class_names) if hasattr(dataset, "info") else list(
        info.get("class_names") or [])
    result = {"checkpoint": str(loaded.source), "kind": loaded.kind, "task": "segment",
              "model": loaded.model_config, "data": spec, "split": args.split, "class_names": class_names,
              **metrics}
    out = Path(args.output) if args.output else loaded.source.parent / f"eval-{args.split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        mean = metrics["mean_dice"]
        sys.stdout.write("\n".join([
            f"{loaded.source} on {spec} [{args.split}], {metrics['count']} images/volumes",
            f"  mean Dice {'-' if mean is None else f'{100 * mean:.2f} %'}   loss {metrics['loss']:.4f}",
            format_dice_table(metrics, class_names),
            f"  written: {out / 'eval.json'}"]) + "\n")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """``largekernel predict`` for a segmentation checkpoint: one mask file per input.

    PNG/JPEG images give ``<name>_mask.png`` (pixel value = class index); NIfTI volumes give
    ``<name>_mask.nii.gz`` with the input's affine: 3-D models segment them with sliding windows,
    2-D models slice by slice across the axis recorded as ``slice_axis`` (the last axis if none).
    """
    from largekernel.tasks.segmentation.evaluation import predict_logits
    from largekernel.tasks.segmentation.io import (
        is_nifti,
        mask_path,
        read_image,
        read_volume,
        write_nifti_mask,
        write_png_mask,
    )
    from largekernel.train.trainer import resolve_device

    device = resolve_device(args.device)
    loaded = load_segmentation_model(args.checkpoint, use_ema=args.use_ema, device=device)
    info: dict[str, Any] = loaded.data_info or {}
    missing = [k for k in ("in_chans", "mean", "std", "num_classes") if k not in info]
    if missing:
        raise ValueError(f"{loaded.source} lacks data-set metadata {missing}; cannot preprocess inputs")
    spatial_dims = int(info.get("spatial_dims", 2))
    in_chans = int(info["in_chans"])
    mean = torch.tensor(info["mean"], dtype=torch.float32)
    std = torch.tensor(info["std"], dtype=torch.float32)
    options = _options(loaded)
    window, overlap = _window(info, options), float(options.get("overlap", 0.25))
    out_dir = Path(getattr(args, "output", None) or loaded.source.parent / "predictions")
    out_dir.mkdir(parents=True, exist_ok=True)

    def segment(x: torch.Tensor) -> torch.Tensor:  # N x C x *spatial raw [0, 1] -> N x *spatial
        view = (1, -1) + (1,) * (x.dim() - 2)
        x = (x - mean.view(view)) / std.view(view)
        return predict_logits(loaded.model, x, window=window, overlap=overlap, device=device).argmax(1)

    for source in args.images:
        if is_nifti(source):
            volume, reference = read_volume(source)
            if in_chans != 1:
                raise ValueError(f"NIfTI volumes have one channel but the model expects {in_chans}")
            if spatial_dims == 3:
                mask = segment(volume[None, None])[0]
            elif spatial_dims == 2:  # cut as in training (coronal for mni152-2d), else axial
                axis = info.get("slice_axis")
                axis = 2 if axis is None else int(axis)
                slices = volume.movedim(axis, 0).unsqueeze(1)  # S x 1 x A x B
                mask = torch.cat([segment(slices[i:i + 8]) for i in range(0, len(slices), 8)]).movedim(0, axis)
            else:
                raise ValueError(f"a {spatial_dims}-D model cannot segment a NIfTI volume")
            written = write_nifti_mask(mask, mask_path(out_dir, source, ".nii.gz"), reference)
        else:
            if spatial_dims != 2:
                raise ValueError(f"{source}: a {spatial_dims}-D model needs NIfTI volumes (.nii/.nii.gz), "
                                 f"not 2-D images")
            mask = segment(read_image(source, in_chans)[None])[0]
            written = write_png_mask(mask, mask_path(out_dir, source, ".png"))
        counts = torch.bincount(mask.reshape(-1), minlength=int(info["num_classes"])).tolist()
        names = list(info.get("class_names") or [str(i) for i in range(len(counts))])
        if args.json:
            sys.stdout.write(json.dumps({"input": str(source), "mask": str(written),
                                         "voxels_per_class": dict(zip(names, counts))}) + "\n")
        else:
            sys.stdout.write(f"{source}: mask {written} ({', '.join(f'{n} {c}' for n, c in zip(names, counts))})\n")
    return 0
