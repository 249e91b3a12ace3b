"""`rnnkit bench`: forward + backward timing of the cells against PyTorch on this machine."""

from __future__ import annotations

import json

from rnnkit.bench import CONFIGS, format_table, machine_info, run_benchmark
from rnnkit.errors import UserError


def register(sub, train_sub):
    p = sub.add_parser("bench", help="time rnnkit's cells against PyTorch's on this machine")
    p.add_argument("--cells", default="lstm,gru,rnn", help="comma-separated: lstm,gru,rnn")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args):
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in ("lstm", "gru", "rnn")]
    if bad or not cells:
        raise UserError(f"--cells: expected a comma-separated list of lstm, gru, rnn; got {args.cells!r}")
    if args.repeats < 1:
        raise UserError(f"--repeats: expected a positive integer, got {args.repeats}")
    rows = run_benchmark(cells, CONFIGS, repeats=args.repeats)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
    else:
        print(format_table(rows))
