"""Exact BPTT in bounded memory: activation memory and time of plain BPTT against recompute=k.

    python benchmarks/bench_recompute.py [--T 1000] [--N 32] [--D 512] [--H 512] [--k 32,40,sqrt]
                                         [--repeats 7] [--json]

Memory is measured with tracemalloc (NumPy reports its array buffers to it) on a fresh layer: "kept" is
what the layer holds between forward and backward beyond the output it returns, "peak" the most alive
during backward beyond the input, the output and backward's results (dx and the weight gradients).
Time: one training step (forward + backward) of every layer in turn, --repeats rounds after a warm-up
round; "ms" is each layer's median, "time / plain" the median over rounds of the step's time over plain
BPTT's in the same round (the machine may be shared: a slow minute then slows both sides of a ratio).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

import numpy as np

from rnnkit import LSTM, kernels


def memory(T, N, D, H, k):
    """Kept and peak activation memory (MB) of one training step of a cold layer."""
    layer = LSTM(D, H, recompute=k, seed=0)
    x, dout = _data(T, N, D, H)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out, _ = layer.forward(x)
    kept = tracemalloc.get_traced_memory()[0] - base - out.nbytes
    tracemalloc.reset_peak()
    dx, _ = layer.backward(dout)
    # dx (T, N, D) and the weight gradients are results of backward, allocated alike in both modes
    results = dx.nbytes + sum(g.nbytes for g in layer.grads.values())
    peak = tracemalloc.get_traced_memory()[1] - base - out.nbytes - results
    tracemalloc.stop()
    return kept / 2**20, peak / 2**20


def _data(T, N, D, H):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((T, N, D)).astype(np.float32),
            rng.standard_normal((T, N, H)).astype(np.float32))


def times(T, N, D, H, ks, repeats):
    """{k: [seconds per training step, one per round]}, the layers stepped in turn in each round."""
    x, dout = _data(T, N, D, H)
    layers = {k: LSTM(D, H, recompute=k, seed=0) for k in ks}
    out = {k: [] for k in ks}
    for r in range(repeats + 1):  # round 0 warms the buffer pools (not kept)
        for k, layer in layers.items():
            t0 = time.perf_counter()
            layer.forward(x)
            layer.backward(dout)
            if r:
                out[k].append(time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--D", type=int, default=512)
    ap.add_argument("--H", type=int, default=512)
    ap.add_argument("--k", default="32,40,sqrt")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (each steps every layer once)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ks = [None] + [k if k == "sqrt" else int(k) for k in args.k.split(",") if k]
    shape = (args.T, args.N, args.D, args.H)
    t = times(*shape, ks, args.repeats)
    rows = []
    for k in ks:
        kept, peak = memory(*shape, k)
        rows.append({"k": k, "kept_MB": kept, "peak_MB": peak, "ms": float(np.median(t[k])) * 1e3,
                     "time_vs_plain": float(np.median(np.array(t[k]) / np.array(t[None])))})
    base = rows[0]
    for r in rows:
        r["memory_vs_plain"] = r["peak_MB"] / base["peak_MB"]
        r["kept_vs_plain"] = r["kept_MB"] / base["kept_MB"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"LSTM T={args.T} N={args.N} D={args.D} H={args.H}, float32; {when}; rnnkit threads "
          f"{kernels.threads()}; {args.repeats} rounds; load average {' '.join(f'{v:.2f}' for v in load)}")
    print(f"{'recompute':>10} {'kept MB':>9} {'peak MB':>9} {'peak/plain':>11} {'ms':>9} {'time/plain':>11}")
    for r in rows:
        print(f"{str(r['k']):>10} {r['kept_MB']:9.1f} {r['peak_MB']:9.1f} {r['memory_vs_plain']:11.3f} "
              f"{r['ms']:9.1f} {r['time_vs_plain']:11.2f}")


if __name__ == "__main__":
    sys.exit(main())
