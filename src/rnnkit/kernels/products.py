"""rnnkit's large matrix products: the BLAS's gemm (`blas.py`) cut across rnnkit's threads (`pool.py`).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from rnnkit.backend import get_array_module
from rnnkit.kernels import blas, build, pool

# Products of `matmul` with at least this many multiply-adds are cut across rnnkit's threads.
MATMUL_SPLIT_MIN_MACS = int(os.environ.get("RNNKIT_MATMUL_SPLIT_MIN_MACS", 2**21))
_ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_GEMM_CFUNCS = {}


def matmul(a, b, out=None, accumulate=False):
    """a (M, K) @ b (K, Nc) -> (M, Nc), in `out` if given: the product of the BLAS rnnkit calls (NumPy's
    matmul, or MKL's gemm where chosen: `blas.find_blas`), cut into blocks of rows (or of columns, when
    b is the wider side) run at once on rnnkit's threads when it is large. Any array module: only NumPy
    arrays are split. accumulate: out += a @ b, the BLAS adding into `out` as it goes (no product-sized
    temporary, no second pass) where the compiled path can reach its gemm."""
    k = pool.threads()
    M, K = a.shape
    Nc = b.shape[1]
    numpy = type(a) is np.ndarray and type(b) is np.ndarray
    if accumulate and out is None:
        raise ValueError("matmul(accumulate=True) needs out")
    if out is None and numpy:
        out = np.empty((M, Nc), dtype=np.result_type(a, b))
    gemm = gemm_into(a, b, out, accumulate) if numpy and (accumulate or not blas.numpy_gemm()) else None
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
    pool.run_parallel(gemm, calls)
    return out


def gemm_into(a, b, out, accumulate=True):
    """A function (x, y, z) -> z (+)= x @ y through the kernels' CBLAS gemm (beta = 1 to accumulate,
    else 0) for blocks of these arrays, or None (kernels off or unavailable, another dtype, or a layout
    gemm cannot take)."""
    dt = out.dtype
    if not build.enabled() or dt not in (np.float32, np.float64) or a.dtype != dt or b.dtype != dt:
        return None
    found = blas.current()
    if found is None:
        return None
    rows_contiguous = (NO_TRANS, out.strides[0] // dt.itemsize)
    if _layout(a) is None or _layout(b) is None or _layout(out) != rows_contiguous:
        return None
    ilp64 = bool(found[2])
    addr = found[0 if dt == np.float32 else 1][0]
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


def _layout(m):
    """(CBLAS transpose flag, leading dimension) of a 2-D array whose rows or columns are contiguous."""
    s0, s1 = (s // m.itemsize for s in m.strides)
    if m.strides[1] == m.itemsize and s0 >= max(1, m.shape[1]):
        return NO_TRANS, s0
    if m.strides[0] == m.itemsize and s1 >= max(1, m.shape[0]):
        return TRANS, s1
    return None
