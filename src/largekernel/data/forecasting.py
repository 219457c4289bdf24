"""Forecasting data (offline): the airline passengers series from aeon's wheel and a generated
long-horizon series, cut into (input window, horizon) pairs with a chronological split.

* ``airline`` -- 144 monthly totals (1949-1960). Log-transformed, then standardised with the
  training part's mean and standard deviation. Windows of 36 months predict the next 12; the test
  windows are the 13 rolling origins whose targets lie in the last 24 months (1959-1960), training
  windows end before them.
* ``long-horizon`` -- 6000 steps of a generated series with three seasonalities (periods 24, 168
  and 672 steps, e.g. hours/weeks/4 weeks), a slow trend and AR(1) noise. Windows of 720 steps
  predict the next 96, the long-input/long-horizon setting of LTSF benchmarks; the last 20 % of
  the series (and 10 % before it) give the test (and validation) windows. A long period (672) is
  only visible to a model whose receptive field spans it.

Targets and inputs are on the standardised scale; MSE/MAE are reported there, as in LTSF papers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from largekernel.data.base import check_split

__all__ = ["FORECAST_DATASETS", "ForecastWindows", "build_forecast", "load_airline", "generate_long_horizon"]

#: name -> (input length, horizon, season used by the seasonal-naive baseline)
FORECAST_DATASETS = {"airline": (36, 12, 12), "long-horizon": (720, 96, 168)}


def load_airline() -> np.ndarray:
    """The 144 monthly airline passenger totals bundled in aeon (no download).

    Example:
        >>> load_airline()[:3].tolist()
        [112.0, 118.0, 132.0]
    """
    from aeon.datasets import load_airline as _load

    return np.asarray(_load(), dtype=np.float64)


def generate_long_horizon(length: int = 6000, seed: int = 0) -> np.ndarray:
    """A long series with daily/weekly/4-weekly seasonality (24, 168, 672), trend and AR(1) noise.

    Example:
        >>> generate_long_horizon(1000).shape
        (1000,)
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    noise = np.zeros(length)
    eps = rng.normal(scale=0.3, size=length)
    for i in range(1, length):
        noise[i] = 0.7 * noise[i - 1] + eps[i]
    season = (
        1.0 * np.sin(2 * np.pi * t / 24)
        + 0.8 * np.sin(2 * np.pi * t / 168 + 1.0)
        + 1.5 * np.sign(np.sin(2 * np.pi * t / 672))  # a square wave: the long period
    )
    return 10 + 0.0005 * t + season + noise


class ForecastWindows(Dataset):
    """``(input (1, L), target (H,))`` pairs from one standardised series.

    Args:
        series: The standardised series.
        starts: Start index of every window.
        input_len: ``L``.
        horizon: ``H``.

    Example:
        >>> ds = ForecastWindows(np.arange(20.0), [0, 5], input_len=8, horizon=4)
        >>> ds[1][0].shape, ds[1][1].tolist()
        (torch.Size([1, 8]), [13.0, 14.0, 15.0, 16.0])
    """

    def __init__(self, series: np.ndarray, starts, input_len: int, horizon: int):
        self.series = torch.as_tensor(np.asarray(series), dtype=torch.float32)
        self.starts = [int(s) for s in starts]
        self.input_len, self.horizon = int(input_len), int(horizon)
        if any(s < 0 or s + input_len + horizon > len(self.series) for s in self.starts):
            raise ValueError("a window runs past the end of the series")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        x = self.series[s : s + self.input_len]
        y = self.series[s + self.input_len : s + self.input_len + self.horizon]
        return x.unsqueeze(0), y


@functools.lru_cache(maxsize=4)
def _prepared(name: str) -> tuple[np.ndarray, dict[str, list[int]]]:
    input_len, horizon, _ = FORECAST_DATASETS[name]
    if name == "airline":
        series = np.log(load_airline())
        n, test_len = len(series), 24
        first_test_target = n - test_len
        train_end = first_test_target  # training targets end before the test period
        starts = {
            "train": list(range(0, train_end - input_len - horizon + 1)),
            "val": [],
            "test": list(range(first_test_target - input_len, n - input_len - horizon + 1)),
        }
    else:
        series = generate_long_horizon()
        n = len(series)
        train_end, val_end = int(0.7 * n), int(0.8 * n)
        span = input_len + horizon
        starts = {
            "train": list(range(0, train_end - span + 1)),
            "val": list(range(train_end - input_len, val_end - span + 1, horizon // 4)),
            "test": list(range(val_end - input_len, n - span + 1, horizon // 4)),
        }
    fit = series[: train_end]
    series = (series - fit.mean()) / fit.std()
    return series, starts


def build_forecast(name: str, split: str) -> ForecastWindows:
    """The ``split`` windows of a forecasting data set (``airline`` or ``long-horizon``).

    Raises:
        ValueError: Unknown name (the message lists them) or a split the data set lacks.

    Example:
        >>> ds = build_forecast("airline", "test")
        >>> len(ds), ds[0][0].shape, ds[0][1].shape
        (13, torch.Size([1, 36]), torch.Size([12]))
    """
    if name not in FORECAST_DATASETS:
        raise ValueError(f"unknown forecasting data set {name!r}; available: {', '.join(FORECAST_DATASETS)}")
    series, starts = _prepared(name)
    if not starts[check_split(split)]:
        raise ValueError(f"split={split!r}: the {name!r} data set has no such split (use train/test)")
    input_len, horizon, _ = FORECAST_DATASETS[name]
    return ForecastWindows(series, starts[split], input_len, horizon)
