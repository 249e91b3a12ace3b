"""Building and caching the compiled libraries: one shared library per C source.

A source (a cell's loops such as `rnnkit/cells/lstm.c`, `flat.c`, or a cell's own source from outside
the package) is compiled through `instantiate.c`, which includes it twice (float and double), with the
system's C compiler (`$CC`, `cc`, `gcc` or `clang`) into a per-user cache (`$RNNKIT_CACHE`, default
`~/.cache/rnnkit/kernels`). The file name is a hash of everything that decides the machine code: the
source, the shared header and the wrapper, the flags, the CPU's feature flags and the platform. So a
changed source builds a new library on first use, with no version number to keep by hand, and processes
building the same library at once each write a temporary file and rename it into place.

Whether the compiled path is used at all is decided here too (`enabled()`): `RNNKIT_FAST=0` or
`set_enabled(False)` turn it off for the process, `reference()` for a block.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = ("instantiate.c", "rnnkit_kernels.h")  # compiled into every library
FLAG_SETS = (
    # libmvec (glibc >= 2.35) gives vectorised tanh; the second set is plain C for other systems.
    ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno",
     "-fno-trapping-math", "-DRNNKIT_MVEC", "-lmvec", "-lm"],
    ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-lm"],
)

_enabled = os.environ.get("RNNKIT_FAST", "1").strip().lower() not in ("0", "false", "no", "off")
_libraries: dict = {}  # source path -> (CDLL or None, why not)
_lock = threading.Lock()


def enabled() -> bool:
    """Whether the compiled path may be used in this process (it may still be unavailable)."""
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the compiled fast path on or off for this process (off: the NumPy reference everywhere)."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def reference():
    """Run the enclosed code on the plain NumPy reference path."""
    global _enabled
    old, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = old


def cpuinfo(field):
    """The first `field` line of /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line
    except OSError:
        pass
    return None


def cache_dir() -> Path:
    root = os.environ.get("RNNKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rnnkit")
    return Path(root) / "kernels"


def library_path(source: Path) -> Path:
    """Where the library built from `source` is cached: named by a hash of what decides its code."""
    h = hashlib.sha256()
    h.update(Path(source).read_bytes())
    for name in SHARED:
        h.update((HERE / name).read_bytes())
    h.update(repr(FLAG_SETS).encode())
    h.update((cpuinfo("flags") or platform.processor()).encode())
    h.update(f"{sys.platform}-{platform.machine()}".encode())
    return cache_dir() / f"{Path(source).stem}-{h.hexdigest()[:16]}.so"


def compile_library(source: Path, out: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in FLAG_SETS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, str(HERE / "instantiate.c"), f"-I{HERE}", f'-DRNNKIT_BODY="{Path(source).resolve()}"',
               "-o", tmp] + flags
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            os.replace(tmp, out)  # atomic: another process may be building the same file
            return
        os.unlink(tmp)
        lines = r.stderr.strip().splitlines()
        errors.append(next((line.strip() for line in lines if "error" in line), lines[-1] if lines else "?"))
    raise RuntimeError(f"compiling {source} failed: {' | '.join(errors)}")


def load(source) -> ctypes.CDLL | None:
    """The library built from `source` (compiled on first use), or None when the compiled path is off
    or the build failed (`why_not(source)` says why)."""
    if not _enabled:
        return None
    source = str(Path(source).resolve())
    got = _libraries.get(source)
    if got is None:
        with _lock:  # one build per source, even when threads ask at once
            got = _libraries.get(source)
            if got is None:
                try:
                    path = library_path(Path(source))
                    if not path.exists():
                        compile_library(Path(source), path)
                    got = (ctypes.CDLL(str(path)), None)
                except Exception as e:  # noqa: BLE001 - any failure means: use the reference path
                    got = (None, f"{type(e).__name__}: {e}")
                    if Path(source).name != "flat.c":  # flat.c's failure shows in kernels.status()
                        print(f"rnnkit: {got[1]}; its loops run on the NumPy reference", file=sys.stderr)
                _libraries[source] = got
    return got[0]


def why_not(source) -> str | None:
    """Why the library of `source` could not be loaded (None: it was, or was not tried yet)."""
    got = _libraries.get(str(Path(source).resolve()))
    return None if got is None else got[1]
