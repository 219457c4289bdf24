"""Training checkpoints (``largekernel.train.checkpointing``): the details a resumed run depends on.

RNG capture must restore every generator's *full* state (python's cached gauss value, numpy's
cached gaussian), pruning must keep the newest files in numeric step order and never the file
just written, the ``latest`` pointer may only name a step file of its own directory, and every
malformed entry of a loaded checkpoint must be refused with the entry named.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import pytest
import torch

from largekernel.errors import CheckpointError, CheckpointNotFoundError
from largekernel.train import checkpointing as ckpt


def _state(v: float, **extra) -> dict:
    return {"model": {"w": torch.full((3,), v)}, "config": {"x": 1}, **extra}


def _steps(run) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))


def test_rng_round_trip_restores_cached_gaussians(tmp_path):
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    # one draw each leaves half a Box-Muller pair cached: python's gauss_next, numpy's has_gauss
    random.gauss(0.0, 1.0)
    np.random.randn()
    assert np.random.get_state()[3] == 1
    state = ckpt.capture_rng_state()
    ckpt.atomic_torch_save({"rng": state}, tmp_path / "r.pt")
    expected = [random.gauss(0.0, 1.0), random.random(), np.random.randn(), np.random.randn(), np.random.rand(),
                torch.rand(2).tolist()]
    random.seed(0)  # move every generator somewhere else
    np.random.seed(0)
    torch.manual_seed(0)
    np.random.randn()
    ckpt.restore_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = [random.gauss(0.0, 1.0), random.random(), np.random.randn(), np.random.randn(), np.random.rand(),
           torch.rand(2).tolist()]
    assert got == expected


def test_rng_state_entries_match_the_generators():
    random.seed(5)
    np.random.seed(5)
    np.random.randn()
    state = ckpt.capture_rng_state()
    py = random.getstate()
    assert state["python"] == [py[0], list(py[1]), py[2]]
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    assert state["numpy"]["kind"] == kind == "MT19937"
    assert state["numpy"]["keys"].dtype == torch.int64
    assert state["numpy"]["keys"].tolist() == keys.astype(np.int64).tolist()
    assert (state["numpy"]["pos"], state["numpy"]["has_gauss"], state["numpy"]["cached_gaussian"]) == (
        pos, has_gauss, cached)
    assert torch.equal(state["torch"], torch.get_rng_state())
    assert "cuda" not in state or torch.cuda.is_available()


def test_default_keep_is_two_and_numeric_step_order(tmp_path):
    for step in (9, 10, 100, 8):  # 8 last: the file just written is never pruned
        ckpt.save_training_checkpoint(_state(float(step)), tmp_path, step=step)
    assert _steps(tmp_path) == ["step_00000008.pt", "step_00000010.pt", "step_00000100.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_00000008.pt"
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000008.pt"


@pytest.mark.parametrize("keep,left", [(1, [7]), (0, [7]), (-3, [7]), (3, [5, 6, 7]), (10, [1, 2, 3, 4, 5, 6, 7])])
def test_keep_counts(tmp_path, keep, left):
    for step in range(1, 8):
        path = ckpt.save_training_checkpoint(_state(float(step)), tmp_path, step=step, keep=keep)
        assert path == tmp_path / "checkpoints" / f"step_{step:08d}.pt"
    assert _steps(tmp_path) == [f"step_{s:08d}.pt" for s in left]
    state = ckpt.load_training_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert torch.equal(state["model"]["w"], torch.full((3,), 7.0))


def test_step_files_ignore_other_names(tmp_path):
    ckpt.save_training_checkpoint(_state(1.0), tmp_path, step=1)
    d = tmp_path / "checkpoints"
    for name in ("step_00000009.pt.bak", "xstep_00000009.pt", "step_.pt", "step_9.pth", "notes.txt"):
        (d / name).write_bytes(b"x")
    (d / "latest").unlink()
    assert ckpt.latest_checkpoint(tmp_path) == d / "step_00000001.pt"
    (d / "step_12.pt").write_bytes(b"x")  # unpadded numbers count by value
    assert ckpt.latest_checkpoint(tmp_path) == d / "step_12.pt"
    assert ckpt.latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert ckpt.latest_checkpoint(tmp_path / "empty") is None


def test_pointer_is_stripped_and_confined_to_its_directory(tmp_path, caplog):
    for step in (1, 2):
        ckpt.save_training_checkpoint(_state(float(step)), tmp_path, step=step, keep=5)
    d = tmp_path / "checkpoints"
    (d / "latest").write_text("step_00000001.pt\n")
    with caplog.at_level(logging.WARNING, logger="largekernel.train.checkpointing"):
        assert ckpt.latest_checkpoint(tmp_path) == d / "step_00000001.pt"
    assert not caplog.records
    # a path outside the directory, a non-step name, undecodable bytes, a directory: use the newest file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "step_00000050.pt").write_bytes(b"x")
    for content in (b"../elsewhere/step_00000050.pt", b"model.pt", b"\xff\xfe\x00", b""):
        (d / "latest").write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="largekernel.train.checkpointing"):
            assert ckpt.latest_checkpoint(tmp_path) == d / "step_00000002.pt", content
        assert "does not name an existing step file" in caplog.text
    (d / "latest").unlink()
    (d / "latest").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == d / "step_00000002.pt"


def test_remove_orphans_in_run_and_checkpoint_directories(tmp_path):
    ckpt.save_training_checkpoint(_state(1.0), tmp_path, step=1)
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
        except ProcessLookupError:
            break
        dead += 1
    orphans = [tmp_path / f".log.txt.lk{dead}-abc123.tmp", tmp_path / "checkpoints" / f".step_00000002.pt.lk{dead}-x9.tmp"]
    live = tmp_path / f".metrics.csv.lk{os.getpid()}-abc.tmp"
    for p in (*orphans, live):
        p.write_bytes(b"partial")
    removed = ckpt.remove_orphans(tmp_path)
    assert sorted(removed) == sorted(orphans)
    assert live.exists() and not any(p.exists() for p in orphans)
    assert _steps(tmp_path) == ["step_00000001.pt"]
    assert ckpt.remove_orphans(tmp_path / "nothing") == []


def test_load_maps_to_cpu_and_returns_the_state(tmp_path):
    state = _state(2.5, optimizer={"lr": 0.1}, ema={"model": {"w": torch.ones(3)}},
                    model_config={"name": "unireplknet_a", "kwargs": {"num_classes": 3}},
                    data_info={"name": "toy", "num_classes": 3}, progress={"step": 4})
    path = ckpt.save_training_checkpoint(state, tmp_path, step=4)
    loaded = ckpt.load_training_checkpoint(path)
    assert set(loaded) == set(state)
    assert loaded["model"]["w"].device.type == "cpu" and torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["optimizer"] == {"lr": 0.1} and loaded["progress"] == {"step": 4}
    assert loaded["model_config"] == state["model_config"]
    meta = ckpt.load_training_checkpoint(str(path), map_location="meta")
    assert meta["model"]["w"].device.type == "meta"
    ckpt.load_training_checkpoint(ckpt.atomic_torch_save(_state(1.0, model_config=None, data_info=None, ema=None),
                                                         tmp_path / "nones.pt"))


@pytest.mark.parametrize("state,match", [
    (["model", "config"], "not a largekernel training checkpoint"),
    ({"model": {"w": torch.zeros(1)}}, "not a largekernel training checkpoint"),
    ({"config": {}}, "not a largekernel training checkpoint"),
    ({"model": [torch.zeros(1)], "config": {}}, "entry 'model' must map parameter names to tensors"),
    ({"model": {"w": torch.zeros(1), "step": 3}, "config": {}}, "entry 'model' must map parameter names to tensors"),
    ({"model": {"w": torch.zeros(1)}, "config": [1]}, "entry 'config' must be a mapping, got list"),
    (_state(0.0, model_config={"name": "", "kwargs": {}}), "invalid entry 'model_config'"),
    (_state(0.0, model_config={"kwargs": {}}), "invalid entry 'model_config'"),
    (_state(0.0, data_info={"num_classes": -2}), "invalid entry 'data_info'"),
    (_state(0.0, ema={"w": torch.zeros(3)}), "entry 'ema' must hold a 'model' mapping of tensors"),
    (_state(0.0, ema=[torch.zeros(3)]), "entry 'ema' must hold a 'model' mapping of tensors"),
    (_state(0.0, ema={"model": {"w": 1.0}}), "entry 'ema' must hold a 'model' mapping of tensors"),
])
def test_malformed_entries_are_named(tmp_path, state, match):
    path = ckpt.atomic_torch_save(state, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=match) as info:
        ckpt.load_training_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found"):
        ckpt.load_training_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointNotFoundError):
        ckpt.load_training_checkpoint(tmp_path)  # a directory is not a checkpoint file
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        ckpt.load_training_checkpoint(empty)
    assert str(info.value) == f"cannot read checkpoint {empty}: EOFError: "  # torch's EOFError has no message
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    try:
        torch.load(garbage, weights_only=True)
    except Exception as err:  # noqa: BLE001 - the reference message
        first = str(err).splitlines()[0]
        assert first and len(str(err).splitlines()) > 1  # a multi-line message: only its first line is kept
        reference = f"cannot read checkpoint {garbage}: {type(err).__name__}: {first}"
    with pytest.raises(CheckpointError) as info:
        ckpt.load_training_checkpoint(garbage)
    assert str(info.value) == reference


def test_cuda_generators_are_captured_and_restored_when_present(monkeypatch):
    """The CUDA branch, on a machine without CUDA: torch.cuda's functions are stood in for."""
    cuda_states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = ckpt.capture_rng_state()
    assert state["cuda"] is cuda_states
    ckpt.restore_rng_state(state)
    assert restored == [cuda_states]
    # a checkpoint written without CUDA restores only the CPU generators
    del state["cuda"]
    ckpt.restore_rng_state(state)
    assert restored == [cuda_states]
    # CUDA present but never initialised: nothing to capture (and CUDA is not initialised for it)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in ckpt.capture_rng_state()
    # a CUDA checkpoint restored where there is no CUDA: the CPU generators only
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt.restore_rng_state({**state, "cuda": cuda_states})
    assert restored == [cuda_states]
