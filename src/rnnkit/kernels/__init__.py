"""The fast path: the recurrent time loops compiled from C (`cells.c`), used by rnnkit.functional when
available, with the plain NumPy code as the reference it is tested equal to.

How it works: on first use the C source is compiled with the system's C compiler (`cc`/`gcc`) into a
per-user cache (`$RNNKIT_CACHE`, default `~/.cache/rnnkit`), keyed by a hash of the source, the flags and
the CPU; it is loaded with ctypes. The one matrix product per step calls the CBLAS gemm of the BLAS that
NumPy already loaded (found by symbol name), so results and threading match NumPy's own matmul.
If any of this fails (no compiler, an unknown BLAS, a CuPy array), rnnkit silently uses the NumPy path.

Control:
    RNNKIT_FAST=0            environment variable: always use the NumPy reference
    rnnkit.kernels.set_enabled(False) / with rnnkit.kernels.reference(): the same, from code
    rnnkit.kernels.status()  -> dict saying whether the fast path is in use and why not

Threads: small per-step products (and small layer passes, and `step()`) switch NumPy's OpenBLAS to one
thread for their duration and back (`set_blas_threads`); a program that runs NumPy from several Python
threads at once may see that setting change under it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
_SOURCES = ("cells.c", "cells_impl.h")
_FLAG_SETS = (
    # libmvec (glibc >= 2.35) gives vectorised tanh; the second set is plain C for other systems.
    ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno",
     "-fno-trapping-math", "-DRNNKIT_MVEC", "-lmvec", "-lm"],
    ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-lm"],
)

_enabled = os.environ.get("RNNKIT_FAST", "1").strip().lower() not in ("0", "false", "no", "off")
_state = {"lib": None, "tried": False, "why": None, "blas": None}


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


def _cpu_key():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("RNNKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rnnkit")
    return Path(root) / "kernels"


def _compile(out: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, str(_HERE / "cells.c"), "-o", tmp] + flags
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            os.replace(tmp, out)  # atomic: another process may be building the same file
            return
        os.unlink(tmp)
        errors.append(r.stderr.strip().splitlines()[-1:] or ["?"])
    raise RuntimeError(f"compiling {_HERE / 'cells.c'} failed: {errors}")


def _library_path() -> Path:
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((_HERE / name).read_bytes())
    h.update(repr(_FLAG_SETS).encode())
    h.update(_cpu_key().encode())
    h.update(f"{sys.platform}-{platform.machine()}".encode())
    return _cache_dir() / f"cells-{h.hexdigest()[:16]}.so"


_Ptrs = ctypes.c_void_p * 2


def _find_blas():
    """The CBLAS gemm/gemv of the BLAS NumPy uses: ({sgemm, sgemv}, {dgemm, dgemv}, ilp64, library)."""
    candidates = []
    libs_dir = Path(np.__file__).resolve().parent.parent / "numpy.libs"  # manylinux wheels
    candidates += sorted(glob.glob(str(libs_dir / "*openblas*")))
    try:  # whatever BLAS-like libraries this process already mapped (distribution builds of NumPy)
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        candidates += sorted(mapped)
    except OSError:
        pass
    names = [("scipy_cblas_{}64_", True), ("cblas_{}64_", True), ("scipy_cblas_{}", False),
             ("cblas_{}", False)]
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        for pattern, ilp64 in names:
            try:
                fns = [getattr(lib, pattern.format(f)) for f in ("sgemm", "sgemv", "dgemm", "dgemv")]
            except AttributeError:
                continue
            addr = [ctypes.cast(f, ctypes.c_void_p).value for f in fns]
            # {gemm, gemv} per dtype, as the C code expects them; kept alive in _state
            return (_Ptrs(addr[0], addr[1]), _Ptrs(addr[2], addr[3]), ilp64, path)
    raise RuntimeError("could not find NumPy's CBLAS gemm (a NumPy wheel with OpenBLAS is needed)")


def _load():
    _state["tried"] = True
    try:
        blas = _find_blas()
        path = _library_path()
        if not path.exists():
            _compile(path)
        lib = ctypes.CDLL(str(path))
        if lib.rnnkit_kernels_version() != 5:
            raise RuntimeError(f"{path} is not this version of the kernels")
        _declare(lib)
        _state.update(lib=lib, blas=blas)
    except Exception as e:  # noqa: BLE001 - any failure means: use the reference path
        _state["why"] = f"{type(e).__name__}: {e}"


_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
_SIGNATURES = {
    "lstm_fw": [_L, _L, _L] + [_P] * 6 + [_P, _I],
    "lstm_bw": [_L, _L, _L] + [_P] * 12 + [_P, _I],
    "gru_fw": [_L, _L, _L] + [_P] * 7 + [_P, _I],
    "gru_bw": [_L, _L, _L] + [_P] * 11 + [_P, _I],
    "rnn_fw": [_L, _L, _L, _P, _P, _P, _I, _P, _I],
    "rnn_bw": [_L, _L, _L, _P, _P, _P, _P, _I, _P, _P, _P, _P, _P, _I],
}


def _declare(lib):
    for name, argtypes in _SIGNATURES.items():
        for sfx in ("_f32", "_f64"):
            fn = getattr(lib, name + sfx)
            fn.argtypes = argtypes
            fn.restype = None


def kernel(name, dtype, *arrays):
    """Return a callable for `name` on `dtype` arrays, or None to use the NumPy reference.

    The callable takes the kernel's arguments with arrays passed as NumPy arrays (or None) and appends
    the gemm pointer itself. None is returned for CuPy arrays, other dtypes, or when disabled/unavailable.
    """
    if not _enabled:
        return None
    if dtype == np.float32:
        sfx, gi = "_f32", 0
    elif dtype == np.float64:
        sfx, gi = "_f64", 1
    else:
        return None
    for a in arrays:
        if a is not None and type(a) is not np.ndarray:
            return None
    if not _state["tried"]:
        _load()
    lib = _state["lib"]
    if lib is None:
        return None
    fn = getattr(lib, name + sfx)
    gemm, ilp64 = ctypes.addressof(_state["blas"][gi]), int(_state["blas"][2])
    blocks = _GATE_BLOCKS[name[:3]]

    def call(*args):
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
        N, H = args[1], args[2]
        small = N * H * blocks * H < STEP_THREADS_MIN_MACS
        threads = _threads()
        # float32 products on one thread use the kernels' own small-batch gemm (no packing of Wh)
        flags = ilp64 | (2 if gi == 0 and SMALL_GEMM and (small or threads == 1) else 0)
        if small and threads > 1:
            # A small per-step product gains little from a second BLAS thread, and on a busy machine
            # the threads' hand-offs at every step cost far more than the product (measured: 10x).
            set_blas_threads(1)
            try:
                fn(*conv, gemm, flags)
            finally:
                set_blas_threads(threads)
        else:
            fn(*conv, gemm, flags)

    return call


_GATE_BLOCKS = {"lst": 4, "gru": 3, "rnn": 1}
# The kernels' own float32 gemm for per-step products (RNNKIT_SMALL_GEMM=0: always BLAS).
SMALL_GEMM = os.environ.get("RNNKIT_SMALL_GEMM", "1") != "0"
# Per-step products below this many multiply-adds run on one BLAS thread (RNNKIT_STEP_THREADS_MIN_MACS).
STEP_THREADS_MIN_MACS = int(os.environ.get("RNNKIT_STEP_THREADS_MIN_MACS", 32 * 2**20))


@contextlib.contextmanager
def blas_single_thread():
    """NumPy's BLAS on one thread inside the block (a batch-1 step: see STEP_THREADS_MIN_MACS)."""
    prev = _threads() if _enabled else 1
    if prev > 1:
        set_blas_threads(1)
    try:
        yield
    finally:
        if prev > 1:
            set_blas_threads(prev)


def _threads():
    n = blas_threads()
    return 1 if n is None else n


def ptr(a):
    """Address of a C-contiguous array for a kernel argument (None stays NULL)."""
    if a is None:
        return None
    if not a.flags.c_contiguous:
        raise ValueError("kernel arrays must be C-contiguous")
    return a


def _openblas_fn(suffix):
    """A function of NumPy's OpenBLAS (scipy-openblas wheels name them scipy_openblas_*64_), or None."""
    if not _state["tried"]:
        _load()
    if not _state["blas"]:
        return None
    cache = _state.setdefault("openblas_fns", {})
    if suffix not in cache:
        lib = ctypes.CDLL(_state["blas"][3], mode=getattr(os, "RTLD_NOLOAD", 0))
        cache[suffix] = None
        for name in (f"scipy_openblas_{suffix}64_", f"openblas_{suffix}64_", f"scipy_openblas_{suffix}",
                     f"openblas_{suffix}"):
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.c_int] if suffix.startswith("set") else []
                fn.restype = None if suffix.startswith("set") else ctypes.c_int
                cache[suffix] = fn
                break
    return cache[suffix]


def set_blas_threads(n: int) -> bool:
    """Set the number of threads of NumPy's OpenBLAS; False if that BLAS could not be reached."""
    fn = _openblas_fn("set_num_threads")
    if fn is None:
        return False
    fn(int(n))
    return True


def blas_threads():
    fn = _openblas_fn("get_num_threads")
    return None if fn is None else int(fn())


def status() -> dict:
    """Whether the compiled fast path is in use, and why not if it is not."""
    if _enabled and not _state["tried"]:
        _load()
    return {"enabled": _enabled, "available": _state["lib"] is not None, "reason": _state["why"],
            "blas": _state["blas"][3] if _state["blas"] else None}
