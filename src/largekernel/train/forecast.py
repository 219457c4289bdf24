"""Forecasting runs: a 1-D backbone whose head outputs the next ``H`` values, trained with MSE.

``largekernel train`` is a classification loop; forecasting needs a regression loss and
different metrics, so it has this small loop of its own. One command per run::

    python -m largekernel.train.forecast --config src/largekernel/configs/forecast_airline_k13.yaml

The config keys: ``model``, ``model_kwargs`` (e.g. ``spatial_dims: 1``), ``data`` (``airline`` or
``long-horizon``), ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``, ``threads``,
``accelerate``, ``output`` (optional directory for ``metrics.json``). The summary reports test MSE
and MAE on the standardised scale next to two model-free baselines (repeat the last value;
repeat the last season).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn import functional as F
from torch.utils.data import DataLoader

from largekernel.data.forecasting import FORECAST_DATASETS, build_forecast

__all__ = ["FORECAST_KEYS", "run_forecast", "main"]

log = logging.getLogger(__name__)

FORECAST_KEYS = {
    "model": "unireplknet_a", "model_kwargs": {}, "data": "airline", "epochs": 50, "batch_size": 16,
    "lr": 2e-3, "weight_decay": 0.05, "seed": 0, "threads": 1, "accelerate": True, "output": None,
}


def _baselines(ds, season: int) -> dict[str, float]:
    xs = torch.stack([ds[i][0][0] for i in range(len(ds))])
    ys = torch.stack([ds[i][1] for i in range(len(ds))])
    h = ys.shape[1]
    last = xs[:, -1:].expand_as(ys)
    reps = math.ceil(h / season)
    seasonal = xs[:, -season:].repeat(1, reps)[:, :h]
    return {"naive_last_mse": float(F.mse_loss(last, ys)), "seasonal_naive_mse": float(F.mse_loss(seasonal, ys))}


def run_forecast(config: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one forecasting run; returns the summary (also written to ``output``).

    Raises:
        ValueError: Unknown config keys (named) or data set.

    Example:
        >>> summary = run_forecast({"data": "airline", "epochs": 1, "model_kwargs": {  # doctest: +SKIP
        ...     "spatial_dims": 1, "depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32],
        ...     "kernel_sizes": [[13], [13], [13], [13]]}})
    """
    unknown = set(config) - set(FORECAST_KEYS)
    if unknown:
        raise ValueError(f"unknown forecasting config key(s) {sorted(unknown)}; valid: {sorted(FORECAST_KEYS)}")
    cfg = {**FORECAST_KEYS, **config}
    if cfg["data"] not in FORECAST_DATASETS:
        raise ValueError(f"data must be one of {sorted(FORECAST_DATASETS)}, got {cfg['data']!r}")
    from largekernel.models.registry import create_model

    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    input_len, horizon, season = FORECAST_DATASETS[cfg["data"]]
    train_set, test_set = build_forecast(cfg["data"], "train"), build_forecast(cfg["data"], "test")
    torch.manual_seed(int(cfg["seed"]))
    kwargs = {"in_chans": 1, "num_classes": horizon, **dict(cfg["model_kwargs"])}
    model = create_model(cfg["model"], **kwargs)
    if cfg["accelerate"]:
        from largekernel.nn.acceleration import accelerate

        accelerate(model)
    params = sum(p.numel() for p in model.parameters())
    loader = DataLoader(train_set, batch_size=int(cfg["batch_size"]), shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(int(cfg["seed"])))
    total = max(1, int(cfg["epochs"]) * len(loader))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg["lr"]), total_steps=total, pct_start=0.05)
    model.train()
    start = time.perf_counter()
    for _ in range(int(cfg["epochs"])):
        for x, y in loader:
            loss = F.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        xs = torch.stack([test_set[i][0] for i in range(len(test_set))])
        ys = torch.stack([test_set[i][1] for i in range(len(test_set))])
        pred = model(xs)
    summary = {
        "data": cfg["data"], "model": cfg["model"], "model_kwargs": kwargs, "params": params,
        "input_len": input_len, "horizon": horizon, "train_windows": len(train_set),
        "test_windows": len(test_set), "train_seconds": seconds, "steps": total,
        "test_mse": float(F.mse_loss(pred, ys)), "test_mae": float(F.l1_loss(pred, ys)),
        **_baselines(test_set, season),
    }
    if cfg["output"]:
        out = Path(cfg["output"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info("forecast %s: test MSE %.4f (naive %.4f, seasonal naive %.4f), %d params, %.1f s",
             cfg["data"], summary["test_mse"], summary["naive_last_mse"], summary["seasonal_naive_mse"],
             params, seconds)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m largekernel.train.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file with the keys listed in the module doc")
    parser.add_argument("--output", help="directory for metrics.json (overrides the config)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = yaml.safe_load(Path(args.config).read_text()) or {}
        if args.output:
            config["output"] = args.output
        if args.epochs is not None:
            config["epochs"] = args.epochs
        summary = run_forecast(config)
    except (ValueError, TypeError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    print(json.dumps({k: summary[k] for k in ("data", "params", "test_mse", "naive_last_mse", "seasonal_naive_mse", "train_seconds")}))  # noqa: T201 - CLI output
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
