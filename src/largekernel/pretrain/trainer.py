"""The pre-training loop: :class:`largekernel.train.Trainer` driving a :class:`MaskedImageModel`.

Everything but the model, the loss and the artefacts is the classifier's training machinery:
the data order, atomic checkpoints with RNG states (so a resumed run draws the same masks and
ends bit-identical), SIGINT/SIGTERM handling, gradient accumulation, AMP, DDP, progress bars and
JSON-lines logs. Labels are loaded with the images but never used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from largekernel.pretrain.config import PretrainConfig
from largekernel.pretrain.model import MaskedImageModel, check_pretrainable, create_backbone
from largekernel.train.distributed import all_reduce_sum, sync_bn_stats
from largekernel.train.logging_utils import format_table
from largekernel.train.trainer import Trainer, _autocast

__all__ = ["PretrainTrainer", "pretrain", "ENCODER_NAME"]

log = logging.getLogger(__name__)

#: File name of the exported encoder (ordinary ``save_checkpoint`` format, ``features_only`` model).
ENCODER_NAME = "encoder.safetensors"


class PretrainTrainer(Trainer):
    """Masked image pre-training of ``cfg.model`` on the images of ``cfg.data``.

    Args:
        cfg: A :class:`PretrainConfig`.
        backbone: Optional pre-built ``features_only`` backbone (default: built from ``cfg``).
        train_set, eval_set, data_info: As for :class:`~largekernel.train.Trainer`.

    Example:
        >>> from largekernel.pretrain import PretrainConfig, PretrainTrainer
        >>> summary = PretrainTrainer(PretrainConfig(epochs=1)).fit()  # doctest: +SKIP
    """

    def __init__(self, cfg: PretrainConfig, *, backbone: nn.Module | None = None, train_set: Dataset | None = None,
                 eval_set: Dataset | None = None, data_info: Any = None) -> None:
        if not isinstance(cfg, PretrainConfig):
            raise TypeError(f"cfg must be a PretrainConfig, got {type(cfg).__name__}")
        self._backbone = backbone
        if backbone is None:
            check_pretrainable(cfg.model, cfg.model_kwargs)  # before any data is loaded
        super().__init__(cfg, train_set=train_set, eval_set=eval_set, data_info=data_info)

    # ------------------------------------------------------------------ set-up
    def _build_model(self, model: nn.Module | None, model_config: dict[str, Any] | None) -> None:
        cfg = self.cfg
        kwargs = dict(cfg.model_kwargs)
        kwargs.setdefault("in_chans", self.data_info["in_chans"])
        if cfg.drop_path_rate > 0:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
        if self._backbone is not None:
            backbone = self._backbone
            config = getattr(backbone, "largekernel_config", None) or {"name": cfg.model, "kwargs": kwargs}
        else:
            backbone = create_backbone(cfg.model, kwargs)
            config = {"name": cfg.model, "kwargs": dict(backbone.largekernel_config["kwargs"])}
        if cfg.accelerate:
            from largekernel.nn.acceleration import accelerate

            # before the sparse conversion: accelerate only converts plain nn.Conv classes
            accelerate(backbone)
        mim = MaskedImageModel(backbone, in_chans=self.data_info["in_chans"], mask_ratio=cfg.mask_ratio,
                               decoder_width=cfg.decoder_width, norm_pix_loss=cfg.norm_pix_loss)
        size = self.data_info["image_size"]
        mim.encoder.grid((size, size))  # fail now, not at the first batch, if the stride does not fit
        mim.mask_shard = (self.dist.rank, self.dist.world_size)  # DDP: the masks of one global batch
        # the classifier's machinery from here on: grad checkpointing, device, DDP, compile
        super()._build_model(mim, {"name": config["name"], "kwargs": dict(config["kwargs"])})

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        # the masked image model's forward already returns its reconstruction loss; labels are unused
        return logits

    # -------------------------------------------------------------- evaluation
    def _eval_masks(self, batch_index: int, x: torch.Tensor) -> torch.Tensor:
        # a private generator: the same masks every epoch, and the global RNG is left alone
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + batch_index)
        return self.raw_model.random_mask(x, generator=gen)

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Mean masked-reconstruction loss on the evaluation split (fixed masks), all ranks together."""
        mim = model if model is not None else self.raw_model
        sync_bn_stats(mim)
        was_training = mim.training
        mim.eval()
        total = torch.zeros(2, dtype=torch.float64)
        for i, (x, _) in enumerate(self.eval_loader):
            x = x.to(self.device)
            with _autocast(self.device, self.cfg.amp):
                loss = mim(x, self._eval_masks(i, x))
            total += torch.tensor([float(loss) * x.shape[0], x.shape[0]], dtype=torch.float64)
        if self.dist.enabled:
            total = all_reduce_sum(total)
        mim.train(was_training)
        return {"loss": float(total[0] / max(total[1], 1.0)), "count": int(total[1])}

    @torch.no_grad()
    def save_reconstructions(self, path: str | Path) -> Path | None:
        """PNG of masked input / reconstruction / target for the first ``recon_images`` eval images."""
        from largekernel.pretrain.visualize import save_reconstruction_png

        n = min(self.cfg.recon_images, len(self.eval_set))
        if n == 0:
            return None
        x = torch.stack([self.eval_set[i][0] for i in range(n)]).to(self.device)
        mim = self.raw_model
        was_training = mim.training
        mim.eval()
        mask = self._eval_masks(0, x)
        pred = mim.reconstruct(x, mask)
        mim.train(was_training)
        return save_reconstruction_png(path, x.cpu(), pred.cpu(), mask.cpu(), mean=self.data_info["mean"],
                                       std=self.data_info["std"], norm_pix=self.cfg.norm_pix_loss,
                                       title=f"epoch {self.epoch + 1}, mask ratio {self.cfg.mask_ratio:g}")

    def _eval_record(self) -> dict[str, Any]:
        """The masked loss on the eval images, and the epoch's reconstruction PNG."""
        record = {"eval_loss": self.evaluate()["loss"]}
        if self.dist.is_main and self.cfg.plots and self.cfg.recon_images:
            self.save_reconstructions(self.out_dir / "reconstructions" / f"epoch_{self.epoch + 1:03d}.png")
        return record

    def _epoch_line(self, record: dict[str, Any]) -> list[str]:
        return [f"eval loss {record['eval_loss']:.4f}"] if "eval_loss" in record else []

    # --------------------------------------------------------------- artefacts
    def export_encoder(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Save the encoder as an ordinary ``features_only`` checkpoint (``save_checkpoint`` format).

        The weights are copied into a freshly built dense backbone (strict load), so the file is
        exactly what ``create_model(name, features_only=True, **kwargs)`` expects and
        ``largekernel train --init-from`` reads.
        """
        from largekernel.checkpoint import save_checkpoint
        from largekernel.models.registry import create_model

        dense = create_model(self.model_config["name"], **self.model_config["kwargs"])
        dense.load_state_dict(self.raw_model.encoder.backbone.state_dict(), strict=True)
        return save_checkpoint(dense, path, metadata=metadata)

    # ------------------------------------------------- end of run (Trainer._finish's hooks)
    def _summary_head(self) -> dict[str, Any]:
        return {"task": "masked-image-pretraining"}

    def _save_final_model(self, chosen: nn.Module, final: dict[str, Any], chosen_name: str) -> dict[str, str]:
        meta = {"data": self.data_info, "pretrain": {"mask_ratio": self.cfg.mask_ratio, "steps": self.step,
                                                      "eval_loss": final["loss"]}}
        return {"encoder_checkpoint": str(self.export_encoder(self.out_dir / ENCODER_NAME, meta))}

    def _write_plots(self, final: dict[str, Any]) -> None:
        from largekernel.train.plots import plot_curves

        plot_curves(self.history, self.out_dir / "curves.png")

    def _log_summary(self, final: dict[str, Any], chosen_name: str) -> None:
        rows = [
            ("model", f"{self.model_config['name']} ({self.num_params / 1e6:.3f}M params with decoder)"),
            ("data", f"{self.data_info['spec']} ({len(self.train_set)} unlabelled train images)"),
            ("mask ratio", f"{self.cfg.mask_ratio:g} on a {self.raw_model.stride}-px patch grid"),
            ("steps / epochs", f"{self.step} / {self.epoch}"),
            ("train time", f"{self.train_seconds:.1f} s"),
            (f"{self.cfg.eval_split} masked loss", f"{final['loss']:.4f}"),
            ("encoder", str(self.out_dir / ENCODER_NAME)),
        ]
        (log.debug if self.cfg.quiet else log.info)("%s", format_table(rows, "pre-training summary"))

    def _final_log_fields(self, final: dict[str, Any]) -> dict[str, Any]:
        return {"loss": final["loss"]}


def pretrain(cfg: PretrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a :class:`PretrainTrainer` for ``cfg`` and run it; returns the summary dict.

    Example:
        >>> from largekernel.pretrain import PretrainConfig, pretrain
        >>> summary = pretrain(PretrainConfig(epochs=1, output="runs/mim"))  # doctest: +SKIP
    """
    trainer = PretrainTrainer(cfg, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
