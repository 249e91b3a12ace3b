"""One layer's forward + backward with each BLAS rnnkit can call, and PyTorch's, in one process.

    python benchmarks/bench_blas.py [--cells lstm] [--blas numpy,mkl] [--repeats 11] [--json]

Each round steps rnnkit with every BLAS in turn (`rnnkit.kernels.set_blas` between calls: the compiled
loops and `kernels.matmul` take the new gemm at their next call) and then PyTorch, so that all sides
of a ratio see the same minute of a shared machine; "torch / rnnkit" is the median over rounds of
each round's own ratio. MKL needs Intel's `mkl` wheel (`pip install -e '.[mkl]'`); a BLAS that cannot
be loaded is left out with a line saying why.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from rnnkit import kernels
from rnnkit.bench import (CONFIGS, _rnnkit_step, _torch_step, have_torch, interleaved_times, machine_info,
                          same_round_ratio)


def run(cells, blases, configs=CONFIGS, repeats=11):
    """Rows {cell, T, N, D, H, ms: {name: median ms}, ratio: {blas: torch / rnnkit}}."""
    usable = {}
    for name in blases:
        try:
            usable[name] = kernels.set_blas(name)
        except (ValueError, RuntimeError) as e:
            print(f"bench_blas: {name}: {e}; left out", file=sys.stderr)
    torch_too = have_torch()
    rows = []
    for cell in cells:
        for T, N, D, H in configs:
            step = _rnnkit_step(cell, T, N, D, H)
            fns = {name: _with_blas(name, step) for name in usable}
            if torch_too:
                fns["torch"] = _torch_step(cell, T, N, D, H)
            times = interleaved_times(fns, repeats)
            row = {"cell": cell, "T": T, "N": N, "D": D, "H": H,
                   "ms": {k: float(np.median(v)) * 1e3 for k, v in times.items()}}
            if torch_too:
                row["ratio"] = {k: same_round_ratio(times["torch"], times[k]) for k in usable}
            rows.append(row)
    return rows, usable


def _with_blas(name, step):
    def f():
        kernels.set_blas(name)
        step()
    return f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="lstm")
    ap.add_argument("--blas", default="numpy,mkl", help="comma-separated: numpy, mkl, or CBLAS paths")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows, usable = run(args.cells.split(","), args.blas.split(","), repeats=args.repeats)
    if args.json:
        print(json.dumps({"machine": machine_info(), "blas": usable, "rows": rows}, indent=1))
        return
    names = list(usable)
    print("  ".join(f"{n}: {p}" for n, p in usable.items()))
    head = f"{'cell':5} {'(T, N, D, H)':>20} " + " ".join(f"{n + ' ms':>10}" for n in names)
    head += f" {'torch ms':>10} " + " ".join(f"{'torch/' + n:>13}" for n in names)
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = f"({r['T']}, {r['N']}, {r['D']}, {r['H']})"
        line = f"{r['cell']:5} {shape:>20} " + " ".join(f"{r['ms'][n]:10.2f}" for n in names)
        if "ratio" in r:
            line += f" {r['ms']['torch']:10.2f} " + " ".join(f"{r['ratio'][n]:13.2f}" for n in names)
        print(line)


if __name__ == "__main__":
    main()
