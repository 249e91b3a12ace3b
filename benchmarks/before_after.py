"""rnnkit at an earlier commit against rnnkit now, in ONE process: the speed a change cost or won.

Separate processes differ by more than a refactoring's cost on a shared VM (where the weights land in
memory, what else runs): a 2-layer 512 LSTM sampling step measured 5-10% apart between two runs of the
same code. Here the old tree is imported beside the new one as `rnnkit_old` (its sources copied out of
git with every `rnnkit` import renamed), both build layers with the same seeds, and each pair of
timings is taken in turns by `rnnkit.bench.interleaved_times`.

    python benchmarks/before_after.py 7be9f15             # the default cases, 15 rounds
    python benchmarks/before_after.py HEAD~3 --repeats 25

Prints, per case, the median time of each side and old / new (above 1: the new code is faster).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def import_old(rev: str, where: Path):
    """The package at git revision `rev`, importable as `rnnkit_old`."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/rnnkit"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    pkg = where / "src" / "rnnkit"
    for path in pkg.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\brnnkit\.", "rnnkit_old.", text)
        text = re.sub(r"\bfrom rnnkit import\b", "from rnnkit_old import", text)
        text = re.sub(r"^import rnnkit$", "import rnnkit_old", text, flags=re.M)
        path.write_text(text)
    pkg.rename(where / "rnnkit_old")
    sys.path.insert(0, str(where))
    import rnnkit_old

    return rnnkit_old


def cases(mod, rng):
    """name -> a function timing one unit of work with the package `mod`."""
    out = {}
    for cell in ("lstm", "gru", "rnn"):
        for T, N, D, H in [(50, 1, 64, 64), (100, 32, 128, 128)]:
            layer = mod.make_recurrent(cell, D, H, seed=0)
            x = rng.standard_normal((T, N, D)).astype(np.float32)
            d = rng.standard_normal((T, N, H)).astype(np.float32)

            def step(layer=layer, x=x, d=d):
                layer.forward(x)
                layer.backward(d)

            out[f"{cell} ({T},{N},{D},{H}) forward + backward"] = step
    lstm = mod.LSTM(512, 512, num_layers=2, seed=0)
    table = lstm.input_gates(rng.standard_normal((65, 512)).astype(np.float32))
    state = [None]

    def sample(n=20):
        s = state[0]
        for i in range(n):
            _, s = lstm.step(None, s, x_gates=table[i % 65:i % 65 + 1])
        state[0] = s

    out["2x512 LSTM, 20 sampled characters"] = sample
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the earlier commit (anything git understands)")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import rnnkit
    from rnnkit.bench import interleaved_times

    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.rev, Path(tmp))
        threads = rnnkit.kernels.threads()
        old.kernels.set_threads(threads)  # both read OpenBLAS's count; the first to load set it to 1
        new_cases, old_cases = cases(rnnkit, np.random.default_rng(0)), cases(old, np.random.default_rng(0))
        fns = {}
        for name in new_cases:
            fns[("old", name)], fns[("new", name)] = old_cases[name], new_cases[name]
        times = interleaved_times(fns, args.repeats)
    print(f"{args.rev} against the working tree, {args.repeats} rounds, {threads} thread(s)")
    for name in new_cases:
        a, b = np.median(times[("old", name)]), np.median(times[("new", name)])
        print(f"  {name:<44} old {1e3 * a:8.2f} ms  new {1e3 * b:8.2f} ms  old/new {a / b:5.2f}")


if __name__ == "__main__":
    main()
