"""The kernel-size experiment: the same-depth network trained with kernel sizes 3 ... 31.

For each data set and kernel size ``K`` the base config (``configs/kernel_size_experiment.yaml``,
every block's depthwise mixer a ``K x K`` conv) is trained with :func:`largekernel.train.train`;
then the effective receptive field of the trained model (RepLKNet's area ratios, averaged over
test images) is measured. Each run's result is cached as ``<output>/<data>/k<K>/result.json``
together with the exact config it came from, so re-running the experiment only trains what is
missing or whose config changed (configs are compared option by option, an option the trainer
gained since counting as its default), and continues an interrupted run from its last training
checkpoint when that checkpoint's config matches. The collected results are plotted against ``K``: test accuracy,
ERF area ratio and training time per step (the CPU time of one step on one thread, measured
separately so that it does not depend on how busy the machine was during training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["ExperimentResult", "run_kernel_size_experiment", "plot_kernel_size_experiment",
           "DEFAULT_KERNEL_SIZES", "DEFAULT_DATASETS", "QUICK_OVERRIDES", "base_config_path"]

log = logging.getLogger(__name__)

DEFAULT_KERNEL_SIZES: tuple[int, ...] = (3, 7, 13, 17, 31)
DEFAULT_DATASETS: tuple[str, ...] = ("pathfinder32-easy", "digits")
#: ``--quick``: a smoke-sized run (a few steps on a few hundred images) that exercises everything.
QUICK_OVERRIDES: tuple[str, ...] = ("epochs=1", "max_steps=6", "batch_size=32", "train_subset=192",
                                    "eval_subset=128", "warmup_epochs=0", "plots=false")
QUICK_KERNEL_SIZES: tuple[int, ...] = (3, 13)
RESULT_NAME = "result.json"


def base_config_path() -> Path:
    """The packaged base config of the experiment."""
    return Path(str(resources.files("largekernel.configs") / "kernel_size_experiment.yaml"))


@dataclass
class ExperimentResult:
    """All runs of one experiment (``runs``: one dict per data set and kernel size)."""

    runs: list[dict[str, Any]]
    output: Path
    kernel_sizes: tuple[int, ...]
    datasets: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def table(self, threshold: float = 0.5) -> str:
        """Markdown table: data set, K, test top-1, ERF area ratio at ``threshold``, ms per step."""
        key = f"{threshold:g}"
        lines = [f"| data | K | test top-1 % | ERF area ratio (t={key}) | CPU ms / step (1 thread) | "
                 "wall ms / step in the run |", "|---|---|---|---|---|---|"]
        for run in self.runs:
            ratio = run["erf"]["area_ratios"].get(key, {}).get("area_ratio")
            lines.append(f"| {run['data']} | {run['kernel_size']} | {100 * run['top1']:.2f} | "
                         f"{ratio:.4f} | {1e3 * run['cpu_seconds_per_step']:.1f} | "
                         f"{1e3 * run['seconds_per_step']:.1f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"kernel_sizes": list(self.kernel_sizes), "datasets": list(self.datasets),
                "output": str(self.output), "runs": self.runs, **self.meta}


def _check_kernel_sizes(kernel_sizes: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(kernel_sizes)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0 for k in ks):
        raise ValueError(f"kernel_sizes must be odd ints >= 3, got {list(kernel_sizes)!r}")
    return ks


def _run_config(base: Path, data: str, k: int, overrides: Sequence[str]):
    from largekernel.train import apply_overrides, load_config

    cfg = load_config(base)
    depths = list(cfg.model_kwargs.get("depths", (2, 2, 2, 2)))
    sizes = json.dumps([[k] * int(d) for d in depths])
    # user overrides first, then what the experiment itself varies (they cannot be overridden)
    return apply_overrides(cfg, [*overrides, f"data={data}", f"model_kwargs.kernel_sizes={sizes}"])


#: Config keys that do not change what a run trains (where it writes, how it reports, resuming).
_NOT_TRAINING = ("output", "quiet", "resume")
_MISSING = object()


def _training_config(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain data without the keys in :data:`_NOT_TRAINING`."""
    out = cfg.to_dict()
    for key in _NOT_TRAINING:
        out.pop(key, None)
    return out


def _fingerprint(cfg_dict: dict[str, Any], extra: dict[str, Any]) -> str:
    text = json.dumps({"config": cfg_dict, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_training(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two training-config dicts describe the same run.

    A key present in only one of them counts as that key's current default, so that options added
    to :class:`~largekernel.train.config.TrainConfig` after a run was cached or interrupted (with
    a default that keeps the old behaviour) do not invalidate it; a key that no longer exists
    matches nothing. Keys in :data:`_NOT_TRAINING` are ignored.

    Example:
        >>> same_training({"epochs": 30}, {"epochs": 30, "ema": False})
        True
    """
    from largekernel.train.config import TrainConfig

    defaults = TrainConfig().to_dict()

    def norm(d: dict[str, Any], key: str) -> Any:
        value = d.get(key, defaults.get(key, _MISSING))
        # tuples and lists (YAML vs dataclass), ints and floats compare as JSON does
        return value if value is _MISSING else json.dumps(value, sort_keys=True, default=str)

    for key in (set(a) | set(b)) - set(_NOT_TRAINING):
        va, vb = norm(a, key), norm(b, key)
        if va is _MISSING or vb is _MISSING or va != vb:
            return False
    return True


def _cached_result(cache: Path, cfg_dict: dict[str, Any], erf_extra: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result in ``cache`` if it was made by the same training and ERF settings."""
    if not cache.is_file():
        return None
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    config = cached.get("config") if isinstance(cached, dict) else None
    if not isinstance(config, dict):
        return None
    # the stored fingerprint covers the stored config and the ERF settings: recomputing it with
    # today's ERF settings checks those (and that the file was not edited by hand) ...
    if cached.get("fingerprint") != _fingerprint(config, erf_extra):
        return None
    # ... while the config itself is compared key by key, tolerating options added since
    return cached if same_training(config, cfg_dict) else None


def _prepare_run_dir(run_dir: Path, cfg_dict: dict[str, Any], force: bool) -> bool:
    """Make ``run_dir``; True if it holds an interrupted run of the same config to continue.

    A run stopped by SIGINT/SIGTERM (or killed after a checkpoint) leaves a training checkpoint
    that records its config; the same command continues it. Checkpoints of another config (or
    all of them, with ``force``) are deleted so that they can never be resumed.
    """
    from largekernel.train import checkpointing as ckpt

    latest = ckpt.latest_checkpoint(run_dir) if (run_dir / ckpt.CHECKPOINT_DIR).is_dir() else None
    resumable = False
    if latest is not None and not force:
        try:
            saved = ckpt.load_training_checkpoint(latest)["config"]
        except (ValueError, KeyError, OSError) as err:
            log.warning("cannot read %s (%s); starting %s again", latest, err, run_dir)
        else:
            resumable = same_training(saved, cfg_dict)
            if not resumable:
                log.info("the checkpoints in %s are of another config; starting again", run_dir)
    if not resumable:
        if (run_dir / ckpt.CHECKPOINT_DIR).is_dir():
            shutil.rmtree(run_dir / ckpt.CHECKPOINT_DIR)
        # the trainer appends to its event log: a fresh run must not continue a discarded one's
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    (run_dir / "fingerprint.txt").unlink(missing_ok=True)  # marker of older versions, unused now
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumable:
        log.info("resuming the interrupted run in %s (%s)", run_dir, latest.name)
    return resumable


def _erf_images(data: str, image_size: int | None, n: int) -> torch.Tensor:
    from largekernel.data import build_dataset

    ds = build_dataset(data, "test", image_size=image_size)
    n = min(n, len(ds))
    return torch.stack([ds[i][0] for i in range(n)])


def step_cpu_seconds(cfg: Any, repeats: int = 5) -> float:
    """Median CPU time of one training step (forward, backward, AdamW) of ``cfg``'s model, one thread.

    Measured on a fresh model and a random batch of ``cfg.batch_size`` images with the process's
    CPU clock, so that it does not depend on how busy the machine is (unlike the wall time a
    training run reports).
    """
    from largekernel.analysis.peak import median_seconds
    from largekernel.bench.train import step_fn
    from largekernel.data import dataset_info
    from largekernel.models.registry import create_model

    info = dataset_info(cfg.data, cfg.image_size)
    size = cfg.image_size or info.image_size
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **{**cfg.model_kwargs, "num_classes": info.num_classes,
                                           "in_chans": info.in_chans})
        if cfg.accelerate:
            from largekernel.nn.acceleration import accelerate

            model = accelerate(model)
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn(cfg.batch_size, info.in_chans, size, size, generator=g)
        y = torch.randint(0, info.num_classes, (cfg.batch_size,), generator=g)
        return median_seconds(step_fn(model, x, y), repeats, warmup=1, clock="cpu")
    finally:
        torch.set_num_threads(threads)


def run_kernel_size_experiment(output: str | Path, *, kernel_sizes: Sequence[int] | None = None,
                               datasets: Sequence[str] = DEFAULT_DATASETS, overrides: Sequence[str] = (),
                               quick: bool = False, base_config: str | Path | None = None,
                               erf_images: int = 16, erf_stage: int = -1, force: bool = False,
                               cached_only: bool = False, threshold: float = 0.5,
                               progress: bool = True) -> ExperimentResult:
    """Train the same-depth network with each kernel size on each data set (cached), measure ERFs.

    Args:
        output: Directory for runs, cache, ``kernel_size.json`` and ``kernel_size.png``.
        kernel_sizes: Odd kernel sizes (default :data:`DEFAULT_KERNEL_SIZES`, ``(3, 13)`` with ``quick``).
        datasets: Data-set specs (see :func:`largekernel.data.list_datasets`).
        overrides: ``key=value`` training overrides applied to the base config (e.g. ``epochs=20``).
        quick: Smoke-sized training (:data:`QUICK_OVERRIDES`, applied before ``overrides``).
        base_config: Base YAML (default: the packaged ``kernel_size_experiment.yaml``).
        erf_images: Test images averaged for each ERF.
        erf_stage: Stage whose central unit defines the ERF.
        force: Re-train even when a cached result with the same config exists.
        cached_only: Train nothing: collect, tabulate and plot only the runs already cached
            (the missing ones are listed in ``result.meta["missing"]``), e.g. to report a
            partial experiment.
        threshold: ERF area-ratio threshold drawn in ``kernel_size.png``.
        progress: Progress bars (training epochs, runs).

    Returns:
        An :class:`ExperimentResult` (also written as JSON and plotted).

    Example:
        >>> # run_kernel_size_experiment("runs/ks", quick=True, datasets=["digits"])
    """
    from largekernel.analysis.erf import DEFAULT_THRESHOLDS as ERF_THRESHOLDS
    from largekernel.analysis.erf import erf
    from largekernel.analysis.plotting import progress_bar
    from largekernel.train import train
    from largekernel.train.loading import load_trained_model

    ks = _check_kernel_sizes(kernel_sizes if kernel_sizes is not None
                             else (QUICK_KERNEL_SIZES if quick else DEFAULT_KERNEL_SIZES))
    if isinstance(datasets, str) or not datasets:
        raise ValueError(f"datasets must be a non-empty list of data-set specs, got {datasets!r}")
    if isinstance(erf_images, bool) or not isinstance(erf_images, int) or erf_images < 1:
        raise ValueError(f"erf_images must be a positive int, got {erf_images!r}")
    if f"{threshold:g}" not in {f"{t:g}" for t in ERF_THRESHOLDS}:
        raise ValueError(f"threshold must be one of {list(ERF_THRESHOLDS)}, got {threshold!r}")
    if force and cached_only:
        raise ValueError("force and cached_only exclude each other")
    from largekernel.data import dataset_info

    for data in datasets:
        dataset_info(data)  # unknown spec: ValueError listing the valid ones, before any training
    base = Path(base_config) if base_config is not None else base_config_path()
    if not base.is_file():
        raise FileNotFoundError(f"base_config not found: {base}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    all_overrides = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    jobs = [(data, k) for data in datasets for k in ks]
    runs, missing = [], []
    for data, k in progress_bar(jobs, total=len(jobs), desc="kernel-size runs", disable=not progress):
        run_dir = out / data.replace(":", "_").replace("/", "_") / f"k{k}"
        cfg = _run_config(base, data, k, all_overrides)
        cfg_dict = _training_config(cfg)
        erf_extra = {"erf_images": erf_images, "erf_stage": erf_stage}
        cache = run_dir / RESULT_NAME
        cached = None if force else _cached_result(cache, cfg_dict, erf_extra)
        if cached is not None:
            log.info("kernel size %d on %s: cached (%s)", k, data, cache)
            if "cpu_seconds_per_step" not in cached:  # results cached before this field existed
                cached["cpu_seconds_per_step"] = step_cpu_seconds(cfg)
                cache.write_text(json.dumps(cached, indent=2), encoding="utf-8")
            runs.append(cached)
            continue
        if cached_only:
            log.warning("kernel size %d on %s: no cached result for this config; skipped", k, data)
            missing.append({"data": data, "kernel_size": k})
            continue
        log.info("kernel size %d on %s: training -> %s", k, data, run_dir)
        from largekernel.train import apply_overrides

        cfg = apply_overrides(cfg, [f"output={run_dir}", f"quiet={'false' if progress else 'true'}",
                                    f"resume={'true' if _prepare_run_dir(run_dir, cfg_dict, force) else 'false'}"])
        summary = train(cfg)
        steps = max(1, int(summary["steps"]))
        loaded = load_trained_model(run_dir)
        images = _erf_images(data, cfg.image_size, erf_images)
        field_ = erf(loaded.model, images, stage=erf_stage, label=f"{data} K={k}")
        result = {
            "data": data, "kernel_size": k, "top1": float(summary["final"]["top1"]),
            "steps": steps, "epochs": summary.get("epochs"), "train_seconds": float(summary["train_seconds"]),
            "seconds_per_step": float(summary["train_seconds"]) / steps,
            "cpu_seconds_per_step": step_cpu_seconds(cfg), "params": summary.get("params"),
            "erf": field_.to_dict(), "run_dir": str(run_dir), "fingerprint": _fingerprint(cfg_dict, erf_extra),
            "config": cfg_dict,
        }
        field_.plot(run_dir / "erf.png")
        run_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result, indent=2), encoding="utf-8")
        runs.append(result)
    result = ExperimentResult(runs, out, ks, tuple(datasets),
                              {"quick": quick, "overrides": list(all_overrides), "base_config": str(base),
                               "erf_images": erf_images, "erf_stage": erf_stage, "missing": missing})
    from largekernel.bench.report import write_json

    write_json(out / "kernel_size.json", result.to_dict())
    plot_kernel_size_experiment(result, out / "kernel_size.png", threshold)
    return result


def plot_kernel_size_experiment(result: ExperimentResult, path: str | Path, threshold: float = 0.5) -> None:
    """Three panels against kernel size: test accuracy, ERF area ratio, training time per step."""
    from largekernel.analysis.plotting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    key = f"{threshold:g}"
    for data in result.datasets:
        runs = sorted((r for r in result.runs if r["data"] == data), key=lambda r: r["kernel_size"])
        ks = [r["kernel_size"] for r in runs]
        axes[0].plot(ks, [100 * r["top1"] for r in runs], "o-", label=data)
        axes[1].plot(ks, [r["erf"]["area_ratios"][key]["area_ratio"] for r in runs], "o-", label=data)
        axes[2].plot(ks, [1e3 * r["cpu_seconds_per_step"] for r in runs], "o-", label=data)
    for ax, title in zip(axes, ("test top-1 (%)", f"ERF area ratio (t={key})", "train step, CPU ms (1 thread)")):
        ax.set_xlabel("kernel size K")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(list(result.kernel_sizes))
    axes[0].legend(fontsize=8)
    fig.suptitle("kernel-size experiment" + (" (--quick)" if result.meta.get("quick") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("wrote %s", path)
