"""Unwritable outputs, mid-run write failures, checkpoint file modes and orphan temporary files."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
import torch

from largekernel.errors import OutputError
from largekernel.train import checkpointing as ckpt
from largekernel.utils.atomic import atomic_write, remove_orphan_temp_files
from largekernel.utils.output import check_writable

from hardening_helpers import TINY, run_cli


def _leftovers(root):
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith(".tmp"))


def test_output_that_is_a_file_is_one_line_error(tmp_path, caplog):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    code, errors = run_cli(["train", "--output", target, *TINY], caplog)
    assert code == 2
    assert len(errors) == 1 and str(target) in errors[0] and "is a file" in errors[0]
    assert target.read_text() == "not a directory"  # nothing overwritten


@pytest.mark.parametrize("blocker", ["train_checkpoint.pt", "model.safetensors", "checkpoints/latest"])
def test_directory_where_an_artefact_goes_fails_before_training(tmp_path, caplog, blocker):
    out = tmp_path / "run"
    (out / blocker).mkdir(parents=True)
    code, errors = run_cli(["train", "--output", out, *TINY], caplog)
    assert code == 2
    assert len(errors) == 1 and str(out / blocker) in errors[0]
    # refused before the first step: no log, no checkpoint
    assert not (out / "metrics.jsonl").exists()
    assert not list((out / "checkpoints").glob("step_*.pt"))


def test_immutable_output_directory(tmp_path, caplog):
    out = tmp_path / "frozen"
    out.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        code, errors = run_cli(["train", "--output", out, *TINY], caplog)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert code == 2
    assert len(errors) == 1 and str(out) in errors[0] and "not writable" in errors[0]


def test_read_only_output_directory(tmp_path, caplog):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        probe = out / "probe"
        try:
            probe.write_text("x")  # root ignores permission bits
            probe.unlink()
            pytest.skip("running with privileges that ignore read-only permissions")
        except PermissionError:
            pass
        code, errors = run_cli(["train", "--output", out, *TINY], caplog)
    finally:
        out.chmod(0o755)
    assert code == 2 and len(errors) == 1 and str(out) in errors[0]


def test_check_writable_reports_a_failing_write(tmp_path, monkeypatch):
    # the probe really writes: an error from the file system (here simulated) is reported by path
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="not writable: Permission denied") as info:
        check_writable(tmp_path / "run")
    assert info.value.path == tmp_path / "run"


def test_mid_run_write_failure_saves_state_elsewhere(tmp_path, caplog, monkeypatch):
    out = tmp_path / "run"
    rescue_root = tmp_path / "tmp"
    rescue_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_root))
    real = ckpt.atomic_write
    calls = {"n": 0}

    def disk_full_in_run_dir(path, write):
        if str(path).startswith(str(out)) and "step_" in str(path):
            calls["n"] += 1
            if calls["n"] >= 2:  # the second checkpoint: the disk is full half-way through
                def partial(f):
                    f.write(b"half a checkpoint")
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(path, partial)
        return real(path, write)

    monkeypatch.setattr(ckpt, "atomic_write", disk_full_in_run_dir)
    argv = ["train", "--output", out, *TINY, "max_steps=3", "checkpoint_every=1"]
    code, errors = run_cli(argv, caplog)
    assert code == 2
    assert len(errors) == 1
    msg = errors[0]
    assert "No space left on device" in msg and str(out / "checkpoints") in msg and "step 2" in msg
    # nothing half-written in the run directory, and the state after step 2 is safe elsewhere
    assert _leftovers(out) == []
    rescued = list(rescue_root.rglob("step_*.pt"))
    assert len(rescued) == 1 and str(rescued[0].parent.parent) in msg
    state = ckpt.load_training_checkpoint(rescued[0])
    assert state["progress"]["step"] == 2
    assert ckpt.load_training_checkpoint(ckpt.latest_checkpoint(out))["progress"]["step"] == 1


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_checkpoint_mode_follows_umask_like_torch_save(tmp_path, mask):
    old = os.umask(mask)
    try:
        reference = tmp_path / "reference.pt"
        torch.save({"a": torch.zeros(1)}, reference)
        ours = ckpt.atomic_torch_save({"a": torch.zeros(1)}, tmp_path / "ours.pt")
        run = ckpt.save_training_checkpoint({"a": torch.zeros(1)}, tmp_path / "run", step=1)
    finally:
        os.umask(old)
    expected = stat.S_IMODE(reference.stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE(ours.stat().st_mode) == expected
    assert stat.S_IMODE(run.stat().st_mode) == expected


def test_rewriting_keeps_an_existing_files_mode(tmp_path):
    p = tmp_path / "keep.bin"
    atomic_write(p, lambda f: f.write(b"1"))
    p.chmod(0o640)
    atomic_write(p, lambda f: f.write(b"2"))
    assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.read_bytes() == b"2"


_SLOW_WRITER = """
import sys, time
from largekernel.utils.atomic import atomic_write
def write(f):
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def _killed_writer(path):
    """Start a process that is half-way through an atomic write of ``path``; SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return proc.pid


def test_sigkill_orphans_are_removed_at_the_next_start(tmp_path, caplog):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    _killed_writer(out / "checkpoints" / "step_00000001.pt")
    _killed_writer(out / "train_checkpoint.pt")
    assert len(_leftovers(out)) == 2  # what kill -9 leaves behind
    code, errors = run_cli(["train", "--output", out, *TINY], caplog)
    assert code == 0, errors
    assert _leftovers(out) == []


def test_temp_files_of_live_writers_are_kept(tmp_path):
    mine = tmp_path / f".x.pt.lk{os.getpid()}-abc123.tmp"
    mine.write_bytes(b"in progress")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_bytes(b"user file")
    dead_pid = _killed_writer(tmp_path / "y.pt")
    removed = remove_orphan_temp_files(tmp_path)
    assert [p.name for p in removed] == [p.name for p in removed if f"lk{dead_pid}-" in p.name] and len(removed) == 1
    assert mine.exists() and unrelated.exists()  # liveness comes from the pid in the name, not timing
