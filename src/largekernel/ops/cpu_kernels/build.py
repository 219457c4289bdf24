"""Compile the C kernels on first use and load them with :mod:`ctypes`.

The shared library is cached in ``$LARGEKERNEL_CACHE_DIR`` (or ``~/.cache/largekernel``) under a
name derived from a hash of the sources, the flags, the compiler version and the host CPU, so a
stale or foreign binary is never loaded. It is compiled to a private temporary file and then
moved into place with :func:`os.replace`, which is atomic: concurrent processes (pytest workers,
DDP ranks) may compile the same library at once, and every one of them loads a complete file.

Loading native code is loading code, so the library is only ever loaded from a directory that no
other user can write: every directory from the filesystem root down to the cache directory must be
owned by root or the current user and not writable by group or others (root-owned sticky
directories such as ``/tmp`` excepted), the cache directories are created with mode 0700, and the
library file itself must be a regular file (not a symlink) owned by the current user and writable
by nobody else. When the cache directory fails these checks the library is compiled into a fresh
private directory (``tempfile.mkdtemp``, unpredictable name, 0700) used by this process only: a
file that someone else placed anywhere is never loaded.

Sanitizers: with ``LARGEKERNEL_SANITIZE=1`` the kernels are compiled with
``-fsanitize=address,undefined`` (cached under a different name). A sanitized library can only be
loaded into a process whose first loaded library is the ASan runtime, so run it as
``LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0 LARGEKERNEL_SANITIZE=1 python -m pytest ...``
(see ``tests/ops/test_sanitizer.py``, which does exactly that for the engine's property tests).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tempfile

__all__ = [
    "SOURCES",
    "CFLAGS",
    "SANITIZE_FLAGS",
    "sanitize_enabled",
    "cache_dir",
    "find_compiler",
    "library_path",
    "build",
    "load",
    "InsecurePathError",
    "check_private_dir",
    "check_private_file",
]

log = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).resolve().parent
#: C sources compiled into the library (the first is the translation unit; the others are included).
SOURCES: tuple[str, ...] = ("dwconv.c", "dwconv_impl.c", "grn_impl.c", "ncw1d_impl.c")
#: Compiler flags. ``-ffp-contract=fast`` is needed because ``-std=c11`` otherwise forbids
#: fusing ``a * b + c`` into FMAs; no ``-ffast-math`` (keeps IEEE semantics otherwise).
CFLAGS: tuple[str, ...] = (
    "-O3",
    "-march=native",
    "-fPIC",
    "-shared",
    "-std=c11",
    "-ffp-contract=fast",
    "-fno-math-errno",
)
#: Extra flags of the sanitizer build (``LARGEKERNEL_SANITIZE=1``); ``-O1`` keeps reports readable.
SANITIZE_FLAGS: tuple[str, ...] = (
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
)
_ENV_SANITIZE = "LARGEKERNEL_SANITIZE"
#: Expected value of ``lk_dwconv_abi_version()``.
ABI_VERSION = 4
_COMPILE_TIMEOUT = 120.0


class InsecurePathError(OSError):
    """A directory or file on the library's path could be written by another user."""


def sanitize_enabled() -> bool:
    """Whether ``LARGEKERNEL_SANITIZE`` asks for the ASan/UBSan build of the kernels."""
    return os.environ.get(_ENV_SANITIZE, "").strip().lower() not in ("", "0", "false", "no", "off")


def _flags() -> tuple[str, ...]:
    return CFLAGS + SANITIZE_FLAGS if sanitize_enabled() else CFLAGS


def cache_dir() -> pathlib.Path:
    """Directory holding compiled libraries (``$LARGEKERNEL_CACHE_DIR`` or ``~/.cache/largekernel``)."""
    root = os.environ.get("LARGEKERNEL_CACHE_DIR")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "largekernel"
    return base.absolute() / "cpu_kernels"


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.getuid())


def check_private_dir(path: pathlib.Path) -> None:
    """Raise :class:`InsecurePathError` unless no other user can write ``path`` or any parent.

    Every directory from ``path`` up to the root must be owned by root or the current user and not
    writable by group or others; a root-owned directory with the sticky bit (``/tmp``) is accepted
    as a parent, since others cannot replace entries they do not own there. ``path`` itself must be
    owned by the current user.
    """
    path = pathlib.Path(os.path.abspath(path))
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise InsecurePathError(f"{path} is not a directory (or is a symlink)")
    if st.st_uid != os.getuid():
        raise InsecurePathError(f"{path} is owned by uid {st.st_uid}, not by the current user ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecurePathError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")
    for parent in path.parents:
        pst = os.stat(parent)  # parents may be symlinks to directories (e.g. /home -> /usr/home)
        if not _trusted_owner(pst):
            raise InsecurePathError(f"{parent} is owned by uid {pst.st_uid} (neither root nor the current user)")
        writable_by_others = pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_root = pst.st_uid == 0 and pst.st_mode & stat.S_ISVTX
        if writable_by_others and not sticky_root:
            raise InsecurePathError(
                f"{parent} is writable by group or others (mode {stat.S_IMODE(pst.st_mode):o}) and not a "
                "root-owned sticky directory"
            )


def check_private_file(path: pathlib.Path) -> None:
    """Raise :class:`InsecurePathError` unless ``path`` is a regular file (not a symlink) owned by
    the current user, writable by nobody else, in a directory that passes :func:`check_private_dir`."""
    check_private_dir(path.parent)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise InsecurePathError(f"{path} is not a regular file (or is a symlink)")
    if st.st_uid != os.getuid():
        raise InsecurePathError(f"{path} is owned by uid {st.st_uid}, not by the current user ({os.getuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecurePathError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def _make_private_dirs(path: pathlib.Path) -> None:
    """Create ``path`` and its missing parents with mode 0700 (existing ones are left as they are)."""
    missing = []
    p = pathlib.Path(os.path.abspath(path))
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass


def find_compiler() -> str | None:
    """Path of the C compiler to use (``$CC``, else ``cc``, ``gcc``, ``clang``), or ``None``."""
    candidates = [os.environ.get("CC")] if os.environ.get("CC") else []
    candidates += ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def _compiler_env() -> dict[str, str]:
    # a sanitizer run preloads the ASan runtime into this process; the compiler must not inherit it
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


def _compiler_version(compiler: str) -> str:
    out = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False, env=_compiler_env()
    )
    return out.stdout.strip()


def _cpu_signature() -> str:
    # -march=native binaries are only valid on a CPU with the same features: key the cache on them
    sig = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features")):
                    sig += line
                if line.strip() == "":
                    break  # first processor is enough
    except OSError:
        sig += platform.processor()
    return sig


def library_path(compiler: str) -> pathlib.Path:
    """Cache path of the library for ``compiler`` on this host (it may not exist yet)."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode())
        digest.update((_HERE / name).read_bytes())
    digest.update(" ".join(_flags()).encode())
    digest.update(_compiler_version(compiler).encode())
    digest.update(_cpu_signature().encode())
    tag = "-asan" if sanitize_enabled() else ""
    return cache_dir() / f"lk_dwconv{tag}-{digest.hexdigest()[:20]}.so"


def build(compiler: str, target: pathlib.Path) -> pathlib.Path:
    """Compile the sources into ``target`` atomically (temp file in the same directory + replace).

    Raises:
        RuntimeError: the compiler failed (its output is in the message).
        OSError: the cache directory is not writable.
    """
    _make_private_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_flags(), "-o", tmp, str(_HERE / SOURCES[0])]
        log.debug("compiling native kernels: %s", " ".join(cmd))
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT, check=False, env=_compiler_env()
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o700)
        os.replace(tmp, target)  # atomic: readers see either no file or a complete one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load() -> ctypes.CDLL:
    """Return the loaded kernel library, compiling it first if it is not cached.

    Raises:
        RuntimeError: no C compiler, compilation failed, or the library has the wrong ABI.
    """
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")
    target = library_path(compiler)
    private = None
    try:
        _make_private_dirs(target.parent)
        check_private_dir(target.parent)
        if not target.exists():
            build(compiler, target)
        check_private_file(target)
    except OSError as err:
        # unwritable or unsafe cache: compile into a fresh private directory for this process only;
        # a pre-existing file elsewhere (e.g. a predictable name under /tmp) is never loaded
        log.warning(
            "largekernel: not using the kernel cache %s (%s); compiling into a private temporary "
            "directory for this process", target.parent, err,
        )
        private = pathlib.Path(tempfile.mkdtemp(prefix="largekernel-"))
        target = build(compiler, private / target.name)
        check_private_file(target)
    lib = ctypes.CDLL(str(target))
    if private is not None:  # the mapping stays valid; leave nothing behind in the temporary directory
        shutil.rmtree(private, ignore_errors=True)
    lib.lk_dwconv_abi_version.restype = ctypes.c_int
    if lib.lk_dwconv_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{target} has ABI {lib.lk_dwconv_abi_version()}, expected {ABI_VERSION}")
    i64p = ctypes.POINTER(ctypes.c_int64)
    for suffix in ("f32", "f64"):
        for name in ("pack", "unpack", "gw_tasks", "fwd_tasks"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.restype = None
            if name in ("pack", "unpack"):
                fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, i64p, ctypes.c_int64, ctypes.c_int64]
            else:
                fn.argtypes = [ctypes.c_void_p] * 3 + [i64p, ctypes.c_int64, ctypes.c_int64]
        # channels-last row kernels (GRN): pointers may be NULL (None) for optional operands
        reduce_fn = getattr(lib, f"rows_reduce_{suffix}")
        reduce_fn.restype = None
        reduce_fn.argtypes = [ctypes.c_void_p] * 4 + [i64p, ctypes.c_int64, ctypes.c_int64]
        combine_fn = getattr(lib, f"rows_combine_{suffix}")
        combine_fn.restype = None
        combine_fn.argtypes = [ctypes.c_void_p] * 6 + [i64p, ctypes.c_int64, ctypes.c_int64]
        # 1-D NCW row kernels: return 0, or 1 when their scratch allocation failed
        for name in ("ncw_fwd", "ncw_gw"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p] * 3 + [i64p, ctypes.c_int64, ctypes.c_int64]
    return lib
