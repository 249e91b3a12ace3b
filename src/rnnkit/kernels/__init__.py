"""The fast path: the recurrent time loops compiled from C (`cells.c`), used by rnnkit.functional when
available, with the plain NumPy code as the reference it is tested equal to; likewise two element-wise
passes (`flat_impl.h`: the Adam update, the softmax cross-entropy) used by rnnkit.optim and
rnnkit.functional through `flat_kernel`.

How it works: on first use the C source is compiled with the system's C compiler (`cc`/`gcc`) into a
per-user cache (`$RNNKIT_CACHE`, default `~/.cache/rnnkit`), keyed by a hash of the source, the flags and
the CPU; it is loaded with ctypes. The one matrix product per step calls the CBLAS gemm of the BLAS that
NumPy already loaded (found by symbol name), so results and threading match NumPy's own matmul.
If any of this fails (no compiler, an unknown BLAS, a CuPy array), rnnkit silently uses the NumPy path.

Control:
    RNNKIT_FAST=0            environment variable: always use the NumPy reference
    rnnkit.kernels.set_enabled(False) / with rnnkit.kernels.reference(): the same, from code
    rnnkit.kernels.status()  -> dict saying whether the fast path is in use and why not

Threads: rnnkit runs its own threads. When the kernels load, the thread count NumPy's OpenBLAS was
started with (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the cores) becomes rnnkit's (`threads()`,
`set_threads(n)`, or RNNKIT_NUM_THREADS), and OpenBLAS itself is set to one thread: a time loop runs its
batch rows on that many workers, and the large products (`matmul`) are cut into row or column blocks
across them. Two thread pools at once (OpenBLAS's busy-waiting workers and rnnkit's) fought over the
cores and made two threads slower than one (measured: the LM training step 600 ms at two threads, 530 at
one). NumPy products outside rnnkit then run on one thread; `set_blas_threads(n)` gives them more, and
RNNKIT_NUM_THREADS=0 leaves OpenBLAS's threads alone (rnnkit itself then runs on one).
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
import threading
from pathlib import Path

import numpy as np

from rnnkit.backend import get_array_module

_HERE = Path(__file__).resolve().parent
_SOURCES = ("cells.c", "cells_impl.h", "flat_impl.h")
_FLAG_SETS = (
    # libmvec (glibc >= 2.35) gives vectorised tanh; the second set is plain C for other systems.
    ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp-simd", "-fno-math-errno",
     "-fno-trapping-math", "-DRNNKIT_MVEC", "-lmvec", "-lm"],
    ["-O3", "-fPIC", "-shared", "-fno-math-errno", "-lm"],
)

_enabled = os.environ.get("RNNKIT_FAST", "1").strip().lower() not in ("0", "false", "no", "off")
_state = {"lib": None, "tried": False, "why": None, "blas": None, "numpy_blas": None}


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


def _cpuinfo(field):
    """The first `field` line of /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line
    except OSError:
        pass
    return None


def _cpu_key():
    return _cpuinfo("flags") or platform.processor()


def _intel_cpu():
    return "GenuineIntel" in (_cpuinfo("vendor_id") or "")


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


_BLAS_NAMES = [("scipy_cblas_{}64_", True), ("cblas_{}64_", True), ("scipy_cblas_{}", False),
               ("cblas_{}", False)]


def _blas_in(lib, path):
    """({sgemm, sgemv}, {dgemm, dgemv}, ilp64, path) of a loaded CBLAS library, or None."""
    for pattern, ilp64 in _BLAS_NAMES:
        try:
            fns = [getattr(lib, pattern.format(f)) for f in ("sgemm", "sgemv", "dgemm", "dgemv")]
        except AttributeError:
            continue
        addr = [ctypes.cast(f, ctypes.c_void_p).value for f in fns]
        # {gemm, gemv} per dtype, as the C code expects them; kept alive in _state
        return (_Ptrs(addr[0], addr[1]), _Ptrs(addr[2], addr[3]), ilp64, path)
    return None


def _numpy_blas():
    """The CBLAS of the BLAS NumPy uses, or None."""
    candidates = []
    libs_dir = Path(np.__file__).resolve().parent.parent / "numpy.libs"  # manylinux wheels
    candidates += sorted(glob.glob(str(libs_dir / "*openblas*")))
    try:  # whatever BLAS-like libraries this process already mapped (distribution builds of NumPy)
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        candidates += sorted(mapped)
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        found = _blas_in(lib, path)
        if found is not None:
            return found
    return None


def mkl_path():
    """libmkl_rt of Intel's `mkl` wheel in this environment (`pip install 'rnnkit[mkl]'`), or None."""
    import site

    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, site.getuserbase())):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[-1]
    return None


def _other_blas(path):
    """The CBLAS of the library at `path` (MKL, or any with cblas_sgemm), loaded privately: its own
    symbols do not replace NumPy's, PyTorch's or anyone else's. MKL is put on its sequential layer
    before its first product, as OpenBLAS is put on one thread: rnnkit's own threads cut the work."""
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        raise ValueError(f"cannot load it ({e})") from None
    if hasattr(lib, "MKL_Set_Threading_Layer"):
        if lib.MKL_Set_Threading_Layer(1) != 1:  # 1 = MKL_THREADING_SEQUENTIAL; taken already:
            lib.MKL_Set_Num_Threads(1)
    found = _blas_in(lib, path)
    if found is None:
        raise ValueError(f"{path} has no cblas_sgemm/sgemv/dgemm/dgemv")
    return found


def _find_blas(choice=""):
    """The CBLAS gemm/gemv rnnkit's products call: ({sgemm, sgemv}, {dgemm, dgemv}, ilp64, library).
    choice: `numpy` (the BLAS NumPy loaded), `mkl` (Intel's, from the `mkl` wheel), a path to a CBLAS
    library, or "" for MKL where its wheel is installed and the CPU is Intel's (MKL is tuned for its
    maker's chips; asked for by name it is used on any), else NumPy's. ValueError: a choice that cannot
    be had."""
    choice = choice.strip()
    path = choice
    if choice.lower() == "numpy" or (not choice and not _intel_cpu()):
        path = None
    elif choice.lower() in ("", "mkl"):
        path = mkl_path()
        if path is None and choice:
            raise ValueError("Intel's mkl wheel is not installed (pip install 'rnnkit[mkl]')")
    if path is not None:
        return _other_blas(path)
    found = _numpy_blas()
    if found is None:
        raise RuntimeError("could not find NumPy's CBLAS gemm (a NumPy wheel with OpenBLAS is needed)")
    return found


def set_blas(choice: str) -> str:
    """Call another BLAS in rnnkit's products from now on (as RNNKIT_BLAS does at start): `numpy`,
    `mkl`, a path to a CBLAS library, or "" for the default; returns the library's path. ValueError
    when the choice cannot be had, RuntimeError when the compiled kernels are not in use."""
    if _enabled and not _state["tried"]:
        _load()
    if _state["lib"] is None:
        raise RuntimeError(f"the compiled kernels are not in use ({_state['why'] or 'turned off'})")
    key = choice.strip()
    if key not in _BLAS_CHOSEN:  # kept: a kernel callable made before a switch holds the pointers
        _BLAS_CHOSEN[key] = _find_blas(key)
    _state["blas"] = _BLAS_CHOSEN[key]
    return _state["blas"][3]


_BLAS_CHOSEN = {}  # set_blas's choices, found once each: switching back and forth costs nothing


def _load():
    _state["tried"] = True
    try:
        choice = os.environ.get("RNNKIT_BLAS", "")
        try:
            blas = _find_blas(choice)
        except ValueError as e:
            print(f"rnnkit: RNNKIT_BLAS={choice.strip()!r}: {e}; using NumPy's BLAS", file=sys.stderr)
            blas = _find_blas("numpy")
        path = _library_path()
        if not path.exists():
            _compile(path)
        lib = ctypes.CDLL(str(path))
        if lib.rnnkit_kernels_version() != 15:
            raise RuntimeError(f"{path} is not this version of the kernels")
        _declare(lib)
        numpy_blas = _numpy_blas()  # its thread count is set below, whichever BLAS rnnkit calls
        _state.update(lib=lib, blas=blas, numpy_blas=numpy_blas and numpy_blas[3])
        env = os.environ.get("RNNKIT_NUM_THREADS", "").strip()
        if env and not env.isdigit():
            print(f"rnnkit: RNNKIT_NUM_THREADS={env!r} is not a whole number >= 0; ignored",
                  file=sys.stderr)
            env = ""
        if env == "0":  # threads left to OpenBLAS as they are; rnnkit's loops and products on one
            _pool["threads"] = 1
        else:
            if _pool["threads"] is None:
                _pool["threads"] = max(1, int(env) if env.isdigit() else (blas_threads() or 1))
            set_blas_threads(1)
    except Exception as e:  # noqa: BLE001 - any failure means: use the reference path
        _state["why"] = f"{type(e).__name__}: {e}"


_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
_ROWS = [_L, _L, _L, _L, _L]  # T, N, H, and the batch rows [n0, n1) this call runs
_SIGNATURES = {
    "lstm_fw": _ROWS + [_P] * 7 + [_P, _I],
    "lstm_bw": _ROWS + [_P] * 12 + [_P, _I],
    "lstm_cells": _ROWS + [_P] * 5 + [_P, _I],
    "gru_fw": _ROWS + [_P] * 7 + [_P, _I],
    "gru_cells": _ROWS + [_P] * 4 + [_P, _I],
    "gru_bw": _ROWS + [_P] * 11 + [_P, _I],
    "rnn_fw": _ROWS + [_P, _P, _P, _I, _P, _I],
    "rnn_bw": _ROWS + [_P, _P, _P, _P, _I, _P, _P, _P, _P, _P, _I],
    "mingru_fw": _ROWS + [_P] * 3 + [_P, _I],
    "mingru_bw": _ROWS + [_P] * 7 + [_P, _I],
}
# element-wise passes over a range [i0, i1); the real-valued scalars are declared per dtype
_FLAT_SIGNATURES = {
    "adam": ([_L, _L] + [_P] * 4, 7),  # i0, i1, p, g, m, v; b1, b2, step, sbc2, eps, wd, decay
    "softmax_xent": ([_L, _L, _L] + [_P] * 3, 2, [_P, _P]),  # r0, r1, V, logits, y, w; scale, eps; d, nll
    "bag_mean": ([_L, _L, _L] + [_P] * 5, 0),  # u0, u1, D, grams, ends, W, inv, out
    "bag_scatter": ([_L, _L, _L, _L] + [_P] * 5, 0),  # c0, c1, U, D, grams, ends, dout, inv, dW
}


def _declare(lib):
    for name, argtypes in _SIGNATURES.items():
        for sfx in ("_f32", "_f64"):
            fn = getattr(lib, name + sfx)
            fn.argtypes = argtypes
            fn.restype = None
    for name, (head, n_real, *tail) in _FLAT_SIGNATURES.items():
        for sfx, real in (("_f32", ctypes.c_float), ("_f64", ctypes.c_double)):
            fn = getattr(lib, name + sfx)
            fn.argtypes = head + [real] * n_real + (tail[0] if tail else [])
            fn.restype = None
    lib.rnnkit_flush_subnormals.argtypes = [ctypes.c_int]
    lib.rnnkit_flush_subnormals.restype = ctypes.c_int


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
        T, N, H = args[0], args[1], args[2]
        rest = conv[3:]
        # float32: the kernels' own gemm on Wh packed once per call (flag 2); float64: BLAS
        flags = ilp64 | (2 if gi == 0 and SMALL_GEMM else 0)
        parts = row_parts(T, N, H * H * blocks, threads())
        if len(parts) > 1:
            # The rows of a batch never meet inside the time loop: each worker runs its own rows, with
            # its own products, and nothing is shared but the read-only weights.
            _run_parallel(fn, [(T, N, H, n0, n1, *rest, gemm, flags) for n0, n1 in parts])
        else:
            with blas_single_thread():
                fn(T, N, H, 0, N, *rest, gemm, flags)

    return call


def flat_kernel(name, dtype, *arrays):
    """Return a callable for the element-wise kernel `name` (flat_impl.h) on `dtype` arrays, or None
    to use the NumPy reference. The callable takes (n, *args) with args after the range as the C
    function has them (arrays as NumPy arrays) and runs [0, n) cut across rnnkit's threads when n is
    large enough (FLAT_SPLIT_MIN elements, or rows for row-wise kernels: `unit` elements per row)."""
    if not _enabled or dtype not in (np.float32, np.float64):
        return None
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or not a.flags.c_contiguous):
            return None
    if not _state["tried"]:
        _load()
    if _state["lib"] is None:
        return None
    fn = getattr(_state["lib"], name + ("_f32" if dtype == np.float32 else "_f64"))

    def call(n, *args, unit=1):
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
        k = min(threads(), n * unit // FLAT_SPLIT_MIN)
        if k < 2:
            fn(0, n, *conv)
            return
        # range bounds on 16-element boundaries (one AVX-512 vector) for the element-wise kernels
        step = 16 if unit == 1 else 1
        bounds = [0] + [(n * i // k) // step * step for i in range(1, k)] + [n]
        _run_parallel(fn, [(a, b, *conv) for a, b in zip(bounds, bounds[1:]) if b > a])

    return call


def row_parts(T, N, step_macs, threads):
    """How a time loop over N batch rows is cut for `threads` workers: [(n0, n1), ...], one part when
    splitting does not pay (few rows, or too little work per call to cover the hand-off)."""
    if not SPLIT_ROWS or threads < 2 or T * N * step_macs < SPLIT_MIN_MACS:
        return [(0, N)]
    k = min(threads, N // SPLIT_MIN_ROWS)
    if k < 2:
        return [(0, N)]
    # multiples of 4 rows where possible: the small gemm's register tile is 4 rows
    unit = 4 if N >= 4 * k else 1
    bounds = [0] + [((N * i // k) // unit) * unit for i in range(1, k)] + [N]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _run_parallel(fn, calls):
    """Run fn(*c) for every c in calls, the first on this thread and the others on worker threads (ctypes
    releases the GIL for the duration of a foreign call)."""
    import concurrent.futures

    if getattr(_local, "threads", 0) == 1:  # inside a split_rows part: the pool may be busy with parts
        for c in calls:
            fn(*c)
        return
    ex = _pool["executor"]
    if ex is None:
        # rnnkit's workers only ever run rnnkit's arithmetic: subnormals flushed there for good
        ex = _pool["executor"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="rnnkit-rows",
            initializer=_flush_in_thread, initargs=(1,))
    futures = [ex.submit(fn, *c) for c in calls[1:]]
    try:
        fn(*calls[0])
    finally:  # every call has ended before this returns or raises (they write into shared buffers)
        concurrent.futures.wait(futures)
    for f in futures:
        f.result()


# the per-step product's weight blocks, for row_parts' estimate of a call's work; minGRU's loop has no
# product: its O(N H) element-wise step is counted as one block, H times its work, so long loops split
_GATE_BLOCKS = {"lst": 4, "gru": 3, "rnn": 1, "min": 1}
# Time loops are split across threads by batch rows (RNNKIT_SPLIT_ROWS=0: never) when the call has at
# least this many multiply-adds in its per-step products and each worker gets SPLIT_MIN_ROWS rows.
SPLIT_ROWS = os.environ.get("RNNKIT_SPLIT_ROWS", "1") != "0"
SPLIT_MIN_MACS = int(os.environ.get("RNNKIT_SPLIT_MIN_MACS", 2**22))
SPLIT_MIN_ROWS = int(os.environ.get("RNNKIT_SPLIT_MIN_ROWS", 8))
# The kernels' own float32 gemm for per-step products (RNNKIT_SMALL_GEMM=0: always BLAS).
SMALL_GEMM = os.environ.get("RNNKIT_SMALL_GEMM", "1") != "0"
# Products of `matmul` with at least this many multiply-adds are cut across rnnkit's threads.
MATMUL_SPLIT_MIN_MACS = int(os.environ.get("RNNKIT_MATMUL_SPLIT_MIN_MACS", 2**21))
# Element-wise kernels (Adam, softmax cross-entropy) are cut across threads from this many elements.
FLAT_SPLIT_MIN = int(os.environ.get("RNNKIT_FLAT_SPLIT_MIN", 2**17))


@contextlib.contextmanager
def blas_single_thread():
    """NumPy's BLAS on one thread inside the block (tiny products: a second thread only adds hand-offs);
    a no-op while the kernels are loaded, since OpenBLAS is then on one thread throughout."""
    prev = blas_threads() if _enabled else 1
    prev = 1 if prev is None else prev
    if prev > 1:
        set_blas_threads(1)
    try:
        yield
    finally:
        if prev > 1:
            set_blas_threads(prev)


_pool = {"threads": None, "executor": None}


def _flush_in_thread(on: int) -> int:
    lib = _state["lib"]
    return -1 if lib is None else int(lib.rnnkit_flush_subnormals(int(on)))


@contextlib.contextmanager
def flush_subnormals():
    """Inside the block, this thread's arithmetic flushes subnormal floats (below 1.2e-38 in float32)
    to zero, as rnnkit's own worker threads always do; the previous setting comes back after. The
    training loop runs inside it: subnormals are ~100x slower in every operation they enter, and a
    model's attention weights and softmax gradients reach them. The change to any result is below
    the smallest normal float. A no-op without the compiled kernels or on CPUs without the switch."""
    if not _state["tried"] and _enabled:
        _load()
    prev = _flush_in_thread(1)
    try:
        yield
    finally:
        if prev == 0:
            _flush_in_thread(0)


def threads() -> int:
    """How many threads rnnkit's time loops and products use (1 when the fast path is off, and inside
    a part run by `split_rows`)."""
    if not _enabled:
        return 1
    if not _state["tried"]:
        _load()
    return getattr(_local, "threads", 0) or _pool["threads"] or 1


_local = threading.local()  # threads: 1 inside a `split_rows` part (its work stays on its thread)


def split_rows(fn, parts):
    """Run fn(i, n0, n1) for every part (n0, n1) of `parts` (from `row_parts`) at once on rnnkit's
    threads; returns the results in order. Each call keeps its own loops and products on its own thread
    (`threads()` is 1 inside), so a part is one long run with no hand-off between its operations: for
    work made of many small steps (a layer's segments, recompute), one join at the end instead of one
    per product and per loop. A single part runs here as an ordinary call."""
    if len(parts) == 1:
        return [fn(0, *parts[0])]
    results = [None] * len(parts)

    def one(i, n0, n1):
        old, _local.threads = getattr(_local, "threads", 0), 1
        try:
            results[i] = fn(i, n0, n1)
        finally:
            _local.threads = old

    _run_parallel(one, [(i, n0, n1) for i, (n0, n1) in enumerate(parts)])
    return results


def set_threads(n: int) -> None:
    """Use n threads in rnnkit's time loops and products (NumPy's OpenBLAS stays on one)."""
    if not _state["tried"]:
        _load()
    _pool["threads"] = max(1, int(n))


def matmul(a, b, out=None, accumulate=False):
    """a (M, K) @ b (K, Nc) -> (M, Nc), in `out` if given: the product of the BLAS rnnkit calls (NumPy's
    matmul, or MKL's gemm where chosen: `_find_blas`), cut into blocks of rows (or of columns, when b is
    the wider side) run at once on rnnkit's threads when it is large. Any array module: only NumPy
    arrays are split. accumulate: out += a @ b, the BLAS adding into `out` as it goes (no product-sized
    temporary, no second pass) where the compiled path can reach its gemm."""
    k = threads()
    M, K = a.shape
    Nc = b.shape[1]
    numpy = type(a) is np.ndarray and type(b) is np.ndarray
    if accumulate and out is None:
        raise ValueError("matmul(accumulate=True) needs out")
    if out is None and numpy:
        out = np.empty((M, Nc), dtype=np.result_type(a, b))
    gemm = _gemm_into(a, b, out, accumulate) if numpy and (accumulate or not _numpy_gemm()) else None
    if gemm is None:
        if accumulate:
            out += a @ b
            return out
        if not numpy:
            return a @ b if out is None else get_array_module(a).matmul(a, b, out=out)
        gemm = lambda x, y, z: np.matmul(x, y, out=z)  # noqa: E731
    small = M * K * Nc < MATMUL_SPLIT_MIN_MACS
    if k < 2 or small:
        gemm(a, b, out)
        return out
    by_rows = M >= Nc
    n = M if by_rows else Nc
    k = min(k, max(1, n // 16))
    bounds = [n * i // k for i in range(k + 1)]
    if by_rows:
        calls = [(a[i:j], b, out[i:j]) for i, j in zip(bounds, bounds[1:])]
    else:
        calls = [(a, b[:, i:j], out[:, i:j]) for i, j in zip(bounds, bounds[1:])]
    _run_parallel(gemm, calls)
    return out


def _numpy_gemm():
    """Whether rnnkit's products are NumPy's own (its BLAS is the one the kernels call, or none)."""
    if _enabled and not _state["tried"]:
        _load()
    return _state["lib"] is None or _state["blas"][3] == _state["numpy_blas"]


_GEMM_CFUNCS = {}


def _gemm_into(a, b, out, accumulate=True):
    """A function (x, y, z) -> z (+)= x @ y through the kernels' CBLAS gemm (beta = 1 to accumulate,
    else 0) for blocks of these arrays, or None (kernels off or unavailable, another dtype, or a layout
    gemm cannot take)."""
    dt = out.dtype
    if not _enabled or dt not in (np.float32, np.float64) or a.dtype != dt or b.dtype != dt:
        return None
    if not _state["tried"]:
        _load()
    if _state["lib"] is None:
        return None
    rows_contiguous = (NO_TRANS, out.strides[0] // dt.itemsize)
    if _layout(a) is None or _layout(b) is None or _layout(out) != rows_contiguous:
        return None
    ilp64 = bool(_state["blas"][2])
    addr = _state["blas"][0 if dt == np.float32 else 1][0]
    key = (dt.str, ilp64, addr)
    if key not in _GEMM_CFUNCS:
        I = ctypes.c_int64 if ilp64 else ctypes.c_int32  # noqa: E741
        Rl = ctypes.c_float if dt == np.float32 else ctypes.c_double
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, I, I, I, Rl,
                                 ctypes.c_void_p, I, ctypes.c_void_p, I, Rl, ctypes.c_void_p, I)
        _GEMM_CFUNCS[key] = proto(addr)
    fn = _GEMM_CFUNCS[key]
    beta = 1.0 if accumulate else 0.0

    def gemm(x, y, z):
        if z.size == 0:
            return
        (ta, lda), (tb, ldb) = _layout(x), _layout(y)
        fn(_ROW_MAJOR, ta, tb, z.shape[0], z.shape[1], x.shape[1], 1.0, x.ctypes.data, lda,
           y.ctypes.data, ldb, beta, z.ctypes.data, z.strides[0] // z.itemsize)

    return gemm


_ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _layout(m):
    """(CBLAS transpose flag, leading dimension) of a 2-D array whose rows or columns are contiguous."""
    s0, s1 = (s // m.itemsize for s in m.strides)
    if m.strides[1] == m.itemsize and s0 >= max(1, m.shape[1]):
        return NO_TRANS, s0
    if m.strides[0] == m.itemsize and s1 >= max(1, m.shape[0]):
        return TRANS, s1
    return None


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
    if not _state.get("numpy_blas"):
        return None
    cache = _state.setdefault("openblas_fns", {})
    if suffix not in cache:
        lib = ctypes.CDLL(_state["numpy_blas"], mode=getattr(os, "RTLD_NOLOAD", 0))
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
