"""The compiled library is never loaded from a place another user can write (issue 11)."""

from __future__ import annotations

import logging
import os
import pathlib
import stat
import subprocess

import pytest

from largekernel.ops.cpu_kernels import build

pytestmark = pytest.mark.skipif(build.find_compiler() is None, reason="no C compiler")

# a "library" someone else planted under the expected name: right ABI, plus a marker symbol
PLANTED_C = """
int lk_dwconv_abi_version(void) { return %d; }
int lk_planted_marker(void) { return 1234; }
""" % build.ABI_VERSION


def _plant(path: pathlib.Path) -> None:
    src = path.with_suffix(".c")
    src.write_text(PLANTED_C)
    subprocess.run([build.find_compiler(), "-shared", "-fPIC", "-o", str(path), str(src)], check=True)
    src.unlink()


def test_private_dir_checks(tmp_path):
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    build.check_private_dir(good)
    bad = tmp_path / "bad"
    bad.mkdir()
    os.chmod(bad, 0o777)
    with pytest.raises(build.InsecurePathError, match="writable by group or others"):
        build.check_private_dir(bad)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(build.InsecurePathError, match="symlink"):
        build.check_private_dir(link)
    inner = bad / "inner"  # a private directory inside a directory anyone can write
    inner.mkdir(mode=0o700)
    with pytest.raises(build.InsecurePathError, match="writable by group or others"):
        build.check_private_dir(inner)


@pytest.mark.skipif(os.getuid() != 0, reason="changing a directory's owner needs root")
def test_dir_owned_by_another_user_is_rejected(tmp_path):
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 4321, 4321)
    with pytest.raises(build.InsecurePathError, match="owned by uid 4321"):
        build.check_private_dir(other)


def test_file_checks(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    f = d / "lib.so"
    f.write_bytes(b"x")
    os.chmod(f, 0o700)
    build.check_private_file(f)
    os.chmod(f, 0o766)
    with pytest.raises(build.InsecurePathError, match="writable by group or others"):
        build.check_private_file(f)
    os.chmod(f, 0o700)
    (d / "alias.so").symlink_to(f)
    with pytest.raises(build.InsecurePathError, match="not a regular file"):
        build.check_private_file(d / "alias.so")


def test_cache_directories_are_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(tmp_path / "fresh" / "cache"))
    lib = build.load()
    assert lib.lk_dwconv_abi_version() == build.ABI_VERSION
    for d in (tmp_path / "fresh", tmp_path / "fresh" / "cache", tmp_path / "fresh" / "cache" / "cpu_kernels"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    (so,) = (tmp_path / "fresh" / "cache" / "cpu_kernels").glob("lk_dwconv-*.so")
    assert stat.S_IMODE(os.stat(so).st_mode) & 0o022 == 0


def test_planted_library_in_a_shared_cache_is_never_loaded(tmp_path, monkeypatch, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone may write here (and plant a library under the expected name)
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(shared))
    target = build.library_path(build.find_compiler())
    target.parent.mkdir(parents=True)
    os.chmod(target.parent, 0o777)
    _plant(target)
    with caplog.at_level(logging.WARNING):
        lib = build.load()
    assert not hasattr(lib, "lk_planted_marker")  # the real kernels, compiled privately
    assert hasattr(lib, "lk_dwconv_abi_version")
    assert "not using the kernel cache" in caplog.text


def test_unwritable_cache_never_loads_a_file_from_the_old_predictable_fallback(tmp_path, monkeypatch):
    # the cache cannot be created (its parent is a file); the loader used to fall back to
    # $TMPDIR/largekernel-<uid>/<name> and load whatever was there
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    target = build.library_path(build.find_compiler())
    planted = tmp_path / "tmp" / f"largekernel-{os.getuid()}" / target.name
    planted.parent.mkdir(mode=0o700)
    _plant(planted)
    lib = build.load()
    assert not hasattr(lib, "lk_planted_marker")
    assert hasattr(lib, "lk_dwconv_abi_version")
    # and the private build directory is gone after loading
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [planted.parent.name]


def test_group_writable_library_file_is_not_loaded(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LARGEKERNEL_CACHE_DIR", str(cache))
    target = build.library_path(build.find_compiler())
    target.parent.mkdir(parents=True, mode=0o700)
    _plant(target)
    os.chmod(target, 0o775)
    lib = build.load()
    assert not hasattr(lib, "lk_planted_marker")
