"""`rnnkit compare`: the registered cells side by side on one task at an equal parameter count and an
equal budget, or (`--speed`) the training speed of their recurrent stacks against the sequence length.
The figures are `rnnkit.tasks.compare`'s, the picture and the page `rnnkit.report.compare`'s.
"""

from __future__ import annotations

import argparse
import json

from rnnkit.cli import positive_int
from rnnkit.cli._cells import add_cell_args, cell_options
from rnnkit.cli.memory import _lengths
from rnnkit.errors import UserError


def _cells(text):
    """argparse type: comma-separated cell names (checked against the registry by the config)."""
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    if not cells:
        raise argparse.ArgumentTypeError(f"expected comma-separated cell names, got {text!r}")
    return cells


def _layers(text):
    """argparse type: "2", or "2,mamba=1,lstm=1" (every cell 2 layers but those named) ->
    (default or None, {cell: layers})."""
    default, of = None, {}
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "=" in part:
                cell, n = part.split("=", 1)
                of[cell.strip().lower()] = int(n)
            else:
                default = int(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer count and cell=count pairs, e.g. "
                                         f"2,lstm=1, got {text!r}") from None
    if min([v for v in [default, *of.values()] if v is not None], default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer counts, got {text!r}")
    return default, of


def register(sub, train_sub):
    from rnnkit import cells
    from rnnkit.tasks.compare import DEFAULT_LENGTHS, TASKS

    p = sub.add_parser("compare", help="train every cell on one task at equal parameters and budget, "
                                       "side by side (or --speed: tokens/s against the length)")
    p.add_argument("--task", choices=list(TASKS), default="selective-copy",
                   help="; ".join(f"{k}: {v.title}" for k, v in TASKS.items())
                   + " (default selective-copy, which needs no data)")
    p.add_argument("--cells", type=_cells, default=[],
                   help=f"comma-separated cells (default every registered one: {','.join(cells.names())})")
    p.add_argument("--params", type=int, default=None,
                   help="target parameter count; each cell's hidden size is chosen so that its model's "
                        "count is closest (default: the task's, "
                        + ", ".join(f"{k} {v.params:,}" for k, v in TASKS.items()) + ")")
    p.add_argument("--layers", type=_layers, default=(None, {}),
                   help="recurrent layers of every cell, and cell=count exceptions (default 2; e.g. "
                        "2,lstm=1,gru=1)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="budget of each cell's run in minutes (evaluations included)")
    budget.add_argument("--updates", type=positive_int, default=None,
                        help="budget of each cell's run in updates (default: the task's, "
                             + ", ".join(f"{k} {v.updates}" for k, v in TASKS.items()) + ")")
    p.add_argument("--eval-every", type=positive_int, default=None,
                   help="updates between evaluations, the curves' points (default: the task's)")
    p.add_argument("--data", default=None,
                   help="lm: the text (default $RNNKIT_DATA/tinyshakespeare/input.txt)")
    p.add_argument("--seed", type=int, default=0, help="weights, batches and test set (0)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<task>)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier comparison in --out and its runs (refused without)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    s = p.add_argument_group("--speed")
    s.add_argument("--speed", action="store_true",
                   help="instead: training tokens/s of each cell's recurrent stack against the "
                        "sequence length, at the sizes --params gives (speed.json, speed.md)")
    s.add_argument("--lengths", type=_lengths, default=list(DEFAULT_LENGTHS),
                   help=f"sequence lengths of --speed (default {','.join(map(str, DEFAULT_LENGTHS))})")
    s.add_argument("--batch", type=positive_int, default=16, help="batch of --speed (16)")
    add_cell_args(p.add_argument_group("the cells' options (each cell takes those it has)"),
                  shown={"forget_bias": "1.0"})
    p.set_defaults(func=run)


def config_from(args):
    from rnnkit.tasks.compare import CompareConfig

    if args.speed and (args.minutes is not None or args.updates is not None):
        raise UserError("--speed times the stacks' forward and backward: drop --minutes / --updates")
    cfg = CompareConfig(task=args.task, cells=args.cells, params=args.params,
                        layers=args.layers[0] or CompareConfig.layers, layers_of=args.layers[1],
                        minutes=args.minutes, updates=args.updates, eval_every=args.eval_every,
                        seed=args.seed, data=args.data, force=args.force,
                        progress=not (args.no_progress or args.json), lengths=args.lengths,
                        speed_batch=args.batch)
    cfg.validate()  # before the options: an unknown cell is named as such
    cfg.cell_options = cell_options(args, *cfg.chosen_cells())
    return cfg


def run(args):
    from rnnkit.report.compare import plot_curves, write_page
    from rnnkit.tasks.compare import read_json_if_any, run_compare, speed_table

    cfg = config_from(args)
    out = args.out or f"runs/compare-{cfg.task}"
    say = (lambda *_: None) if args.json else print
    if args.speed:
        speed = speed_table(cfg, out, log=lambda T, by: say(
            f"T = {T}: " + ", ".join(f"{c} {v:,.0f}" for c, v in by.items()) + " tokens/s"))
        page = write_page(out, read_json_if_any(f"{out}/compare.json"), speed)
        files = [f"{out}/speed.json", f"{out}/speed.md", str(page)]
        if args.json:
            print(json.dumps({**speed, "files": files}))
        else:
            from rnnkit.tasks.compare import speed_markdown

            print(speed_markdown(speed))
            print(f"wrote {', '.join(files)}")
        return 0
    result = run_compare(cfg, out, log=lambda row: say(_row_line(row)))
    png = plot_curves(result, f"{out}/loss.png")
    page = write_page(out, result, read_json_if_any(f"{out}/speed.json"))
    files = [f"{out}/compare.json", f"{out}/compare.md"] + ([str(png)] if png else []) + [str(page)]
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "curves"} | {"files": files}))
    else:
        from rnnkit.tasks.compare import markdown

        print(markdown(result))
        print(f"wrote {', '.join(files)}")
    failed = [r["cell"] for r in result["rows"] if r["status"] != "ok"]
    return 1 if failed and len(failed) == len(result["rows"]) else 0


def _row_line(row):
    if row["status"] != "ok":
        return f"{row['cell']}: failed: {row['error']} ({row['seconds']:.0f} s)"
    metric = "" if row["metric"] is None else f"{row['metric']:.4f} "
    return (f"{row['cell']} {row['layers']}x{row['hidden']} ({row['params']:,} parameters): "
            f"{metric}after {row['steps']} updates, "
            f"{row['train_tokens_per_s']:,.0f} training tokens/s, {row['gen_tokens_per_s']:,.0f} "
            f"generated/s ({row['seconds']:.0f} s)")
