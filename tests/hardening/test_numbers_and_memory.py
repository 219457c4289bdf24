"""NaN/infinite and out-of-range numbers, and memory estimates made before anything is allocated."""

from __future__ import annotations

import math

import pytest
import torch

from largekernel.cli import build_parser, parse_args
from largekernel.cli.train import build_config
from largekernel.errors import ConfigError, InsufficientMemoryError
from largekernel.train.config import load_config
from largekernel.utils import memory
from largekernel.utils.memory import estimate_training_memory, meta_model

from hardening_helpers import TINY, run_cli


def _config(argv):
    return build_config(parse_args(build_parser(), ["train", *argv]))


@pytest.mark.parametrize("override", [
    "min_lr=nan", "lr=.nan", "lr=inf", "lr=-.inf", "weight_decay=nan", "clip_grad=.inf", "label_smoothing=nan",
    "ema_decay=nan", "mixup=.nan", "cutmix=inf", "warmup_epochs=nan", "momentum=nan", "mixup_prob=nan",
    "drop_path_rate=nan", "betas=[.nan,0.9]", "model_kwargs.drop_path_rate=.nan", "model_kwargs.layer_scale=.inf",
])
def test_non_finite_options_are_refused_by_name(override):
    key = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigError) as info:
        _config([override])
    assert key in str(info.value) and ("finite" in str(info.value) or "NaN" in str(info.value))


@pytest.mark.parametrize("flag", [["--lr", "nan"], ["--min-lr", "inf"], ["--clip-grad", "nan"]])
def test_non_finite_flags_are_refused(flag):
    with pytest.raises(ConfigError, match="finite"):
        _config(flag)


def test_nan_min_lr_run_exits_2_and_writes_nothing(tmp_path, caplog):
    # the reproduction: this used to exit 0 with 112 non-finite tensors
    out = tmp_path / "run"
    code, errors = run_cli(["train", "min_lr=nan", "warmup_epochs=0", "max_steps=1", "--output", out, *TINY],
                           caplog)
    assert code == 2 and len(errors) == 1 and "min_lr" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("override, needle", [
    ("epochs=0", "epochs must be >= 1"), ("batch_size=-3", "batch_size must be >= 1"),
    ("seed=-1", "seed must be >= 0"), ("threads=0", "threads"), ("betas=[0.9,1.0]", "betas.1 must be < 1"),
    ("epochs=true", "not true/false"), ("amp=fp8", "amp must be one of"), ("device=gpu", "device"),
    ("name=../../etc", "name must be a plain name"), ("min_lr=1.0", "min_lr (1.0) must be <= lr"),
    ("label_smoothing=1", "label_smoothing must be < 1"), ("bad_images=ignore", "bad_images"),
])
def test_out_of_range_options_name_key_value_and_expectation(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        _config([override])


def test_valid_strings_are_coerced():
    cfg = _config(["lr=1e-3", "epochs=3.0", "clip_grad=2"])
    assert cfg.lr == 1e-3 and cfg.epochs == 3 and isinstance(cfg.epochs, int) and cfg.clip_grad == 2.0


@pytest.mark.parametrize("argv, needle", [
    (["--limit", "-1"], "limit must be >= 1"), (["--limit", "0"], "limit must be >= 1"),
    (["--batch-size", "0"], "batch_size must be >= 1"), (["--image-size", "-5"], "image_size must be >= 1"),
])
def test_evaluate_rejects_bad_numbers(tiny_run, caplog, argv, needle):
    code, errors = run_cli(["evaluate", tiny_run, *argv, "--output", tiny_run / "e"], caplog)
    assert code == 2 and len(errors) == 1 and needle in errors[0]
    assert not (tiny_run / "e" / "eval.json").exists()


def test_predict_rejects_bad_top_k(tiny_run, caplog):
    code, errors = run_cli(["predict", tiny_run, "x.png", "--top-k", "0"], caplog)
    assert code == 2 and "top_k must be >= 1" in errors[0]


# ------------------------------------------------------------------------------------ memory
def test_training_estimate_matches_a_direct_count():
    # independent reference: a 2-layer net whose activations and parameters are counted by hand
    net = meta_model(lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                                 torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10)))
    est = estimate_training_memory(net, (4, 3, 16, 16), optimizer="adamw")
    params = 3 * 8 * 9 + 8 + 8 * 16 * 16 * 10 + 10
    acts = 4 * (8 * 16 * 16 * 3 + 10)  # conv, relu, flatten outputs, then the logits
    assert est.parameters == 4 * 4 * params
    assert est.activations == 4 * acts and est.inputs == 4 * 4 * 3 * 16 * 16


def test_huge_image_size_is_refused_before_allocation(tmp_path, caplog):
    out = tmp_path / "run"
    code, errors = run_cli(["train", "image_size=100000", "--output", out, *TINY], caplog)
    assert code == 2 and len(errors) == 1
    assert "needs an estimated" in errors[0] and "TiB" in errors[0] and "allow_large=true" in errors[0]
    assert not out.exists()  # refused before the output directory, data or model


def test_estimate_exceeding_available_memory_needs_allow_large(tmp_path, caplog, monkeypatch):
    from largekernel.train.preflight import check_train_memory, estimate_train_memory

    cfg = load_config(None)
    estimate, _ = estimate_train_memory(cfg)
    assert estimate.exact_activations and estimate.total > 0
    # a machine with half the memory the default run needs
    monkeypatch.setattr(memory, "available_memory", lambda device=None: estimate.total // 2)
    with pytest.raises(InsufficientMemoryError) as info:
        check_train_memory(cfg)
    assert info.value.estimate == estimate.total and info.value.available == estimate.total // 2
    cfg.allow_large = True
    check_train_memory(cfg)  # insisted: a warning, no error
    # and through the command line, on a machine with 1 MiB free
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 2**20)
    code, errors = run_cli(["train", "--output", tmp_path / "r", *TINY], caplog)
    assert code == 2 and "needs an estimated" in errors[0] and not (tmp_path / "r").exists()
    code, errors = run_cli(["train", "--output", tmp_path / "r", *TINY, "--force"], caplog)
    assert code == 0, errors


def test_available_memory_reads_meminfo():
    found = memory.available_memory()
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    meminfo = int(fields["MemAvailable"].split()[0]) * 1024
    assert found is not None and 0 < found <= meminfo
    assert not math.isnan(found)


def test_info_with_huge_model_kwargs_is_refused_without_allocating(caplog):
    code, errors = run_cli(["info", "unireplknet_a", "--model-kwargs", '{"dims": [1048576, 1048576, 1048576, 1048576]}'],
                           caplog)
    assert code == 2 and len(errors) == 1 and "needs an estimated" in errors[0]
