"""The kernel-size experiment: a quick run end to end, its cache, and its arguments."""

from __future__ import annotations

import json

import pytest

import largekernel.train
from largekernel.analysis.experiment import run_kernel_size_experiment


def test_quick_run_caches_results(tmp_path, monkeypatch):
    result = run_kernel_size_experiment(tmp_path, quick=True, datasets=["digits"], kernel_sizes=[3, 13],
                                        erf_images=4, progress=False)
    assert [(r["data"], r["kernel_size"]) for r in result.runs] == [("digits", 3), ("digits", 13)]
    for run in result.runs:
        assert 0.0 <= run["top1"] <= 1.0 and run["seconds_per_step"] > 0 and run["cpu_seconds_per_step"] > 0
        assert run["config"]["model_kwargs"]["kernel_sizes"] == [[run["kernel_size"]] * 2] * 4
        assert set(run["erf"]["area_ratios"]) == {"0.2", "0.3", "0.5", "0.99"}
    doc = json.loads((tmp_path / "kernel_size.json").read_text())
    assert len(doc["runs"]) == 2
    assert (tmp_path / "kernel_size.png").stat().st_size > 1000
    assert "| digits | 13 |" in result.table()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(largekernel.train, "train", no_training)
    again = run_kernel_size_experiment(tmp_path, quick=True, datasets=["digits"], kernel_sizes=[3, 13],
                                       erf_images=4, progress=False)
    assert [r["top1"] for r in again.runs] == [r["top1"] for r in result.runs]
    # a changed config is not served from the cache
    with pytest.raises(AssertionError, match="trained again"):
        run_kernel_size_experiment(tmp_path, quick=True, datasets=["digits"], kernel_sizes=[3], erf_images=4,
                                   overrides=["seed=1"], progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kernel_sizes"):
        run_kernel_size_experiment(tmp_path, kernel_sizes=[4])
    with pytest.raises(ValueError, match="unknown data set"):
        run_kernel_size_experiment(tmp_path, datasets=["nope"], kernel_sizes=[3])
    with pytest.raises(ValueError, match="datasets"):
        run_kernel_size_experiment(tmp_path, datasets="digits", kernel_sizes=[3])
    with pytest.raises(ValueError, match="threshold"):
        run_kernel_size_experiment(tmp_path, datasets=["digits"], kernel_sizes=[3], threshold=0.4)
    with pytest.raises(ValueError, match="cached_only"):
        run_kernel_size_experiment(tmp_path, datasets=["digits"], kernel_sizes=[3], force=True, cached_only=True)


class _Crash(Exception):
    """Stands in for a process killed right after a checkpoint."""


def _crash_after_step(monkeypatch, step):
    from largekernel.train import testing_hooks

    def hook(at):
        if at == step:
            raise _Crash(at)

    monkeypatch.setattr(testing_hooks, "after_checkpoint", hook)


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def test_an_interrupted_run_continues_where_it_stopped(tmp_path, monkeypatch, caplog):
    import logging

    import torch

    args = dict(quick=True, datasets=["digits"], kernel_sizes=[3], erf_images=2, progress=False,
                overrides=["checkpoint_every=2"])
    reference = run_kernel_size_experiment(tmp_path / "whole", **args).runs[0]

    _crash_after_step(monkeypatch, 4)
    with pytest.raises(_Crash):
        run_kernel_size_experiment(tmp_path / "cut", **args)
    run_dir = tmp_path / "cut" / "digits" / "k3"
    assert not (run_dir / "result.json").exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="largekernel"):
        resumed = run_kernel_size_experiment(tmp_path / "cut", **args).runs[0]
    assert "resuming the interrupted run" in caplog.text and "step_00000004.pt" in caplog.text
    # the trainer resumes exactly: the same weights and accuracy as the run that never stopped
    assert resumed["top1"] == reference["top1"] and resumed["steps"] == reference["steps"] == 6
    a, b = _weights(tmp_path / "whole" / "digits" / "k3"), _weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_of_another_config_are_never_resumed(tmp_path, monkeypatch, caplog):
    import logging

    args = dict(quick=True, datasets=["digits"], kernel_sizes=[3], erf_images=2, progress=False)
    _crash_after_step(monkeypatch, 2)
    with pytest.raises(_Crash):
        run_kernel_size_experiment(tmp_path, overrides=["checkpoint_every=2"], **args)
    with open(tmp_path / "digits" / "k3" / "metrics.jsonl", "a") as f:  # the abandoned run's event log
        f.write(json.dumps({"kind": "discarded"}) + "\n")
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="largekernel"):
        run = run_kernel_size_experiment(tmp_path, overrides=["checkpoint_every=2", "seed=1"], **args).runs[0]
    assert "another config" in caplog.text and "resuming" not in caplog.text
    assert run["steps"] == 6 and run["config"]["seed"] == 1
    events = [json.loads(line) for line in (tmp_path / "digits" / "k3" / "metrics.jsonl").read_text().splitlines()]
    assert events and not any(e.get("kind") == "discarded" for e in events)  # only the new run's events


def test_same_training_tolerates_options_added_later():
    from largekernel.analysis.experiment import same_training
    from largekernel.train.config import TrainConfig

    now = TrainConfig().to_dict()
    older = {k: v for k, v in now.items() if k not in ("ema", "grad_checkpointing")}  # before they existed
    assert same_training(older, now) and same_training(now, older)
    assert not same_training({**older, "ema": True}, now)  # a non-default value is a different run
    assert not same_training({**now, "removed_option": 1}, now)  # an option that no longer exists
    assert same_training({**now, "output": "a", "quiet": True}, {**now, "output": "b"})  # not training
    assert same_training({**now, "betas": (0.9, 0.999)}, {**now, "betas": [0.9, 0.999]})


def test_cache_survives_new_config_options_but_not_new_erf_settings(tmp_path, monkeypatch, capsys):
    from largekernel.analysis.experiment import _fingerprint

    args = dict(quick=True, datasets=["digits"], kernel_sizes=[3], progress=False)
    first = run_kernel_size_experiment(tmp_path, erf_images=2, **args).runs[0]
    cache = tmp_path / "digits" / "k3" / "result.json"
    doc = json.loads(cache.read_text())
    # as if written before TrainConfig had `grad_checkpointing` (default False)
    del doc["config"]["grad_checkpointing"]
    doc["fingerprint"] = _fingerprint(doc["config"], {"erf_images": 2, "erf_stage": -1})
    cache.write_text(json.dumps(doc))

    def no_training(*a, **k):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(largekernel.train, "train", no_training)
    again = run_kernel_size_experiment(tmp_path, erf_images=2, **args).runs[0]
    assert again["top1"] == first["top1"]
    with pytest.raises(AssertionError, match="trained again"):  # other ERF settings: measured again
        run_kernel_size_experiment(tmp_path, erf_images=3, **args)

    # --cached-only: what has finished so far, the rest listed as missing, nothing trained
    partial = run_kernel_size_experiment(tmp_path, erf_images=2, cached_only=True,
                                         **{**args, "kernel_sizes": [3, 13]})
    assert [r["kernel_size"] for r in partial.runs] == [3]
    assert partial.meta["missing"] == [{"data": "digits", "kernel_size": 13}]
    assert json.loads((tmp_path / "kernel_size.json").read_text())["missing"] == partial.meta["missing"]
    from largekernel.cli import main

    assert main(["experiment", "kernel-size", "--quick", "--cached-only", "--kernel-sizes", "3,13", "--data", "digits",
                 "--erf-images", "2", "--output", str(tmp_path)]) == 0
    assert "not run yet (no cached result): digits K=13" in capsys.readouterr().out
