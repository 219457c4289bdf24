"""``largekernel.utils.atomic``: the failure paths of atomic writes and of orphan clean-up."""

from __future__ import annotations

import errno
import os
import pathlib
import time

import pytest

from largekernel.utils import atomic
from largekernel.utils.atomic import atomic_write, default_file_mode, remove_orphan_temp_files


def test_failed_write_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "eval.json"

    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    with pytest.raises(OSError) as exc:
        atomic_write(target, full_disk)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # neither the target nor the temporary file


def test_an_existing_file_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"new but incomplete")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="writer crashed"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_writing_onto_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        atomic_write(tmp_path / "d", lambda f: f.write(b"x"))


def test_old_style_temp_files_are_removed_only_when_over_an_hour_old(tmp_path):
    stale = tmp_path / ".model.pt.Ab3dE9xZ.tmp"  # written before pids were recorded in the name
    fresh = tmp_path / ".model.pt.Qw7rT2yU.tmp"
    other = tmp_path / "model.pt"
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert remove_orphan_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])


def test_temp_file_of_another_users_live_process_is_kept(tmp_path, monkeypatch):
    tmp = tmp_path / ".model.pt.lk4242-abc123.tmp"
    tmp.write_bytes(b"x")

    def not_ours(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")  # alive, owned by someone else

    monkeypatch.setattr(atomic.os, "kill", not_ours)
    assert remove_orphan_temp_files(tmp_path) == [] and tmp.exists()


def test_an_orphan_that_cannot_be_removed_is_reported_and_skipped(tmp_path, monkeypatch, caplog):
    tmp = tmp_path / ".model.pt.lk4242-abc123.tmp"
    tmp.write_bytes(b"x")
    monkeypatch.setattr(atomic, "_pid_alive", lambda pid: False)
    real_unlink = pathlib.Path.unlink

    def refuse(self, *args, **kwargs):
        if self == tmp:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", refuse)
    assert remove_orphan_temp_files(tmp_path) == []
    assert any("could not remove orphan temporary file" in r.getMessage() for r in caplog.records)


def test_missing_directory_has_no_orphans(tmp_path):
    assert remove_orphan_temp_files(tmp_path / "nope") == []


def test_umask_without_proc_matches_os_umask(monkeypatch):
    expected = os.umask(0o027)  # set a known umask for the test, restore it below
    try:
        real_read_text = pathlib.Path.read_text

        def no_proc(self, *args, **kwargs):
            if str(self) == "/proc/self/status":
                raise OSError(errno.ENOENT, "no /proc")
            return real_read_text(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "read_text", no_proc)
        assert default_file_mode() == 0o666 & ~0o027 == 0o640
    finally:
        os.umask(expected)
