"""Data-parallel training over MPI on this machine: the README's language model (`rnnkit train lm`, a
2x256 LSTM, --batch 32 --seq-len 64) on one process with every core's threads against `mpiexec -n P`
with cores / P threads per rank, and the time of one allreduce of the gradient buffer of this model and
of larger ones.

    python benchmarks/bench_mpi.py [--steps 60] [--rounds 2] [--ranks 2] [--hidden 256]

The runs alternate (1 process, P ranks, 1 process, ...); the figures are each side's median
characters/s over the rounds, the step loop only (`fit`'s tokens_per_s: evaluation excluded).
`--allreduce` (under mpiexec) is the timing of the sum alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def lm_params(hidden, layers=2, embed=64, vocab=100):
    """Parameters of the LM: embedding, LSTM layers (4H x (D + H) + 4H), head."""
    n, d = vocab * embed, embed
    for _ in range(layers):
        n += 4 * hidden * (d + hidden) + 4 * hidden
        d = hidden
    return n + hidden * vocab + vocab


def allreduce_times(sizes, reps=20):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = {}
    for n in sizes:
        buf = np.ones(n, dtype=np.float32)
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)  # untimed: the first call sets up
        times = []
        for _ in range(reps):
            comm.Barrier()
            t = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t)
        out[n] = statistics.median(times)
    if comm.rank == 0:
        print(json.dumps({str(k): v for k, v in out.items()}))


def mpiexec():
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else "mpiexec"


def train(ranks, args, out):
    cmd = [sys.executable, "-m", "rnnkit", "train", "lm", "--steps", str(args.steps), "--hidden",
           str(args.hidden), "--eval-every", str(10 * args.steps), "--eval-chars", "2000",
           "--no-progress", "--json", "--out", out, "--force"]
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--allreduce", action="store_true", help="(under mpiexec) time the allreduce")
    args = p.parse_args()
    sizes = [lm_params(256), lm_params(512), lm_params(1024), lm_params(2048)]
    if args.allreduce:
        allreduce_times(sizes)
        return
    speeds = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for P in speeds:
                speeds[P].append(train(P, args, f"{tmp}/p{P}"))
    one, many = statistics.median(speeds[1]), statistics.median(speeds[args.ranks])
    print(f"LM 2x{args.hidden}, {args.steps} steps, {os.cpu_count()} cores: 1 process "
          f"{one:,.0f} chars/s, {args.ranks} ranks {many:,.0f} chars/s: {many / one:.2f}x, "
          f"efficiency {many / one / args.ranks:.2f} per rank (rounds: {speeds})")
    r = subprocess.run([mpiexec(), "-n", str(args.ranks), sys.executable, __file__, "--allreduce"],
                       capture_output=True, text=True, check=True)
    for n, t in json.loads(r.stdout).items():
        n = int(n)
        print(f"allreduce of {n:,} float32 ({4 * n / 2**20:.1f} MiB) over {args.ranks} ranks: "
              f"{t * 1e3:.2f} ms ({4 * n / t / 2**30:.2f} GiB/s)")


if __name__ == "__main__":
    main()
