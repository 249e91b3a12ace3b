"""Exact BPTT in bounded memory: activation memory and time of plain BPTT against recompute=k.

    python benchmarks/bench_recompute.py [--T 1000] [--N 32] [--D 512] [--H 512] [--k 32,40,sqrt]
                                         [--repeats 7] [--json]

The measurement is `rnnkit.bench.recompute` (also `rnnkit bench --recompute`). Memory is measured with
tracemalloc (NumPy reports its array buffers to it) on a fresh layer: "kept" is what the layer holds
between forward and backward beyond the output it returns, "peak" the most alive during backward beyond
the input, the output and backward's results (dx and the weight gradients). Time: one training step
(forward + backward) of every layer in turn, --repeats rounds after a warm-up round; "ms" is each
layer's median, "time / plain" the median over rounds of the step's time over plain BPTT's in the same
round (the machine may be shared: a slow minute then slows both sides of a ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rnnkit import kernels
from rnnkit.bench import format_recompute, recompute


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
    ks = [k if k == "sqrt" else int(k) for k in args.k.split(",") if k]
    shape = (args.T, args.N, args.D, args.H)
    rows = recompute(*shape, ks=ks, repeats=args.repeats)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{when}; rnnkit threads {kernels.threads()}; {args.repeats} rounds; load average "
          f"{' '.join(f'{v:.2f}' for v in load)}")
    print(format_recompute(rows, shape))


if __name__ == "__main__":
    sys.exit(main())
