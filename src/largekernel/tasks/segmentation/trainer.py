"""``largekernel train --task segment``: the classification trainer with segmentation parts.

:class:`SegmentationTrainer` reuses everything of :class:`largekernel.train.trainer.Trainer`
that is not about classes of whole images — data order, optimiser, schedule, EMA, AMP, DDP,
atomic checkpoints and exact resumption — and replaces the data sets, the model (a backbone
plus a U-Net/UNet++ decoder), the loss (Dice + CE) and the evaluation (per-class Dice/IoU, sliding
windows for volumes); the epoch end and the final artefacts are Trainer's, through its task hooks
(``_eval_record``, ``_score``, ``_deploy_metadata``, ``_write_plots``, ``_log_summary``, ...).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from largekernel.tasks.segmentation.evaluation import evaluate_segmentation
from largekernel.tasks.segmentation.losses import DiceCELoss
from largekernel.tasks.segmentation.model import build_segmentation_model
from largekernel.tasks.segmentation.options import SegmentationOptions
from largekernel.train.config import TrainConfig
from largekernel.train.distributed import sync_bn_stats
from largekernel.train.trainer import Trainer

__all__ = ["SegmentationTrainer", "train_segmentation", "format_dice_table"]

log = logging.getLogger(__name__)


def format_dice_table(metrics: dict[str, Any], class_names: list[str]) -> str:
    """``name Dice IoU`` per class as one line each (``-`` for classes absent everywhere)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    lines = [f"  {name:<16} Dice {pct(d):>6}  IoU {pct(i):>6}"
             for name, d, i in zip(class_names, metrics["dice"], metrics["iou"])]
    return "\n".join(lines)


class SegmentationTrainer(Trainer):
    """Trains a segmentation model described by a :class:`TrainConfig` with ``task="segment"``.

    ``cfg.model`` names the backbone (``"lk_encoder"`` or any ``features_only`` largekernel
    model), ``cfg.model_kwargs`` its options, ``cfg.data`` a segmentation data set and
    ``cfg.segmentation`` the decoder/loss/inference options (:class:`SegmentationOptions`).

    Example:
        >>> from largekernel.train.config import TrainConfig
        >>> cfg = TrainConfig(task="segment", model="lk_encoder", data="shapes-2d", epochs=1)
        >>> summary = SegmentationTrainer(cfg).fit()  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, *, model: nn.Module | None = None, train_set: Dataset | None = None,
                 eval_set: Dataset | None = None, data_info: Any = None,
                 model_config: dict[str, Any] | None = None) -> None:
        if cfg.task != "segment":
            raise ValueError(f"SegmentationTrainer needs task='segment', got task={cfg.task!r}")
        self.options = SegmentationOptions.from_mapping(cfg.segmentation)
        if cfg.mixup or cfg.cutmix:
            raise ValueError("mixup and cutmix mix whole images' labels; set mixup=0 and cutmix=0 "
                             "for task=segment")
        if train_set is None or eval_set is None:
            from largekernel.data.segmentation import build_segmentation_dataset

            extra = ({"samples_per_epoch": self.options.samples_per_epoch}
                     if self.options.samples_per_epoch else {})
            kw = dict(image_size=cfg.image_size, seed=cfg.seed)
            if train_set is None:
                train_set = build_segmentation_dataset(cfg.data, "train", augment=cfg.augment, **kw, **extra)
            if eval_set is None:
                eval_set = build_segmentation_dataset(cfg.data, cfg.eval_split, augment=False, **kw)
        if data_info is None:
            info = getattr(train_set, "info", None)
            data_info = info.as_dict() if hasattr(info, "as_dict") else info
        if isinstance(data_info, dict):
            data_info = {**data_info, "task": "segment"}
        self.loss_fn = DiceCELoss(self.options.ce_weight, self.options.dice_weight,
                                  label_smoothing=cfg.label_smoothing)
        super().__init__(cfg, model=model, train_set=train_set, eval_set=eval_set, data_info=data_info,
                         model_config=model_config)
        from largekernel.data.base import evaluation_shard

        # whole volumes/slices of different sizes: evaluate with the training batch (1 for volumes)
        shard = evaluation_shard(self.eval_set, self.dist.rank, self.dist.world_size)
        sizes = {tuple(self.eval_set[i][1].shape) for i in range(min(len(self.eval_set), 2))}
        self.eval_loader = DataLoader(shard, batch_size=self.local_batch if len(sizes) == 1 else 1,
                                      shuffle=False, num_workers=cfg.num_workers)
        spatial_dims = int(self.data_info.get("spatial_dims", 2))
        self.window = self.options.window or (int(self.data_info["image_size"]) if spatial_dims == 3 else None)

    # ------------------------------------------------------------------ set-up
    def _build_model(self, model: nn.Module | None, model_config: dict[str, Any] | None) -> None:
        cfg = self.cfg
        if model is None:
            opts = self.options
            backbone_kwargs = dict(cfg.model_kwargs)
            if cfg.drop_path_rate > 0:
                backbone_kwargs["drop_path_rate"] = cfg.drop_path_rate
            torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
            model = build_segmentation_model(
                cfg.model, num_classes=self.data_info["num_classes"], in_chans=self.data_info["in_chans"],
                spatial_dims=int(self.data_info.get("spatial_dims", 2)), out_indices=opts.out_indices,
                backbone_kwargs=backbone_kwargs, decoder=opts.decoder, decoder_channels=opts.decoder_channels,
                deep_supervision=opts.deep_supervision, stem_channels=opts.stem_channels)
            model_config = model.largekernel_config
        super()._build_model(model, model_config)

    def _loss(self, logits: Any, target: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        return self.loss_fn(logits, target)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Loss and per-class Dice/IoU on the evaluation split, all ranks together."""
        target = model if model is not None else self.raw_model
        sync_bn_stats(target)
        return evaluate_segmentation(target, self.eval_loader, self.data_info["num_classes"], self.device,
                                     loss_fn=self.loss_fn, amp=self.cfg.amp, window=self.window,
                                     overlap=self.options.overlap, distributed=self.dist.enabled)

    # ------------------------------------------- hooks of Trainer's epoch end and final artefacts
    def _eval_record(self) -> dict[str, Any]:
        metrics = self.evaluate()
        record = {"eval_loss": metrics["loss"], "eval_mean_dice": metrics["mean_dice"], "eval_dice": metrics["dice"]}
        if self.ema is not None:
            record["ema_mean_dice"] = self.evaluate(self.ema.module)["mean_dice"]
        return record

    def _epoch_line(self, record: dict[str, Any]) -> list[str]:
        parts = []
        if record.get("eval_mean_dice") is not None:
            parts.append(f"eval mean Dice {100 * record['eval_mean_dice']:.2f}%")
        if record.get("ema_mean_dice") is not None:
            parts.append(f"EMA {100 * record['ema_mean_dice']:.2f}%")
        return parts

    def _score(self, metrics: dict[str, Any]) -> float:
        return metrics["mean_dice"] or 0  # None when no class is present anywhere

    def _summary_head(self) -> dict[str, Any]:
        return {"task": "segment"}

    def _deploy_metadata(self, final: dict[str, Any], chosen_name: str) -> dict[str, Any]:
        return {"data": self.data_info, "task": "segment", "weights": chosen_name,
                "metrics": {"mean_dice": final["mean_dice"], "dice": final["dice"]},
                "segmentation": self.options.to_dict()}

    def _write_plots(self, final: dict[str, Any]) -> None:
        from largekernel.train.plots import plot_curves

        curves = [dict(h, eval_top1=h.get("eval_mean_dice")) for h in self.history]
        plot_curves(curves, self.out_dir / "curves.png")  # the accuracy panel shows mean Dice

    def _model_label(self) -> str:
        return f"{self.model_config['kwargs'].get('decoder')} on {self.cfg.model}"

    def _metric_rows(self, final: dict[str, Any]) -> list[tuple[str, str]]:
        split, mean = self.cfg.eval_split, final["mean_dice"]
        return [(f"{split} mean Dice", "-" if mean is None else f"{100 * mean:.2f} %"),
                (f"{split} loss", f"{final['loss']:.4f}")]

    def _summary_details(self, final: dict[str, Any]) -> str | None:
        return format_dice_table(final, self.data_info["class_names"])

    def _final_log_fields(self, final: dict[str, Any]) -> dict[str, Any]:
        return {"mean_dice": final["mean_dice"], "loss": final["loss"]}


def train_segmentation(cfg: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a :class:`SegmentationTrainer` for ``cfg`` and run it; returns the summary dict."""
    trainer = SegmentationTrainer(cfg, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
