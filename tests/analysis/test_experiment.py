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


def test_interrupted_runs_resume_only_with_the_same_config(tmp_path):
    from largekernel.analysis.experiment import _prepare_run_dir

    run = tmp_path / "k13"
    assert _prepare_run_dir(run, "abc", force=False) is False  # fresh
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_00000005.pt").write_bytes(b"x")
    assert _prepare_run_dir(run, "abc", force=False) is True  # same config: continue it
    assert _prepare_run_dir(run, "abc", force=True) is False  # --force: start again, stale files gone
    assert not (run / "checkpoints").exists()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_00000005.pt").write_bytes(b"x")
    assert _prepare_run_dir(run, "other", force=False) is False  # changed config: never resumed
    assert not (run / "checkpoints").exists()
