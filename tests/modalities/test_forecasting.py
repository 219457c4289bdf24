"""Forecasting data (airline from aeon, generated long-horizon) and the small MSE training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from largekernel.data.forecasting import build_forecast, generate_long_horizon, load_airline
from largekernel.train.forecast import main as forecast_main
from largekernel.train.forecast import run_forecast

TINY = {"spatial_dims": 1, "stem_stride": 2, "depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32],
        "kernel_sizes": [[13], [7], [3], [3]]}


def test_airline_windows_are_the_log_standardised_series():
    raw = np.log(load_airline())
    assert len(raw) == 144
    mu, sd = raw[:120].mean(), raw[:120].std()  # statistics of the part before the test period
    test = build_forecast("airline", "test")
    assert len(test) == 13
    x, y = test[len(test) - 1]
    np.testing.assert_allclose(y.numpy(), (raw[-12:] - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x[0].numpy(), (raw[-48:-12] - mu) / sd, rtol=1e-5, atol=1e-5)
    train = build_forecast("airline", "train")
    last_x, last_y = train[len(train) - 1]
    np.testing.assert_allclose(last_y.numpy()[-1], (raw[119] - mu) / sd, rtol=1e-5)  # no test month in training


def test_long_horizon_series_has_its_long_period():
    s = generate_long_horizon(4000)
    s = s - np.convolve(s, np.ones(672) / 672, mode="same")
    spec = np.abs(np.fft.rfft(s[672:-672]))
    freqs = np.fft.rfftfreq(len(s) - 1344)
    for period in (24, 168, 672):
        k = np.argmin(np.abs(freqs - 1 / period))
        assert spec[k] > 5 * np.median(spec)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown forecasting data set 'sunspots'"):
        build_forecast("sunspots", "train")
    with pytest.raises(ValueError, match=r"unknown forecasting config key\(s\) \['epoch'\]"):
        run_forecast({"epoch": 3})


def test_one_command_run_writes_metrics(tmp_path):
    torch.set_num_threads(1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"data": "airline", "epochs": 2, "model_kwargs": TINY}))  # JSON is YAML
    assert forecast_main(["--config", str(cfg), "--output", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["test_windows"] == 13 and m["horizon"] == 12 and np.isfinite(m["test_mse"])
    # the seasonal-naive baseline, recomputed by hand
    test = build_forecast("airline", "test")
    err = [((test[i][0][0, -12:] - test[i][1]) ** 2).mean().item() for i in range(len(test))]
    assert m["seasonal_naive_mse"] == pytest.approx(float(np.mean(err)), rel=1e-5)
