"""`rnnkit report DIR`: one self-contained static HTML page for a training run (no server, no network):
loss curves, and for recurrent models the gradient flow, gate histograms and an activation viewer."""

from __future__ import annotations

import json

from rnnkit.errors import UserError


def register(sub, train_sub):
    p = sub.add_parser("report", help="write a self-contained HTML report of a training run")
    p.add_argument("dir", help="run directory (holds metrics.jsonl and the checkpoints)")
    p.add_argument("--out", default=None, help="HTML file to write (default DIR/report.html)")
    p.add_argument("--chars", type=int, default=1000,
                   help="tokens of the validation text shown in the activation viewer (default 1000)")
    p.add_argument("--json", action="store_true", help="print the written path as JSON")
    p.set_defaults(func=run)


def run(args):
    from rnnkit.report.html import write_report

    if args.chars < 10:
        raise UserError(f"--chars: expected an integer >= 10, got {args.chars}")
    path = write_report(args.dir, args.out, view_chars=args.chars)
    size = path.stat().st_size
    if args.json:
        print(json.dumps({"report": str(path), "bytes": size}))
    else:
        print(f"wrote {path} ({size / 1e6:.1f} MB); open it in a browser (works offline)")
