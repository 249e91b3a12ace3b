"""bf16 matrix products with float32 accumulation (mixed precision) on the CPU's matrix units.

    C (M, N) float32 (+)= bf16(A) (M, K) @ bf16(B) (K, N)      bf16(x): x rounded to 8 mantissa bits

B, a weight, is packed once (`pack`) into the layout the units read; A is converted on the fly in C
from float32 (or given as bf16 bits, uint16). The tier, the best this CPU, its OS and the compiler
allow, is found at run time (`tier()`, `detect()`; C in `bf16.c`):

    amx           Intel's AMX tile units (amx_tile, amx_bf16), after Linux's permission for tile data
    avx512_bf16   VDPBF16PS on AVX-512 registers (avx512_bf16)
    none          float32: the BLAS's product of A and B unrounded (`kernels.matmul`)

`RNNKIT_BF16=avx512_bf16` (or `none`) caps the tier below what the machine has, for comparisons;
`kernels.status()` says the tier and why a higher one was not chosen. bf16 values travel as their bit
patterns in uint16 arrays (`to_bf16`, `from_bf16`): no bf16 array type is needed.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from rnnkit.kernels import build, pool

SOURCE = build.HERE / "bf16.c"
TIERS = ("none", "avx512_bf16", "amx")  # lowest first; index = the C code's tier number
# Products with fewer multiply-adds run on one thread (the hand-off costs more than it saves).
SPLIT_MIN_MACS = int(os.environ.get("RNNKIT_BF16_SPLIT_MIN_MACS", 2**22))
AMX_ROWS = 32  # rows of one AMX block: row parts of a split are multiples of it
PANEL = 64  # columns of one packed panel: column parts are multiples of it

_state: dict = {}  # "detected": the answer of detect(), once per process; "lib": the CDLL


def to_bf16(x) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounded to nearest even as the C kernels round; NaN
    stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def from_bf16(bits) -> np.ndarray:
    """bf16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x) -> np.ndarray:
    """x rounded to the nearest bf16 value, as float32."""
    return from_bf16(to_bf16(x))


def _lib():
    if "lib" not in _state:
        lib = build.load(SOURCE)
        if lib is not None:
            lib.rnnkit_bf16_packed_size.argtypes = [ctypes.c_long, ctypes.c_long]
            lib.rnnkit_bf16_packed_size.restype = ctypes.c_long
            lib.rnnkit_bf16_pack.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                                             ctypes.c_long, ctypes.c_void_p]
            lib.rnnkit_bf16_pack.restype = None
            lib.rnnkit_bf16_probe.argtypes = [ctypes.c_void_p]
            lib.rnnkit_bf16_probe.restype = None
            lib.rnnkit_bf16_request_amx.argtypes = []
            lib.rnnkit_bf16_request_amx.restype = ctypes.c_int
            lib.rnnkit_bf16_gemm.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long,
                                             ctypes.c_int]
            lib.rnnkit_bf16_gemm.restype = ctypes.c_int
            L, P, I = ctypes.c_long, ctypes.c_void_p, ctypes.c_int
            lib.rnnkit_bf16_convert_t.argtypes = [L, L, P, L, L, L, P, L]
            lib.rnnkit_bf16_convert_t.restype = None
            lib.rnnkit_bf16_gemm_converted.argtypes = [I, L, L, L, P, P, P, L, I]
            lib.rnnkit_bf16_gemm_converted.restype = I
            lib.rnnkit_bf16_lstm_fw.argtypes = [I, L, L, L, L, L] + [P] * 7
            lib.rnnkit_bf16_lstm_fw.restype = I
            lib.rnnkit_bf16_lstm_bw.argtypes = [I, L, L, L, L, L] + [P] * 12
            lib.rnnkit_bf16_lstm_bw.restype = I
        _state["lib"] = lib
    return _state["lib"]


def detect() -> dict:
    """{"tier": the tier in use, "runnable": every tier this process can run (lowest first), "reason":
    why no higher tier, or None}: decided once per process. The Linux permission for tile data is asked
    for here, before any tile instruction runs."""
    if "detected" in _state:
        return _state["detected"]
    runnable, why = ["none"], []
    lib = _lib()
    if lib is None:
        why.append("the compiled kernels are off (RNNKIT_FAST=0)" if not build.enabled() else
                   f"bf16.c did not build ({build.why_not(SOURCE)})")
    else:
        p = (ctypes.c_int * 7)()
        lib.rnnkit_bf16_probe(p)
        cpu_amx, cpu_avx, os_avx, os_amx, built_amx, built_avx = list(p)[:6]
        avx_ok = cpu_avx and os_avx and built_avx
        if avx_ok:
            runnable.append("avx512_bf16")
        else:
            why.append("avx512_bf16: " + ("not compiled in (an x86-64 GCC >= 11 or clang >= 12 is "
                                          "needed)" if not built_avx else
                                          "the CPU has no AVX512_BF16 (CPUID)" if not cpu_avx else
                                          "the OS does not enable the AVX-512 state (XCR0)"))
        if not cpu_amx:
            why.append("amx: the CPU has no AMX-TILE/AMX-BF16 (CPUID)")
        elif not built_amx:
            why.append("amx: not compiled in")
        elif not os_amx:
            why.append("amx: the OS does not enable the tile state (XCR0)")
        elif not avx_ok:
            why.append("amx: its A conversion needs the AVX-512 tier too")
        else:
            err = lib.rnnkit_bf16_request_amx()
            if err == 0 or (err == -1 and os_amx):
                runnable.append("amx")
            else:
                name = os.strerror(err) if err > 0 else f"code {err}"
                why.append(f"amx: Linux refused tile data (arch_prctl ARCH_REQ_XCOMP_PERM: {name}"
                           + ("; an alternate signal stack too small for the tile state?"
                              if err == 28 else "") + ")")
    tier = runnable[-1]
    cap = os.environ.get("RNNKIT_BF16", "").strip().lower()
    if cap:
        if cap not in TIERS:
            print(f"rnnkit: RNNKIT_BF16={cap!r} is not one of {', '.join(TIERS)}; ignored",
                  file=sys.stderr)
        elif TIERS.index(cap) < TIERS.index(tier):
            why.insert(0, f"capped at {cap} by RNNKIT_BF16 (the machine has {tier})")
            tier = cap
            runnable = runnable[:runnable.index(cap) + 1]
    _state["detected"] = {"tier": tier, "runnable": runnable, "reason": "; ".join(why) or None}
    return _state["detected"]


def tier() -> str:
    """The bf16 tier in use: amx, avx512_bf16 or none (see `detect`)."""
    return detect()["tier"]


@dataclass(frozen=True)
class PackedB:
    """A (K, N) matrix packed once for `matmul`: `bits` the bf16 panels of the C kernels
    (`rnnkit_bf16_pack`; None without them), `b32` the float32 matrix itself, for the float32 tier."""

    K: int
    N: int
    bits: np.ndarray | None  # (size,) uint16
    b32: np.ndarray  # (K, N) float32


def pack(b) -> PackedB:
    """Pack b (K, N) for `matmul`: do it once per weight, not per product."""
    b32 = np.ascontiguousarray(b, dtype=np.float32)
    if b32.ndim != 2:
        raise ValueError(f"bf16.pack: b must be 2-D (K, N), got shape {b32.shape}")
    K, N = b32.shape
    lib = _lib() if detect()["runnable"][-1] != "none" else None
    bits = None
    if lib is not None:
        bits = np.empty(int(lib.rnnkit_bf16_packed_size(K, N)), dtype=np.uint16)
        lib.rnnkit_bf16_pack(K, N, b32.ctypes.data, N, bits.ctypes.data)
    return PackedB(K, N, bits, b32)


def matmul(a, b: PackedB, out=None, accumulate=False, tier=None):
    """out (M, N) float32 (+)= bf16(a) (M, K) @ bf16(b): bf16 products summed in float32, on `tier`
    (default: `tier()`; any other must be one `detect()` lists as runnable). a: float32 (converted
    in C) or uint16 bf16 bits. On tier none the product is float32 throughout (`kernels.matmul`). Cut
    into blocks of rows, or of 64-column panels when the rows are few, across rnnkit's threads."""
    info = detect()
    tier = info["tier"] if tier is None else tier
    if tier not in info["runnable"]:
        raise ValueError(f"bf16 tier {tier!r} cannot run here (runnable: "
                         f"{', '.join(info['runnable'])})")
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] != b.K:
        raise ValueError(f"bf16.matmul: a {a.shape} does not match b ({b.K}, {b.N})")
    if a.dtype not in (np.float32, np.uint16):
        a = a.astype(np.float32)
    M = a.shape[0]
    if accumulate and out is None:
        raise ValueError("bf16.matmul(accumulate=True) needs out")
    if out is None:
        out = np.empty((M, b.N), dtype=np.float32)
    if out.dtype != np.float32 or out.shape != (M, b.N) or out.strides[1] != 4:
        raise ValueError(f"bf16.matmul: out must be float32 ({M}, {b.N}) with contiguous rows")
    if tier == "none" or b.bits is None:
        from rnnkit.kernels.products import matmul as matmul32

        return matmul32(from_bf16(a) if a.dtype == np.uint16 else a, b.b32, out=out,
                        accumulate=accumulate)
    if a.strides[1] != a.itemsize or a.strides[0] < a.itemsize * b.K:
        a = np.ascontiguousarray(a)
    code = TIERS.index(tier)
    fn = _lib().rnnkit_bf16_gemm
    f32 = a.dtype == np.float32
    lda, ldc, size = a.strides[0] // a.itemsize, out.strides[0] // 4, a.itemsize
    P = (b.K + 31) // 32 * 16  # pairs per panel: the packed layout of bf16.c

    def call(m0, m1, q0, q1):
        pa = a.ctypes.data + m0 * lda * size
        n = min(b.N, PANEL * q1) - PANEL * q0
        rc = fn(code, m1 - m0, n, b.K, pa if f32 else None, None if f32 else pa, lda,
                b.bits.ctypes.data + q0 * P * PANEL * 2 * 2,  # panel q0: P pairs x 64 x 2 bf16
                out.ctypes.data + (m0 * ldc + PANEL * q0) * 4, ldc, int(accumulate))
        if rc:
            raise MemoryError("bf16.matmul: out of memory") if rc == 1 else RuntimeError(
                f"bf16.matmul: tier {tier} is not in this build")

    Q = (b.N + PANEL - 1) // PANEL
    k = pool.threads()
    parts = [(0, M, 0, Q)]
    if k > 1 and M * b.K * b.N >= SPLIT_MIN_MACS:
        if M >= AMX_ROWS * k:  # rows, in whole AMX blocks
            bounds = [0] + [M * i // k // AMX_ROWS * AMX_ROWS for i in range(1, k)] + [M]
            parts = [(m0, m1, 0, Q) for m0, m1 in zip(bounds, bounds[1:]) if m1 > m0]
        elif Q >= 2:  # few rows: whole panels of columns
            kk = min(k, Q)
            bounds = [Q * i // kk for i in range(kk + 1)]
            parts = [(0, M, q0, q1) for q0, q1 in zip(bounds, bounds[1:]) if q1 > q0]
    if len(parts) == 1:
        call(*parts[0])
    else:
        pool.run_parallel(call, parts)
    return out


def _check_rc(rc, what, tier):
    if rc:
        raise MemoryError(f"{what}: out of memory") if rc == 1 else RuntimeError(
            f"{what}: tier {tier} is not in this build")


def _row_splits(M, Q, k, macs):
    """Parts (m0, m1, q0, q1) of an (M rows, Q panels) product for k threads: whole AMX blocks of
    rows, or whole panels when the rows are few; one part when the product is small."""
    parts = [(0, M, 0, Q)]
    if k > 1 and macs >= SPLIT_MIN_MACS:
        if M >= AMX_ROWS * k:
            bounds = [0] + [M * i // k // AMX_ROWS * AMX_ROWS for i in range(1, k)] + [M]
            parts = [(m0, m1, 0, Q) for m0, m1 in zip(bounds, bounds[1:]) if m1 > m0]
        elif Q >= 2:
            kk = min(k, Q)
            bounds = [Q * i // kk for i in range(kk + 1)]
            parts = [(0, M, q0, q1) for q0, q1 in zip(bounds, bounds[1:]) if q1 > q0]
    return parts


_local = threading.local()


def _scratch(name, size):
    """A uint16 buffer of `size` kept per thread between calls: the weight gradients' operands are
    tens of MB, and fresh pages cost their faults at every training step."""
    bufs = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.size < size:
        buf = bufs[name] = np.empty(size, dtype=np.uint16)
    return buf[:size]


def matmul_tn(a, b, out=None, accumulate=False, tier=None):
    """out (M, N) float32 (+)= bf16(a)^T @ bf16(b) for a (K, M) and b (K, N) float32, both with
    contiguous rows: the weight gradients' shape, x^T da, where K = T N is the long side. a^T is
    converted and b packed here, each cut across rnnkit's threads, then multiplied as `matmul` does.
    On tier none: float32 throughout (`kernels.matmul(a.T, b)`)."""
    info = detect()
    tier = info["tier"] if tier is None else tier
    if tier not in info["runnable"]:
        raise ValueError(f"bf16 tier {tier!r} cannot run here (runnable: "
                         f"{', '.join(info['runnable'])})")
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"bf16.matmul_tn: a {a.shape} and b {b.shape} need the same rows (K, .)")
    K, M = a.shape
    N = b.shape[1]
    if accumulate and out is None:
        raise ValueError("bf16.matmul_tn(accumulate=True) needs out")
    if out is None:
        out = np.empty((M, N), dtype=np.float32)
    if out.dtype != np.float32 or out.shape != (M, N) or out.strides[1] != 4:
        raise ValueError(f"bf16.matmul_tn: out must be float32 ({M}, {N}) with contiguous rows")
    if tier == "none":
        from rnnkit.kernels.products import matmul as matmul32

        return matmul32(a.T, b, out=out, accumulate=accumulate)
    if a.dtype != np.float32 or a.strides[1] != 4:
        a = np.ascontiguousarray(a, dtype=np.float32)
    if b.dtype != np.float32 or b.strides[1] != 4:
        b = np.ascontiguousarray(b, dtype=np.float32)
    lib, code = _lib(), TIERS.index(tier)
    Kp, Mp = (K + 31) // 32 * 32, (M + AMX_ROWS - 1) // AMX_ROWS * AMX_ROWS
    Q, P = (N + PANEL - 1) // PANEL, (K + 31) // 32 * 16
    abf = _scratch("a", Mp * Kp).reshape(Mp, Kp)
    abf[M:] = 0
    bp = _scratch("b", Q * P * PANEL * 2)
    lda, ldb = a.strides[0] // 4, b.strides[0] // 4
    k = pool.threads() if M * N * K >= SPLIT_MIN_MACS else 1

    def convert(i):  # part i of k: rows of a^T, panels of b
        m0, m1 = M * i // k, M * (i + 1) // k
        lib.rnnkit_bf16_convert_t(M, K, a.ctypes.data, lda, m0, m1, abf.ctypes.data, Kp)
        q0, q1 = Q * i // k, Q * (i + 1) // k
        if q1 > q0:
            lib.rnnkit_bf16_pack(K, min(N, PANEL * q1) - PANEL * q0, b.ctypes.data + PANEL * q0 * 4,
                                 ldb, bp.ctypes.data + q0 * P * PANEL * 2 * 2)

    def call(m0, m1, q0, q1):
        n = min(N, PANEL * q1) - PANEL * q0
        _check_rc(lib.rnnkit_bf16_gemm_converted(
            code, m1 - m0, n, Kp, abf.ctypes.data + m0 * Kp * 2,
            bp.ctypes.data + q0 * P * PANEL * 2 * 2,
            out.ctypes.data + m0 * out.strides[0] + PANEL * q0 * 4, out.strides[0] // 4,
            int(accumulate)), "bf16.matmul_tn", tier)

    if k > 1:
        pool.run_parallel(convert, [(i,) for i in range(k)])
        pool.run_parallel(call, _row_splits(M, Q, k, M * N * K))
    else:
        convert(0)
        call(0, M, 0, Q)
    return out


def _ptr(x):
    return None if x is None else x.ctypes.data


def _loop(fn, T, N, H, step_macs, tier, *args):
    """Run a time loop of bf16.c over the batch rows, cut across rnnkit's threads as the float32
    loops are (`pool.row_parts`): fn(tier, T, N, H, n0, n1, *args)."""
    code = TIERS.index(tier)
    ptrs = [_ptr(x) for x in args]

    def run(n0, n1):
        _check_rc(fn(code, T, N, H, n0, n1, *ptrs), "bf16 time loop", tier)

    parts = pool.row_parts(T, N, step_macs, pool.threads())
    if len(parts) == 1:
        run(*parts[0])
    else:
        pool.run_parallel(run, parts)


def _contiguous32(**arrays):
    for name, x in arrays.items():
        if x is not None and (x.dtype != np.float32 or not x.flags.c_contiguous):
            raise ValueError(f"bf16 time loop: {name} must be C-contiguous float32")


def _mask_bytes(mask):
    return None if mask is None else np.ascontiguousarray(mask, dtype=np.bool_).view(np.uint8)


def lstm_fw(T, N, H, gates, h, c, tanh_c, Whp: PackedB, b, mask, tier=None):
    """The LSTM's bf16-mixed forward time loop (`rnnkit_bf16_lstm_fw` in bf16.c): gates (T, N, 4H)
    x_t Wx in, activations out; h, c (T+1, N, H) with h[0], c[0] set; tanh_c (T, N, H); Whp: Wh (H, 4H)
    packed; b (4H,); mask (T, N) bool or None. tier: amx or avx512_bf16 (default `tier()`)."""
    tier = detect()["tier"] if tier is None else tier
    _contiguous32(gates=gates, h=h, c=c, tanh_c=tanh_c, b=b)
    _loop(_lib().rnnkit_bf16_lstm_fw, T, N, H, 4 * H * H, tier, gates, h, c, tanh_c, Whp.bits, b,
          _mask_bytes(mask))


def lstm_bw(T, N, H, dh, gates, c, tanh_c, WhTp: PackedB, mask, dh_next, dc_next, da, dht,
            trace_dh=None, trace_dc=None, tier=None):
    """The LSTM's bf16-mixed BPTT loop (`rnnkit_bf16_lstm_bw`): the arguments of lstm.c's lstm_bw,
    with WhTp: Wh^T (4H, H) packed."""
    tier = detect()["tier"] if tier is None else tier
    _contiguous32(dh=dh, gates=gates, c=c, tanh_c=tanh_c, dh_next=dh_next, dc_next=dc_next, da=da,
                  dht=dht, trace_dh=trace_dh, trace_dc=trace_dc)
    _loop(_lib().rnnkit_bf16_lstm_bw, T, N, H, 4 * H * H, tier, dh, gates, c, tanh_c, WhTp.bits,
          _mask_bytes(mask), dh_next, dc_next, da, dht, trace_dh, trace_dc)


def reference(a, b):
    """What every bf16 tier computes, in float64: bf16(a) @ bf16(b), a float32 or bf16 bits. A tier
    differs from it only by float32 summation (relative to sum |a||b|, about K 2^-24)."""
    a = from_bf16(a) if np.asarray(a).dtype == np.uint16 else round_bf16(a)
    return a.astype(np.float64) @ round_bf16(b).astype(np.float64)
