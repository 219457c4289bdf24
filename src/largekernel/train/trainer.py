"""The training loop: data, model, optimiser, schedule, EMA, AMP, DDP, checkpoints, artefacts.

Determinism and exact resumption: the data order of epoch ``e`` is a pure function of
``(seed, e)`` (``DistributedSampler`` with ``set_epoch``), the data loader gets its own
generator, and every checkpoint stores all RNG states plus the number of batches already
consumed in the current epoch. On resume those batches are skipped without being loaded, so
a run killed at any point and resumed ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from largekernel.train import checkpointing as ckpt
from largekernel.train.config import TrainConfig
from largekernel.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    sync_bn_stats,
)
from largekernel.train.ema import ModelEma
from largekernel.train.logging_utils import MetricsLogger, format_table, progress
from largekernel.train.metrics import ClassificationMeter
from largekernel.train.mixup import Mixup, soft_target_cross_entropy
from largekernel.train.optim import build_optimizer
from largekernel.train.schedule import WarmupCosineSchedule
from largekernel.train import testing_hooks
from largekernel.errors import CheckpointError, OutputError
from largekernel.utils.output import check_writable

__all__ = ["Trainer", "TrainingInterrupted", "train", "evaluate_model", "resolve_device", "compile_model",
           "data_info_dict", "save_deploy_checkpoint", "DEPLOY_NAME", "TRAIN_CKPT_NAME"]

log = logging.getLogger(__name__)

DEPLOY_NAME = "model.safetensors"
TRAIN_CKPT_NAME = "train_checkpoint.pt"
# every file a run writes in its output directory (checked for writability before it starts)
_ARTEFACTS = (DEPLOY_NAME, "model.json", TRAIN_CKPT_NAME, "metrics.json", "metrics.jsonl", "config.yaml",
              "curves.png", "confusion_matrix.png", "checkpoints/latest")
FORMAT = "largekernel-train-v1"


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM once a checkpoint has been written."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"training stopped by {name}; checkpoint saved to {checkpoint} "
                         f"(continue with --resume)")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else is validated by torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def data_info_dict(info: Any, spec: str) -> dict[str, Any]:
    """Plain-data description of a data set (stored in checkpoints for evaluate/predict)."""
    if info is None:
        raise ValueError("the training data set has no .info (DatasetInfo); pass data_info explicitly")
    if isinstance(info, dict):
        d = dict(info)
    else:
        d = {k: getattr(info, k) for k in ("name", "num_classes", "in_chans", "image_size",
                                           "class_names", "mean", "std")}
    d["spec"] = d.get("spec", spec)
    d["class_names"] = [str(c) for c in d.get("class_names") or range(int(d["num_classes"]))]
    d["mean"] = [float(v) for v in d["mean"]]
    d["std"] = [float(v) for v in d["std"]]
    d["num_classes"] = int(d["num_classes"])
    d["in_chans"] = int(d["in_chans"])
    d["image_size"] = int(d["image_size"])
    return d


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, num_classes: int, device: torch.device,
                   amp: str = "none", *, distributed: bool = False, show_progress: bool = False
                   ) -> dict[str, Any]:
    """Loss, top-1/top-5, per-class accuracy and confusion matrix of ``model`` on ``loader``.

    With ``distributed=True`` each rank's counts are summed over ranks (every rank should see a
    disjoint shard of the evaluation set).
    """
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes)
    for x, y in progress(loader, total=len(loader), desc="eval", disable=not show_progress):
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        meter.update(logits, y, float(F.cross_entropy(logits, y)))
    if distributed:
        meter.load_merged(all_reduce_sum(meter.merge_tensor()))
    model.train(was_training)
    return meter.compute()


def compile_model(model: nn.Module, *, engine: bool = True) -> nn.Module:
    """``torch.compile`` a (possibly DDP-wrapped) model; the caller keeps the original module.

    Only the returned wrapper is compiled: parameters, ``state_dict`` keys (no ``_orig_mod.``
    prefix), the optimiser and EMA stay on ``model``, so checkpoints and resumption are those of an
    eager run. With ``engine=True`` the engine's convolutions stay inside the compiled graph as the
    opaque ``largekernel::conv`` operator (:func:`largekernel.accelerate` with ``compile=True``,
    which switches the compile engine on for the whole process); otherwise ``torch.compile`` sees
    PyTorch's own convolutions.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(4, 4, 13, padding=6, groups=4))
        >>> compiled = compile_model(net, engine=False)
        >>> compiled._orig_mod is net and list(net.state_dict()) == ["0.weight", "0.bias"]
        True
    """
    if engine:
        from largekernel.nn.acceleration import accelerate

        # converts the convolutions inside (idempotent), turns the compile engine on, compiles
        return accelerate(model, compile=True)
    return torch.compile(model)


def save_deploy_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Reparameterise a copy of ``model`` and save it with ``largekernel.checkpoint.save_checkpoint``."""
    from largekernel.checkpoint import save_checkpoint
    from largekernel.reparam import reparameterize

    deploy = reparameterize(model, inplace=False)
    deploy.eval()
    save_checkpoint(deploy, path, metadata=metadata)
    return Path(path)


class _SignalGuard:
    """Turns SIGINT/SIGTERM into a flag checked between optimiser steps (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: give up waiting for the step to finish
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: saving a checkpoint after the current step",
                    signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains a classifier as described by a :class:`TrainConfig`.

    Args:
        cfg: The run configuration.
        model: Optional pre-built model (default: ``create_model(cfg.model, **cfg.model_kwargs)``
            with ``num_classes``/``in_chans`` from the data set).
        train_set, eval_set: Optional data sets of ``(CHW tensor, int)`` (default: built from
            ``cfg.data`` with ``largekernel.data.build_dataset``).
        data_info: Data-set description (default: ``train_set.info``).
        model_config: ``{"name", "kwargs"}`` to rebuild the model (default:
            ``model.largekernel_config``).

    Example:
        >>> from largekernel.train import Trainer, TrainConfig
        >>> summary = Trainer(TrainConfig(epochs=1)).fit()  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, *, model: nn.Module | None = None,
                 train_set: Dataset | None = None, eval_set: Dataset | None = None,
                 data_info: Any = None, model_config: dict[str, Any] | None = None) -> None:
        self.cfg = cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of "
                             f"processes ({self.dist.world_size})")
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.out_dir = self._resolve_output()
        self._build_data(train_set, eval_set, data_info)
        self._build_model(model, model_config)
        self._build_optimisation()
        self.logger = MetricsLogger(self.out_dir, enabled=self.dist.is_main,
                                    tensorboard=cfg.tensorboard)
        self.show_progress = self.dist.is_main and not cfg.quiet
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.train_loss_sum = 0.0
        self.train_count = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0

    # ------------------------------------------------------------------ set-up
    def _resolve_output(self) -> Path:
        cfg = self.cfg
        if cfg.output:
            out = Path(cfg.output)
        else:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / (cfg.name or f"{cfg.model}-{cfg.data.replace(':', '_').replace('/', '_')}-{stamp}")
            out = Path(broadcast_object(str(out)))  # all ranks must agree on one timestamp
        if self.dist.is_main:
            # fail now, not after an hour of training: every artefact must be writable
            check_writable(out, files=_ARTEFACTS, dirs=(ckpt.CHECKPOINT_DIR,))
            ckpt.remove_orphans(out)  # temporaries of a writer killed by SIGKILL
        return out

    def _build_data(self, train_set: Dataset | None, eval_set: Dataset | None, data_info: Any) -> None:
        cfg = self.cfg
        if train_set is None or eval_set is None:
            from largekernel.data import build_dataset

            kw = dict(image_size=cfg.image_size, seed=cfg.seed, root=cfg.data_root)
            if train_set is None:
                train_set = build_dataset(cfg.data, "train", augment=cfg.augment, **kw)
            if eval_set is None:
                eval_set = build_dataset(cfg.data, cfg.eval_split, augment=False, **kw)
        info = data_info if data_info is not None else getattr(train_set, "info", None)
        self.data_info = data_info_dict(info, cfg.data)
        if getattr(cfg, "train_subset_per_class", None):  # few labels, every class present
            from largekernel.pretrain.fewlabel import first_per_class

            train_set = Subset(train_set, first_per_class(train_set, cfg.train_subset_per_class))
        elif cfg.train_subset:
            train_set = Subset(train_set, range(min(cfg.train_subset, len(train_set))))
        if cfg.eval_subset:
            eval_set = Subset(eval_set, range(min(cfg.eval_subset, len(eval_set))))
        if len(train_set) < cfg.batch_size:
            raise ValueError(f"batch_size ({cfg.batch_size}) is larger than the training set "
                             f"({len(train_set)} samples)")
        self.train_set, self.eval_set = train_set, eval_set
        # DistributedSampler also in single-process runs: one code path for the data order
        self.sampler = DistributedSampler(train_set, num_replicas=self.dist.world_size,
                                          rank=self.dist.rank, shuffle=True, seed=cfg.seed,
                                          drop_last=True)
        self.batches_per_epoch = len(self.sampler) // self.local_batch
        self.steps_per_epoch = self.batches_per_epoch // cfg.accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size x accum_steps ({cfg.batch_size} x {cfg.accum_steps}) leaves "
                             f"no full step per epoch on {len(train_set)} training samples")
        self.batches_per_epoch = self.steps_per_epoch * cfg.accum_steps
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        # evaluation: disjoint, unpadded shards per rank so summed counts are exact
        from largekernel.data.base import evaluation_shard

        self.eval_loader = DataLoader(evaluation_shard(eval_set, self.dist.rank, self.dist.world_size),
                                      batch_size=max(self.local_batch, 64),
                                      shuffle=False, num_workers=cfg.num_workers,
                                      generator=torch.Generator().manual_seed(cfg.seed))

    def _build_model(self, model: nn.Module | None, model_config: dict[str, Any] | None) -> None:
        cfg = self.cfg
        if model is None:
            from largekernel.models.registry import create_model

            kwargs = dict(cfg.model_kwargs)
            kwargs.setdefault("num_classes", self.data_info["num_classes"])
            kwargs.setdefault("in_chans", self.data_info["in_chans"])
            if cfg.drop_path_rate > 0:
                kwargs["drop_path_rate"] = cfg.drop_path_rate
            torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
            model = create_model(cfg.model, **kwargs)
            model_config = {"name": cfg.model, "kwargs": kwargs}
        if model_config is None:
            model_config = getattr(model, "largekernel_config", None) or {"name": cfg.model, "kwargs": {}}
        self.model_config = {"name": model_config["name"], "kwargs": dict(model_config["kwargs"])}
        if not hasattr(model, "largekernel_config"):
            model.largekernel_config = copy.deepcopy(self.model_config)
        if getattr(cfg, "init_from", None):  # fine-tuning: pre-trained backbone, fresh head
            from largekernel.pretrain.transfer import load_pretrained_encoder

            load_pretrained_encoder(model, cfg.init_from)
        if cfg.grad_checkpointing:
            setter = getattr(model, "set_grad_checkpointing", None)
            if setter is None:
                raise ValueError(f"model {cfg.model!r} does not support grad_checkpointing")
            setter(True)
        if cfg.accelerate:
            from largekernel.nn.acceleration import accelerate

            result = accelerate(model)
            model = result if isinstance(result, nn.Module) else model
        else:  # accelerate=false: PyTorch's own layers everywhere (also in largekernel's own models)
            from largekernel.nn.acceleration import to_torch_convs

            to_torch_convs(model)
        model.to(self.device)
        self.raw_model = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.ddp_model = model  # DDP's no_sync() lives here, not on a compiled wrapper
        self._compile_engine_before: bool | None = None
        if getattr(cfg, "compile", False):
            from largekernel.ops.custom_op import compile_engine_enabled

            self._compile_engine_before = compile_engine_enabled()  # restored by close()
            model = compile_model(model, engine=cfg.accelerate)
        self.model = model
        self.num_params = sum(p.numel() for p in self.raw_model.parameters())

    def _build_optimisation(self) -> None:
        cfg = self.cfg
        self.optimizer = build_optimizer(self.raw_model, cfg.optimizer, lr=cfg.lr,
                                         weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                         betas=tuple(cfg.betas))
        if getattr(cfg, "layer_decay", None):  # fine-tuning: smaller steps for earlier blocks
            from largekernel.pretrain.layer_decay import apply_layer_decay

            apply_layer_decay(self.optimizer, self.raw_model, cfg.layer_decay)
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(
            cfg.warmup_epochs * self.steps_per_epoch)
        self.schedule = WarmupCosineSchedule(self.optimizer, base_lr=cfg.lr, total_steps=self.total_steps,
                                             warmup_steps=warmup, min_lr=cfg.min_lr)
        self.ema = ModelEma(self.raw_model, cfg.ema_decay) if cfg.ema else None
        self.scaler = (torch.amp.GradScaler("cuda") if cfg.amp == "fp16" and self.device.type == "cuda"
                       else None)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError("amp=fp16 needs a CUDA device; use amp=bf16 on CPU")
        self.mixup = Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.label_smoothing,
                           self.data_info["num_classes"])

    # ------------------------------------------------------------- checkpoints
    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's RNG state, in rank order (a collective: call on all ranks)."""
        state = ckpt.capture_rng_state()
        if not self.dist.enabled:
            return [state]
        states: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(states, state)
        return states

    def state_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to continue the run exactly (tensors and primitives only).

        Args:
            rng_states: Per-rank RNG states from :meth:`_gather_rng` (default: this process's).
        """
        rng_states = rng_states if rng_states is not None else [ckpt.capture_rng_state()]
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "model_config": copy.deepcopy(self.model_config),
            "data_info": dict(self.data_info),
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.ema_state() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_states[0],
            # each DDP rank draws its own dropout/augmentation numbers: keep them all
            "rng_per_rank": rng_states if len(rng_states) > 1 else None,
            "progress": {"epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                         "train_loss_sum": self.train_loss_sum, "train_count": self.train_count,
                         "train_seconds": self.train_seconds, "world_size": self.dist.world_size},
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} checkpoint (format={state.get('format')!r})")
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_ema_state(state["ema"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        prog = state["progress"]
        if int(prog.get("world_size", 1)) != self.dist.world_size:
            log.warning("resuming a %s-process run on %d processes: the data order changes",
                        prog.get("world_size"), self.dist.world_size)
        self.epoch = int(prog["epoch"])
        self.step = int(prog["step"])
        self.batch_in_epoch = int(prog["batch_in_epoch"])
        self.train_loss_sum = float(prog["train_loss_sum"])
        self.train_count = int(prog["train_count"])
        self.train_seconds = float(prog.get("train_seconds", 0.0))
        self.history = list(state.get("history", []))
        per_rank = state.get("rng_per_rank")
        if per_rank and len(per_rank) == self.dist.world_size:
            ckpt.restore_rng_state(per_rank[self.dist.rank])
        else:
            ckpt.restore_rng_state(state["rng"])

    def save(self) -> Path | None:
        """Write a training checkpoint (main rank) and wait for it on all ranks."""
        path = None
        rng_states = self._gather_rng()
        if self.dist.is_main:
            path = ckpt.save_training_checkpoint(self.state_dict(rng_states), self.out_dir, self.step,
                                                 keep=self.cfg.keep_checkpoints)
            log.debug("saved %s", path)
        barrier()
        testing_hooks.after_checkpoint(self.step)  # no-op unless a test enabled it (see that module)
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` (default: the output directory's latest checkpoint). Returns whether loaded."""
        path = Path(path) if path is not None else ckpt.latest_checkpoint(self.out_dir)
        if path is None:
            return False
        state = ckpt.load_training_checkpoint(path, map_location=self.device)
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, ValueError) as err:  # e.g. another model's weights
            raise CheckpointError(f"cannot resume from {path}: {type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:600]}") from None
        log.info("resumed from %s (epoch %d, step %d/%d)", path, self.epoch, self.step, self.total_steps)
        return True

    # -------------------------------------------------------------------- loop
    def _train_loader(self, epoch: int, skip_batches: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        # per-(seed, epoch, index) augmentation streams, independent of order and resumption
        base = self.train_set.dataset if isinstance(self.train_set, Subset) else self.train_set
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)
        indices = list(self.sampler)[: self.batches_per_epoch * self.local_batch]
        indices = indices[skip_batches * self.local_batch:]
        # a private generator: creating the loader must not consume the global RNG, which the
        # checkpoint restores (otherwise a resumed run would diverge)
        return DataLoader(self.train_set, batch_size=self.local_batch, sampler=indices, drop_last=True,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch))

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        if soft is not None:
            return soft_target_cross_entropy(logits, soft)
        return F.cross_entropy(logits.float(), target, label_smoothing=self.cfg.label_smoothing)

    def _stop_requested(self, guard: _SignalGuard) -> bool:
        flag = torch.tensor([1.0 if guard.signum is not None else 0.0])
        if self.dist.enabled:  # every rank must stop at the same step or collectives hang
            all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def _optimizer_step(self) -> None:
        cfg = self.cfg
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.raw_model)

    def _train_epoch(self, guard: _SignalGuard) -> None:
        cfg = self.cfg
        self.model.train()
        accum = cfg.accum_steps
        skip = self.batch_in_epoch
        loader = self._train_loader(self.epoch, skip)
        bar = progress(loader, total=len(loader), desc=f"epoch {self.epoch + 1}/{self.num_epochs}",
                       disable=not self.show_progress)
        t0 = time.perf_counter()
        seen = 0
        for x, y in bar:
            x = x.to(self.device, non_blocking=True)
            y = torch.as_tensor(y).to(self.device, non_blocking=True)
            micro = self.batch_in_epoch % accum
            if micro == 0:
                self.schedule.apply(self.step)
            soft = None
            if self.mixup.active:
                x, soft = self.mixup(x, y)
            sync_ctx = (self.ddp_model.no_sync() if self.dist.enabled and micro != accum - 1
                        else contextlib.nullcontext())
            with sync_ctx:
                with _autocast(self.device, cfg.amp):
                    logits = self.model(x)
                loss = self._loss(logits, y, soft)
                if not torch.isfinite(loss):
                    # a ValueError: the CLI reports it as one line (it is fixed by changing options)
                    raise ValueError(f"training diverged: loss is {loss.item()} at step {self.step}; "
                                     f"lower lr, enable clip_grad or check the data")
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            self.train_loss_sum += float(loss.detach()) * y.shape[0]
            self.train_count += y.shape[0]
            self.batch_in_epoch += 1
            seen += y.shape[0] * self.dist.world_size
            if micro != accum - 1:
                continue
            self._optimizer_step()
            self.step += 1
            if self.show_progress and hasattr(bar, "set_postfix"):
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{seen / elapsed:.0f}", refresh=False)
            if self.step % 10 == 0 or self.step == self.total_steps:
                self.logger.log("train", self.step, epoch=self.epoch, loss=float(loss.detach()),
                                lr=self.optimizer.param_groups[0]["lr"])
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                s0 = time.perf_counter()
                self.save()
                t0 += time.perf_counter() - s0  # checkpoint I/O is not training time
            if self._stop_requested(guard):
                path = self.save()
                raise TrainingInterrupted(guard.signum or signal.SIGTERM, path)
            if self.step >= self.total_steps:
                break
        self.train_seconds += time.perf_counter() - t0

    def evaluate(self, model: nn.Module | None = None) -> dict[str, Any]:
        """Evaluate (default: the training model) on the evaluation split, all ranks together."""
        target = model if model is not None else self.raw_model
        sync_bn_stats(target)  # ranks saw different shards: evaluate one agreed set of BN statistics
        return evaluate_model(target, self.eval_loader,
                              self.data_info["num_classes"], self.device, self.cfg.amp,
                              distributed=self.dist.enabled)

    # ---------------------------------------------------------- task hooks
    # A task trainer (segmentation: Dice instead of top-1) overrides these, not the loop around them.
    def _eval_record(self) -> dict[str, Any]:
        """The evaluation fields of an epoch record (called on the epochs that evaluate)."""
        metrics = self.evaluate()
        record = {"eval_loss": metrics["loss"], "eval_top1": metrics["top1"], "eval_top5": metrics["top5"]}
        if self.ema is not None:
            record["ema_top1"] = self.evaluate(self.ema.module)["top1"]
        return record

    def _epoch_line(self, record: dict[str, Any]) -> list[str]:
        """The evaluation parts of the per-epoch log line."""
        parts = []
        if "eval_top1" in record:
            parts.append(f"eval top-1 {100 * record['eval_top1']:.2f}%")
        if "ema_top1" in record:
            parts.append(f"EMA {100 * record['ema_top1']:.2f}%")
        return parts

    def _score(self, metrics: dict[str, Any]) -> float:
        """Higher is better: decides between the EMA and the raw weights on a validation split."""
        return metrics["top1"]

    def _summary_head(self) -> dict[str, Any]:
        """Keys placed first in the run summary (``metrics.json``)."""
        return {}

    def _deploy_metadata(self, final: dict[str, Any], chosen_name: str) -> dict[str, Any]:
        """Metadata stored with the deploy checkpoint."""
        return {"data": self.data_info, "metrics": {"top1": final["top1"], "top5": final["top5"]},
                "weights": chosen_name}

    def _save_final_model(self, chosen: nn.Module, final: dict[str, Any], chosen_name: str) -> dict[str, str]:
        """Write the end-of-run model file(s); returns the summary entries naming them."""
        save_deploy_checkpoint(chosen, self.out_dir / DEPLOY_NAME, self._deploy_metadata(final, chosen_name))
        return {"deploy_checkpoint": str(self.out_dir / DEPLOY_NAME)}

    def _write_plots(self, final: dict[str, Any]) -> None:
        from largekernel.train.plots import plot_confusion, plot_curves

        plot_curves(self.history, self.out_dir / "curves.png")
        plot_confusion(final["confusion_matrix"], self.data_info["class_names"], self.out_dir / "confusion_matrix.png")

    def _model_label(self) -> str:
        """The model row of the end-of-run table."""
        return self.model_config["name"]

    def _metric_rows(self, final: dict[str, Any]) -> list[tuple[str, str]]:
        """The metric rows of the end-of-run table."""
        split = self.cfg.eval_split
        return [(f"{split} top-1", f"{100 * final['top1']:.2f} %"), (f"{split} top-5", f"{100 * final['top5']:.2f} %"),
                (f"{split} loss", f"{final['loss']:.4f}")]

    def _summary_details(self, final: dict[str, Any]) -> str | None:
        """Text logged below the end-of-run table (e.g. per-class scores)."""
        return None

    def _log_summary(self, final: dict[str, Any], chosen_name: str) -> None:
        """The end-of-run table."""
        cfg = self.cfg
        rows = [
            ("model", f"{self._model_label()} ({self.num_params / 1e6:.3f}M params)"),
            ("data", f"{self.data_info['spec']} ({len(self.train_set)} train / {len(self.eval_set)} "
                     f"{cfg.eval_split})"),
            ("steps / epochs", f"{self.step} / {self.epoch}"),
            ("train time", f"{self.train_seconds:.1f} s"),
            ("weights", chosen_name),
            *self._metric_rows(final),
            ("output", str(self.out_dir)),
        ]
        details = self._summary_details(final)
        text = format_table(rows, "training summary") + (f"\n{details}" if details else "")
        (log.debug if cfg.quiet else log.info)("%s", text)

    def _final_log_fields(self, final: dict[str, Any]) -> dict[str, Any]:
        """Fields of the ``final`` JSON-lines record."""
        return {"top1": final["top1"], "top5": final["top5"], "loss": final["loss"]}

    def _end_epoch(self) -> None:
        cfg = self.cfg
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": self.train_loss_sum / max(self.train_count, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        last = self.step >= self.total_steps or self.epoch + 1 >= self.num_epochs
        if (self.epoch + 1) % cfg.eval_every == 0 or last:
            record.update(self._eval_record())
        self.history.append(record)
        self.logger.log("epoch", **record)
        if self.dist.is_main:
            parts = [f"epoch {record['epoch']}/{self.num_epochs}", f"loss {record['train_loss']:.4f}"]
            (log.debug if cfg.quiet else log.info)("  ".join(parts + self._epoch_line(record)))
        self.epoch += 1
        self.batch_in_epoch = 0
        self.train_loss_sum = 0.0
        self.train_count = 0
        self.save()

    def fit(self) -> dict[str, Any]:
        """Run (or continue, with ``cfg.resume``) training and write the final artefacts.

        Returns:
            The summary also written to ``metrics.json``.

        Raises:
            TrainingInterrupted: After SIGINT/SIGTERM (a checkpoint was saved first).
            OutputError: An output file could not be written mid-run (disk full, permissions
                changed, ...); the training state is saved to a rescue directory first when possible.
        """
        try:
            return self._fit()
        except OSError as err:
            if not self._is_output_error(err):
                raise
            raise self._output_failure(err) from None

    def _is_output_error(self, err: OSError) -> bool:
        if err.filename is None:
            return True  # a write without a name (the atomic writer names its files)
        try:
            Path(err.filename).resolve().relative_to(self.out_dir.resolve())
        except ValueError:
            return False  # e.g. a data file that vanished: not ours to report as an output error
        return True

    def _output_failure(self, err: OSError) -> OutputError:
        """Save the state elsewhere if possible and describe the failure in one line."""
        target = err.filename or self.out_dir
        message = f"cannot write {target}: {err.strerror or err}; training stopped at step {self.step}"
        if self.dist.is_main:
            rescue = Path(tempfile.gettempdir()) / "largekernel-rescue" / f"{self.out_dir.name}-{os.getpid()}"
            try:
                ckpt.save_training_checkpoint(self.state_dict(), rescue, self.step, keep=1)
            except Exception as rescue_err:  # nothing more to try: say so
                message += f"; saving the state to {rescue} failed too ({rescue_err})"
            else:
                message += (f"; the training state was saved to {rescue} (continue with "
                            f"--output {rescue} --resume)")
        return OutputError(message, path=target)

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.resume and not self.resume():
            raise FileNotFoundError(f"--resume: no checkpoint found in {self.out_dir / ckpt.CHECKPOINT_DIR}")
        if self.dist.is_main:
            (log.debug if cfg.quiet else log.info)(
                "training %s (%.2fM params) on %s: %d steps (%d epochs x %d), global batch %d, %d "
                "process(es), device %s, output %s", self.model_config["name"], self.num_params / 1e6,
                self.data_info["spec"], self.total_steps, self.num_epochs, self.steps_per_epoch,
                cfg.batch_size * cfg.accum_steps, self.dist.world_size, self.device, self.out_dir)
            import yaml

            text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            ckpt.atomic_write(self.out_dir / "config.yaml", lambda f: f.write(text.encode("utf-8")))
        with _SignalGuard() as guard:
            while self.step < self.total_steps and self.epoch < self.num_epochs:
                self._train_epoch(guard)
                self._end_epoch()
            if guard.signum is not None:  # a signal during the final evaluation: still stop
                raise TrainingInterrupted(guard.signum, ckpt.latest_checkpoint(self.out_dir))
        return self._finish()

    # --------------------------------------------------------------- artefacts
    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        final = self.evaluate()
        chosen, chosen_name = self.raw_model, "model"
        ema_metrics = None
        if self.ema is not None:
            ema_metrics = self.evaluate(self.ema.module)
            # Picking weights by their score is model selection: fair on a validation split, a
            # biased result on the test split. So on `test` the EMA weights (what EMA is for) are
            # the result whatever they score; on `val` the better of the two is kept.
            if cfg.eval_split != "val" or self._score(ema_metrics) >= self._score(final):
                chosen, chosen_name, final = self.ema.module, "ema", ema_metrics
        summary: dict[str, Any] = {
            **self._summary_head(),
            "model": self.model_config,
            "data": self.data_info,
            "params": self.num_params,
            "steps": self.step,
            "epochs": self.epoch,
            "world_size": self.dist.world_size,
            "train_seconds": self.train_seconds,
            "weights": chosen_name,
            "final": final,
            "ema": ema_metrics,
            "history": self.history,
            "config": cfg.to_dict(),
        }
        rng_states = self._gather_rng()
        if self.dist.is_main:
            out = self.out_dir
            ckpt.atomic_torch_save(self.state_dict(rng_states), out / TRAIN_CKPT_NAME)
            summary.update(self._save_final_model(chosen, final, chosen_name))
            text = json.dumps(summary, indent=2)  # serialised first: a failure leaves no partial file
            ckpt.atomic_write(out / "metrics.json", lambda f: f.write(text.encode("utf-8")))
            if cfg.plots:
                self._write_plots(final)
            self._log_summary(final, chosen_name)
        self.logger.log("final", self.step, **self._final_log_fields(final))
        self.logger.close()
        barrier()
        return summary

    def close(self) -> None:
        self.logger.close()
        before = getattr(self, "_compile_engine_before", None)  # subclasses may build their own model
        if before is not None:  # accelerate(compile=True) switched it on process-wide
            from largekernel.ops.custom_op import set_compile_engine

            set_compile_engine(before)
        cleanup_distributed()


def train(cfg: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a :class:`Trainer` for ``cfg`` and run it; returns the summary dict."""
    trainer = Trainer(cfg, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
