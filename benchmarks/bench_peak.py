"""The machine's float32 multiply-add peak, and how close each LSTM step comes to it.

    python benchmarks/bench_peak.py [--repeats 7] [--target R] [--json]

The peak is measured, not looked up: a small C loop (compiled here with the kernels' compiler) runs
twelve independent chains of vector fused multiply-adds on registers only, so nothing but the
multiply-add units limits it, on one thread and on as many as rnnkit uses. Then the LSTM forward +
backward of `rnnkit bench` (rnnkit with the BLAS rnnkit chose, and PyTorch, interleaved) is timed at
each of issue 7's shapes, and its matrix-product work (`lstm_train_flops`) divided by the time: the
fraction of that peak each side sustains over the whole step, and the fraction rnnkit would need to
be at the issue's target (or `--target`) times PyTorch's speed. A needed fraction near or above 100%
is a target no implementation can meet on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from rnnkit import kernels
from rnnkit.bench import (_rnnkit_step, _torch_step, have_torch, interleaved_times, lstm_train_flops,
                          machine_info, same_round_ratio)

# Twelve chains hide the 4-cycle latency of two multiply-add ports (8 in flight); the empty asm keeps
# the compiler from folding the loop away.
_SOURCE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static volatile float sink;
static void *chains(void *arg) {
    const long n = (long)arg;
    const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
#define D(i) __m512 a##i = _mm512_set1_ps(1.0f + i * 1e-3f);
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
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}
int main(int argc, char **argv) {
    const int threads = atoi(argv[1]);
    const long n = atol(argv[2]);
    pthread_t th[64];
    const double t0 = now();
    for (int i = 0; i < threads; i++) pthread_create(&th[i], 0, chains, (void *)n);
    for (int i = 0; i < threads; i++) pthread_join(th[i], 0);
    printf("%.6e\n", 2.0 * 16 * 12 * n * threads / (now() - t0));  /* FLOP/s: 16 lanes, 12 chains */
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


def peak(exe, threads, rounds=5, n=25_000_000):
    """Best of `rounds` runs, FLOP/s over all threads: the peak is what the units can do at all."""
    rates = []
    for _ in range(rounds):
        out = subprocess.run([exe, str(threads), str(n)], capture_output=True, text=True, check=True)
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved steps per side and shape")
    ap.add_argument("--target", type=float, help="torch / rnnkit ratio to cost at every shape "
                    "(default: issue 7's, 2.0 / 1.25 / 1.0)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        if exe is None:
            raise SystemExit("bench_peak: could not compile the AVX-512 peak loop here")
        k = kernels.threads()  # the threads rnnkit's steps run on
        peaks = {t: peak(exe, t) for t in sorted({1, k})}
    torch_too = have_torch()
    rows = step_rates(args.repeats, torch_too)
    against_peak(rows, peaks[k], args.target)
    if args.json:
        print(json.dumps({"machine": machine_info(), "blas": kernels.status().get("blas"),
                          "peak_gflops": {t: v / 1e9 for t, v in peaks.items()}, "rows": rows},
                         indent=1))
        return
    print("register-only multiply-add peak: "
          + ", ".join(f"{t} thread{'s' * (t > 1)} {v / 1e9:.0f} GFLOP/s" for t, v in peaks.items()))
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


if __name__ == "__main__":
    main()
