"""Forward + backward time of rnnkit's LSTM, GRU and RNN against PyTorch's on the CPU, same process.

    python benchmarks/bench_cells.py [--cells lstm,gru,rnn] [--repeats 5] [--json]

Prints torch_time / rnnkit_time per configuration: above 1 means rnnkit is faster.
"""

from __future__ import annotations

import argparse
import json
import sys

from rnnkit.bench import CONFIGS, format_table, run_benchmark


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = run_benchmark(args.cells.split(","), CONFIGS, repeats=args.repeats)
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))


if __name__ == "__main__":
    sys.exit(main())
