"""Single-stream sampling speed: characters per second of a 2-layer LSTM (batch 1), rnnkit vs PyTorch.

    python benchmarks/bench_sampling.py [--chars 1000] [--hidden 512] [--layers 2] [--vocab 65] [--json]

The measurement is `rnnkit.bench.sampling` (also `rnnkit bench --sampling`): embedding row -> LSTM one
step -> linear -> softmax -> draw, PyTorch's nn.LSTM stepped one character at a time, interleaved.
"""

from __future__ import annotations

import argparse
import json
import sys

from rnnkit.bench import sampling


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    row = sampling(args.chars, args.hidden, args.layers, args.vocab)
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        print(", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    sys.exit(main())
