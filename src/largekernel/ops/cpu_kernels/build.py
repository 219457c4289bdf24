"""Compile the C kernels on first use and load them with :mod:`ctypes`.

The shared library is cached in ``$LARGEKERNEL_CACHE_DIR`` (or ``~/.cache/largekernel``) under a
name derived from a hash of the sources, the flags, the compiler version and the host CPU, so a
stale or foreign binary is never loaded. It is compiled to a private temporary file and then
moved into place with :func:`os.replace`, which is atomic: concurrent processes (pytest workers,
DDP ranks) may compile the same library at once, and every one of them loads a complete file.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

__all__ = ["SOURCES", "CFLAGS", "cache_dir", "find_compiler", "library_path", "build", "load"]

log = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).resolve().parent
#: C sources compiled into the library (the first is the translation unit; the others are included).
SOURCES: tuple[str, ...] = ("dwconv.c", "dwconv_impl.c")
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
#: Expected value of ``lk_dwconv_abi_version()``.
ABI_VERSION = 2
_COMPILE_TIMEOUT = 120.0


def cache_dir() -> pathlib.Path:
    """Directory holding compiled libraries (``$LARGEKERNEL_CACHE_DIR`` or ``~/.cache/largekernel``)."""
    root = os.environ.get("LARGEKERNEL_CACHE_DIR")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "largekernel"
    return base / "cpu_kernels"


def find_compiler() -> str | None:
    """Path of the C compiler to use (``$CC``, else ``cc``, ``gcc``, ``clang``), or ``None``."""
    candidates = [os.environ.get("CC")] if os.environ.get("CC") else []
    candidates += ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def _compiler_version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False)
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
    digest.update(" ".join(CFLAGS).encode())
    digest.update(_compiler_version(compiler).encode())
    digest.update(_cpu_signature().encode())
    return cache_dir() / f"lk_dwconv-{digest.hexdigest()[:20]}.so"


def build(compiler: str, target: pathlib.Path) -> pathlib.Path:
    """Compile the sources into ``target`` atomically (temp file in the same directory + replace).

    Raises:
        RuntimeError: the compiler failed (its output is in the message).
        OSError: the cache directory is not writable.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *CFLAGS, "-o", tmp, str(_HERE / SOURCES[0])]
        log.debug("compiling native kernels: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
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
    if not target.exists():
        try:
            build(compiler, target)
        except OSError as err:
            # read-only home or cache: fall back to a private temporary directory
            fallback = pathlib.Path(tempfile.gettempdir()) / f"largekernel-{os.getuid()}" / target.name
            log.debug("cache %s not writable (%s); using %s", target.parent, err, fallback)
            target = fallback if fallback.exists() else build(compiler, fallback)
    lib = ctypes.CDLL(str(target))
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
    return lib
