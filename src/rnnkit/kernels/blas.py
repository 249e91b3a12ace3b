"""Finding the BLAS whose gemm rnnkit's compiled loops and products call.

By default that is the CBLAS of the BLAS NumPy itself loaded (found by symbol name among the libraries
this process mapped), so results and threading match NumPy's own matmul; Intel's MKL where its wheel is
installed and the CPU is Intel's (`pip install 'rnnkit[mkl]'`); or any CBLAS library by path
(`RNNKIT_BLAS`, `set_blas`). The compiled path is ready (`ready()`) once a BLAS is found and the
element-wise library (`flat.c`) is built; if either fails rnnkit uses the NumPy reference everywhere.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

import numpy as np

from rnnkit.kernels import build

_Ptrs = ctypes.c_void_p * 2
_NAMES = [("scipy_cblas_{}64_", True), ("cblas_{}64_", True), ("scipy_cblas_{}", False),
          ("cblas_{}", False)]
FLAT_SOURCE = build.HERE / "flat.c"

# blas: ({sgemm, sgemv}, {dgemm, dgemv}, ilp64, library path) in use; numpy_blas: NumPy's library path
state = {"tried": False, "why": None, "blas": None, "numpy_blas": None}
_chosen = {}  # set_blas's choices, found once each: switching back and forth costs nothing


def _blas_in(lib, path):
    """({sgemm, sgemv}, {dgemm, dgemv}, ilp64, path) of a loaded CBLAS library, or None."""
    for pattern, ilp64 in _NAMES:
        try:
            fns = [getattr(lib, pattern.format(f)) for f in ("sgemm", "sgemv", "dgemm", "dgemv")]
        except AttributeError:
            continue
        addr = [ctypes.cast(f, ctypes.c_void_p).value for f in fns]
        # {gemm, gemv} per dtype, as the C code expects them; kept alive in `state`
        return (_Ptrs(addr[0], addr[1]), _Ptrs(addr[2], addr[3]), ilp64, path)
    return None


def numpy_blas():
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


def intel_cpu():
    return "GenuineIntel" in (build.cpuinfo("vendor_id") or "")


def find_blas(choice=""):
    """The CBLAS gemm/gemv rnnkit's products call: ({sgemm, sgemv}, {dgemm, dgemv}, ilp64, library).
    choice: `numpy` (the BLAS NumPy loaded), `mkl` (Intel's, from the `mkl` wheel), a path to a CBLAS
    library, or "" for MKL where its wheel is installed and the CPU is Intel's (MKL is tuned for its
    maker's chips; asked for by name it is used on any), else NumPy's. ValueError: a choice that cannot
    be had."""
    choice = choice.strip()
    path = choice
    if choice.lower() == "numpy" or (not choice and not intel_cpu()):
        path = None
    elif choice.lower() in ("", "mkl"):
        path = mkl_path()
        if path is None and choice:
            raise ValueError("Intel's mkl wheel is not installed (pip install 'rnnkit[mkl]')")
    if path is not None:
        return _other_blas(path)
    found = numpy_blas()
    if found is None:
        raise RuntimeError("could not find NumPy's CBLAS gemm (a NumPy wheel with OpenBLAS is needed)")
    return found


def ready() -> bool:
    """Whether the compiled path is in use: enabled, a BLAS found and the element-wise library built
    (tried once per process; `status()` says why not)."""
    if not build._enabled:
        return False
    if state["blas"] is not None:  # asked several times a call: the answer once found is kept
        return True
    if not state["tried"]:
        state["tried"] = True
        try:
            choice = os.environ.get("RNNKIT_BLAS", "")
            try:
                blas = find_blas(choice)
            except ValueError as e:
                print(f"rnnkit: RNNKIT_BLAS={choice.strip()!r}: {e}; using NumPy's BLAS", file=sys.stderr)
                blas = find_blas("numpy")
            if build.load(FLAT_SOURCE) is None:
                raise RuntimeError(build.why_not(FLAT_SOURCE))
            found = numpy_blas()  # its thread count is set by the pool, whichever BLAS rnnkit calls
            state.update(blas=blas, numpy_blas=found and found[3])
        except Exception as e:  # noqa: BLE001 - any failure means: use the reference path
            state["why"] = f"{type(e).__name__}: {e}"
    return state["blas"] is not None


def current():
    """The BLAS in use (see `state`), or None when the compiled path is not."""
    return state["blas"] if ready() else None


def set_blas(choice: str) -> str:
    """Call another BLAS in rnnkit's products from now on (as RNNKIT_BLAS does at start): `numpy`,
    `mkl`, a path to a CBLAS library, or "" for the default; returns the library's path. ValueError
    when the choice cannot be had, RuntimeError when the compiled kernels are not in use."""
    if not ready():
        raise RuntimeError(f"the compiled kernels are not in use ({state['why'] or 'turned off'})")
    key = choice.strip()
    if key not in _chosen:  # kept: a product set up before a switch holds the pointers
        _chosen[key] = find_blas(key)
    state["blas"] = _chosen[key]
    return state["blas"][3]


def numpy_gemm() -> bool:
    """Whether rnnkit's products are NumPy's own (its BLAS is the one the kernels call, or none)."""
    return not ready() or state["blas"][3] == state["numpy_blas"]


def _openblas_fn(suffix):
    """A function of NumPy's OpenBLAS (scipy-openblas wheels name them scipy_openblas_*64_), or None."""
    ready()
    if not state.get("numpy_blas"):
        found = numpy_blas()  # the compiled path may be off: NumPy's BLAS is still there
        state["numpy_blas"] = found and found[3]
        if not state["numpy_blas"]:
            return None
    cache = state.setdefault("openblas_fns", {})
    if suffix not in cache:
        lib = ctypes.CDLL(state["numpy_blas"], mode=getattr(os, "RTLD_NOLOAD", 0))
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
    state["threads_set"] = int(n)
    return True


def blas_threads():
    fn = _openblas_fn("get_num_threads")
    return None if fn is None else int(fn())
