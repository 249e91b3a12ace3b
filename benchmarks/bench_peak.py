"""The machine's multiply-add peaks, float32 and bf16, how close each LSTM step comes to the float32
one, and the bf16 products against the peers'.

    python benchmarks/bench_peak.py [--repeats 7] [--target R] [--json] [--skip-steps]
                                    [--skip-products] [--mkl-lib PATH] [--lstm-bf16]

The peaks are measured, not looked up: a small C loop (compiled here with the kernels' compiler) runs
on registers only, so nothing but the arithmetic units limits it, on one thread and on as many as
rnnkit uses: twelve independent chains of vector fused multiply-adds (float32), of VDPBF16PS (bf16
pairs into float32, where the CPU has AVX512_BF16), and of TDPBF16PS on four AMX tiles (where it has
AMX and Linux grants the tile data). Then the LSTM forward + backward of `rnnkit bench` (rnnkit with
the BLAS rnnkit chose, and PyTorch, interleaved) is timed at each of issue 7's shapes, and its
matrix-product work (`lstm_train_flops`) divided by the time: the fraction of the float32 peak each
side sustains over the whole step, and the fraction rnnkit would need to be at the issue's target
(or `--target`) times PyTorch's speed. A needed fraction near or above 100% is a target no
implementation can meet on this machine.

Last, the products alone, interleaved in one process at 4096^3 and at the LSTM's shapes (M = N T rows
for the input projection, N rows for a step's h Wh; K = H, N = 4H): rnnkit's bf16 product
(`kernels.bf16.matmul`, B packed once, A's conversion timed), PyTorch's bf16 `torch.mm`, float32
`kernels.matmul` (NumPy's BLAS cut across rnnkit's threads) and, given a `libmkl_rt` (`--mkl-lib`,
default the `mkl` wheel of this environment), MKL's `cblas_gemm_bf16bf16f32` on operands converted to
bf16 beforehand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import ctypes
import tempfile
import time

import numpy as np

from rnnkit import kernels
from rnnkit.kernels import bf16
from rnnkit.bench import (_rnnkit_step, _torch_step, have_torch, interleaved_times, lstm_train_flops,
                          machine_info, same_round_ratio)

# Twelve chains hide the 4-cycle latency of two multiply-add ports (8 in flight); the empty asm keeps
# the compiler from folding the loop away. The tile loop keeps four accumulator tiles busy from two A
# and two B tiles, the 2 x 2 blocking of rnnkit's own AMX product (kernels/bf16.c). Exit status 3: the
# CPU (or the compiler, or Linux) cannot run that loop.
_SOURCE = r"""
#include <immintrin.h>
#include <cpuid.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11
#define BF16_LOOPS 1
#endif
static volatile float sink;
static long n;
#define D(i) __m512 a##i = _mm512_set1_ps(1.0f + i * 1e-3f);
static void *chains(void *arg) {
    (void)arg;
    const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11)
#define F(i) a##i = _mm512_fmadd_ps(a##i, m, c);
    for (long k = 0; k < n; k++) {
        F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
        __asm__ volatile("" ::"v"(a0), "v"(a1), "v"(a2), "v"(a3), "v"(a4), "v"(a5), "v"(a6),
                         "v"(a7), "v"(a8), "v"(a9), "v"(a10), "v"(a11));
    }
    sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a11), _mm512_add_ps(a5, a6)));
    return 0;
}
#ifdef BF16_LOOPS
__attribute__((target("avx512f,avx512bf16"))) static void *dp_chains(void *arg) {
    (void)arg;
    const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);  /* pairs of 1.0 */
    const __m512bh y = (__m512bh)_mm512_set1_epi32(0x33d633d6);  /* pairs of 1e-7 */
    D(0) D(1) D(2) D(3) D(4) D(5) D(6) D(7) D(8) D(9) D(10) D(11)
#define P(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
    for (long k = 0; k < n; k++) {
        P(0) P(1) P(2) P(3) P(4) P(5) P(6) P(7) P(8) P(9) P(10) P(11)
        __asm__ volatile("" ::"v"(a0), "v"(a1), "v"(a2), "v"(a3), "v"(a4), "v"(a5), "v"(a6),
                         "v"(a7), "v"(a8), "v"(a9), "v"(a10), "v"(a11));
    }
    sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a11), _mm512_add_ps(a5, a6)));
    return 0;
}
__attribute__((target("amx-tile,amx-bf16"))) static void *tile_loop(void *arg) {
    (void)arg;
    struct { uint8_t palette, start, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg;
    static const uint16_t zeros[16 * 32] __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, zeros, 64); _tile_loadd(5, zeros, 64);
    _tile_loadd(6, zeros, 64); _tile_loadd(7, zeros, 64);
    for (long k = 0; k < n; k++) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    float out[256];
    _tile_stored(0, out, 64);
    sink = out[0];
    _tile_release();
    return 0;
}
#endif
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
int main(int argc, char **argv) {
    const int threads = atoi(argv[1]);
    n = atol(argv[2]);
    const char *mode = argc > 3 ? argv[3] : "fma";
    void *(*fn)(void *) = chains;
    double per = 2.0 * 16 * 12;  /* FLOP per iteration: 16 lanes, 12 chains */
    unsigned a, b, c, d;
    if (!strcmp(mode, "dpbf16")) {
#ifdef BF16_LOOPS
        if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a >> 5 & 1)) return 3;
        fn = dp_chains, per = 2.0 * 32 * 12;  /* 16 lanes x 2 bf16 pairs */
#else
        return 3;
#endif
    } else if (!strcmp(mode, "amx")) {
#ifdef BF16_LOOPS
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 22 & 1) || !(d >> 24 & 1)) return 3;
        if (syscall(SYS_arch_prctl, 0x1023, 18)) return 3;  /* ARCH_REQ_XCOMP_PERM, XTILEDATA */
        fn = tile_loop, per = 4 * 2.0 * 16 * 16 * 32;  /* four 16 x 16 x 32 tile products */
#else
        return 3;
#endif
    }
    pthread_t th[64];
    const double t0 = now();
    for (int i = 0; i < threads; i++) pthread_create(&th[i], 0, fn, 0);
    for (int i = 0; i < threads; i++) pthread_join(th[i], 0);
    printf("%.6e\n", per * n * threads / (now() - t0));
    return 0;
}
"""

# issue 7's shapes and its torch / rnnkit target at each
TARGETS = {(100, 32, 128, 128): 2.0, (100, 32, 256, 256): 1.25, (100, 64, 512, 512): 1.0}


def build(workdir):
    """Compile the peak loop; None where there is no C compiler or no AVX-512 (the loop needs it)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = os.path.join(workdir, "peak.c"), os.path.join(workdir, "peak")
    with open(src, "w") as f:
        f.write(_SOURCE)
    r = subprocess.run([cc, "-O2", "-march=native", "-pthread", src, "-o", exe], capture_output=True)
    return exe if r.returncode == 0 else None


# iterations per run of each loop: a few tenths of a second at the expected rates
LOOPS = {"fma": 25_000_000, "dpbf16": 25_000_000, "amx": 2_000_000}


def peak(exe, threads, rounds=5, mode="fma", n=None):
    """Best of `rounds` runs, FLOP/s over all threads: the peak is what the units can do at all; None
    where this CPU cannot run the loop of `mode` (fma, dpbf16, amx). n: the loop's iterations (the
    mode's default: long enough to time)."""
    rates = []
    for _ in range(rounds):
        out = subprocess.run([exe, str(threads), str(n or LOOPS[mode]), mode], capture_output=True,
                             text=True)
        if out.returncode == 3:
            return None
        out.check_returncode()
        rates.append(float(out.stdout))
    return max(rates)


def step_rates(repeats, torch_too, configs=tuple(TARGETS)):
    """Per shape: median ms of rnnkit's and PyTorch's LSTM step (interleaved) and their ratio."""
    rows = []
    for T, N, D, H in configs:
        fns = {"rnnkit": _rnnkit_step("lstm", T, N, D, H)}
        if torch_too:
            fns["torch"] = _torch_step("lstm", T, N, D, H)
        times = interleaved_times(fns, repeats)
        row = {"T": T, "N": N, "D": D, "H": H, "flop": lstm_train_flops(T, N, D, H),
               "ms": {k: float(np.median(v)) * 1e3 for k, v in times.items()}}
        if torch_too:
            row["ratio"] = same_round_ratio(times["torch"], times["rnnkit"])
        rows.append(row)
    return rows


def against_peak(rows, peak_flops, target=None):
    """Add to each row the fraction of `peak_flops` each side sustains and, with PyTorch's time, the
    fraction rnnkit would need to be `target` (default: issue 7's at that shape) times as fast."""
    for r in rows:
        r["of_peak"] = {k: r["flop"] / (ms / 1e3) / peak_flops for k, ms in r["ms"].items()}
        if "torch" in r["ms"]:
            r["target"] = target or TARGETS[(r["T"], r["N"], r["D"], r["H"])]
            r["needed_for_target"] = r["flop"] / (r["ms"]["torch"] / 1e3 / r["target"]) / peak_flops
    return rows


# (M, K, N) of the products: 4096^3, then per issue-7 shape (T, N, H) the input projection
# (T N, H) @ (H, 4H) and a step's (N, H) @ (H, 4H)
PRODUCT_SHAPES = [(4096, 4096, 4096), (3200, 128, 512), (32, 128, 512), (3200, 256, 1024),
                  (32, 256, 1024), (6400, 512, 2048), (64, 512, 2048)]


def _mkl_bf16(path):
    """MKL's cblas_gemm_bf16bf16f32 from the libmkl_rt at `path`, on rnnkit's thread count, or None."""
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        fn = lib.cblas_gemm_bf16bf16f32
    except (OSError, AttributeError):
        return None
    lib.MKL_Set_Num_Threads(kernels.threads())
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p  # libmkl_rt's default LP64 interface
    fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    fn.restype = None
    return fn


def _repeated(fn, seconds=0.05):
    """fn called often enough that one timing lasts about `seconds` (a step's product takes µs)."""
    t0 = time.perf_counter()
    fn()
    n = max(1, int(seconds / max(time.perf_counter() - t0, 1e-7)))

    def run():
        for _ in range(n):
            fn()

    return run, n


def product_rates(repeats, shapes=PRODUCT_SHAPES, mkl_lib=None):
    """Per shape: GFLOP/s of each side's product, interleaved, and rnnkit's bf16 / each side."""
    torch = None
    if have_torch():
        import torch
    mkl = _mkl_bf16(mkl_lib) if mkl_lib else None
    rows = []
    for M, K, N in shapes:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        pb = bf16.pack(b)
        sides = {f"rnnkit bf16 ({bf16.tier()})": lambda: bf16.matmul(a, pb, out=c)}
        if "amx" in bf16.detect()["runnable"]:
            sides["rnnkit bf16 (avx512_bf16)"] = lambda: bf16.matmul(a, pb, out=c, tier="avx512_bf16")
        sides["float32 kernels.matmul"] = lambda: kernels.matmul(a, b, out=c)
        if torch is not None:
            ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
            tc = torch.empty(M, N, dtype=torch.bfloat16)
            sides["torch bf16 mm"] = lambda: torch.mm(ta, tb, out=tc)
        if mkl is not None:
            ab, bb = bf16.to_bf16(a), bf16.to_bf16(b)
            sides["mkl gemm_bf16bf16f32"] = lambda: mkl(101, 111, 111, M, N, K, 1.0, ab.ctypes.data, K,
                                                        bb.ctypes.data, N, 0.0, c.ctypes.data, N)
        calls, counts = {}, {}
        for name, fn in sides.items():
            calls[name], counts[name] = _repeated(fn)
        times = interleaved_times(calls, repeats)
        flop = 2.0 * M * K * N
        gflops = {k: flop * counts[k] / float(np.median(v)) / 1e9 for k, v in times.items()}
        ours = next(iter(sides))
        rows.append({"M": M, "K": K, "N": N, "gflops": gflops,
                     "rnnkit_over": {k: same_round_ratio(np.asarray(v) / counts[k],
                                                         np.asarray(times[ours]) / counts[ours])
                                     for k, v in times.items() if k != ours}})
    return rows


def lstm_bf16_forward_rates(repeats, shape=(100, 64, 512, 512)):
    """The LSTM forward alone at (T, N, D, H), ms, interleaved: rnnkit float32 (`lstm_forward`),
    rnnkit bf16-mixed (`lstm_forward_bf16`, Wx and Wh packed beforehand, as a layer keeps them),
    PyTorch's nn.LSTM float32 and under bf16 autocast, both without autograd."""
    from rnnkit.cells.lstm import lstm_forward, lstm_forward_bf16, lstm_pack_bf16

    T, N, D, H = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    h0 = c0 = np.zeros((N, H), np.float32)
    Wx = (rng.standard_normal((D, 4 * H)) / D**0.5).astype(np.float32)
    Wh = (rng.standard_normal((H, 4 * H)) / H**0.5).astype(np.float32)
    b = np.zeros(4 * H, np.float32)
    packed = lstm_pack_bf16(Wx, Wh)
    sides = {"rnnkit float32": lambda: lstm_forward(x, h0, c0, Wx, Wh, b),
             f"rnnkit bf16 ({bf16.tier()})": lambda: lstm_forward_bf16(x, h0, c0, Wx, Wh, b,
                                                                       packed=packed)}
    if have_torch():
        import torch

        m, tx = torch.nn.LSTM(D, H), torch.from_numpy(x)

        def torch32():
            with torch.no_grad():
                m(tx)

        def torch_bf16():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                m(tx)

        sides.update({"torch float32": torch32, "torch bf16 autocast": torch_bf16})
    times = interleaved_times(sides, repeats)
    ours = f"rnnkit bf16 ({bf16.tier()})"
    return {"T": T, "N": N, "D": D, "H": H,
            "ms": {k: float(np.median(v)) * 1e3 for k, v in times.items()},
            "over_rnnkit_bf16": {k: same_round_ratio(v, times[ours]) for k, v in times.items()
                                 if k != ours}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved steps per side and shape")
    ap.add_argument("--target", type=float, help="torch / rnnkit ratio to cost at every shape "
                    "(default: issue 7's, 2.0 / 1.25 / 1.0)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-steps", action="store_true", help="no LSTM steps")
    ap.add_argument("--skip-products", action="store_true", help="no bf16 products")
    ap.add_argument("--lstm-bf16", action="store_true", help="also the LSTM forward in bf16-mixed "
                    "at (100, 64, 512, 512) against PyTorch float32 and bf16 autocast")
    ap.add_argument("--mkl-lib", default=kernels.mkl_path(),
                    help="libmkl_rt whose cblas_gemm_bf16bf16f32 to time (default: the mkl wheel "
                    "here, if any)")
    args = ap.parse_args(argv)
    if args.mkl_lib and not os.path.exists(args.mkl_lib):
        raise SystemExit(f"bench_peak: --mkl-lib {args.mkl_lib}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        if exe is None:
            raise SystemExit("bench_peak: could not compile the AVX-512 peak loop here")
        k = kernels.threads()  # the threads rnnkit's steps run on
        peaks = {mode: {t: peak(exe, t, mode=mode) for t in sorted({1, k})} for mode in LOOPS}
    torch_too = have_torch()
    rows = [] if args.skip_steps else step_rates(args.repeats, torch_too)
    against_peak(rows, peaks["fma"][k], args.target)
    prods = [] if args.skip_products else product_rates(max(3, args.repeats // 2),
                                                        mkl_lib=args.mkl_lib)
    lstm = lstm_bf16_forward_rates(args.repeats) if args.lstm_bf16 else None
    if args.json:
        print(json.dumps({"machine": machine_info(), "blas": kernels.status().get("blas"),
                          "bf16": kernels.status()["bf16"],
                          "bf16_reason": kernels.status()["bf16_reason"],
                          "peak_gflops": {t: v / 1e9 for t, v in peaks["fma"].items()},
                          "bf16_peak_gflops": {mode: {t: v and v / 1e9 for t, v in peaks[mode].items()}
                                               for mode in ("dpbf16", "amx")},
                          "rows": rows, "products": prods, "lstm_bf16_forward": lstm}, indent=1))
        return
    names = {"fma": "float32 FMA", "dpbf16": "bf16 VDPBF16PS", "amx": "bf16 AMX tiles"}
    print("register-only peaks:")
    for mode, by_threads in peaks.items():
        print(f"  {names[mode]:>15}: " + ", ".join(
            f"{t} thread{'s' * (t > 1)} " + ("n/a" if v is None else f"{v / 1e9:.0f} GFLOP/s")
            for t, v in by_threads.items()))
    if rows:
        head = f"{'(T, N, D, H)':>20} {'GFLOP':>6} {'rnnkit ms':>10} {'of peak':>8}"
        if torch_too:
            head += f" {'torch ms':>9} {'of peak':>8} {'torch/rnnkit':>13} {'target':>7} {'needs':>6}"
        print(head)
    for r in rows:
        shape = f"({r['T']}, {r['N']}, {r['D']}, {r['H']})"
        line = (f"{shape:>20} {r['flop'] / 1e9:6.2f} {r['ms']['rnnkit']:10.2f} "
                f"{r['of_peak']['rnnkit']:8.0%}")
        if torch_too:
            line += (f" {r['ms']['torch']:9.2f} {r['of_peak']['torch']:8.0%} {r['ratio']:13.2f} "
                     f"{r['target']:7.2f} {r['needed_for_target']:6.0%}")
        print(line)
    if prods:
        print(f"products, GFLOP/s (bf16 tier {kernels.status()['bf16']}; "
              f"{kernels.status()['bf16_reason'] or ''})")
        sides = list(prods[0]["gflops"])
        print(f"{'(M, K, N)':>20} " + " ".join(f"{s:>26}" for s in sides))
        for r in prods:
            print(f"{str((r['M'], r['K'], r['N'])):>20} "
                  + " ".join(f"{r['gflops'][s]:26.0f}" for s in sides))
    if lstm:
        print(f"LSTM forward at {(lstm['T'], lstm['N'], lstm['D'], lstm['H'])}, ms: "
              + ", ".join(f"{k} {v:.1f}" for k, v in lstm["ms"].items()) + "; each / rnnkit bf16: "
              + ", ".join(f"{k} {v:.2f}" for k, v in lstm["over_rnnkit_bf16"].items()))


if __name__ == "__main__":
    main()
