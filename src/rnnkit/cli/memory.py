"""`rnnkit train adding|copy|selective-copy|induction|recall`, `rnnkit experiment vanishing`, and
`evaluate(args)` for `rnnkit eval DIR` on runs of the long-range memory tasks (`rnnkit.data.synthetic`,
`rnnkit.models.memory`, `rnnkit.tasks.memory`).

`rnnkit eval DIR` on an induction run reports the accuracy at the training length and at 2, 4, 8 and 16
times it (or at `--lengths`), the length generalisation of Gu and Dao (2023, section 4.1). On a recall
run, at 1, 2, 4 and 8 times it with the pairs scaled alike (Zoology's figure 2 grid: (64, 4), (128, 8),
(256, 16)), as far as the vocabulary has keys: how much a fixed-size state holds.

`rnnkit experiment vanishing` trains each cell on the adding problem at each length for a fixed budget
of updates (stopping early once solved), measures the gradient flow ||dL/dh_t|| against the lag at
initialisation and after training, and writes vanishing.json, vanishing.md and one PNG per cell.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rnnkit.cli._cells import add_cell_args, cell_options, own_options
from rnnkit.cli._training import add_optimization_args, add_run_args, check, check_run_flags, \
    resolve, train_config
from rnnkit.errors import UserError

SOLVED_MSE = 0.01  # the adding problem counts as solved below this test MSE (Le et al. 2015 use 0.01)
# Defaults of the training flags; a resumed run keeps its own (`rnnkit.cli._training.resolve`).
# checkpoint_every None: --eval-every's.
TRAIN_DEFAULTS = {"steps": 2000, "minutes": None, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0,
                  "clip": 1.0, "schedule": "constant", "warmup": 0, "eval_every": 200,
                  "checkpoint_every": None, "patience": 0, "ema": 0.0}
# Defaults of the selection tasks' model and data flags where they are not MemoryConfig's: lengths a
# 2-core CPU trains an LSTM of 64 units on in a few minutes.
SELECTION_DEFAULTS = {"selective-copy": {"length": 64}, "induction": {"length": 64},
                      # Zoology's small configuration (zoology/experiments/examples/basic.py): vocabulary
                      # 256, length 64, 4 pairs; the tokens embedded in 32 dimensions, so that the
                      # cells of RESULTS' selection runs have 23-25K recurrent parameters here
                      "recall": {"length": 64, "vocab": 256, "pairs": 4, "embed": 32}}
# ... and of their training flags where they are not TRAIN_DEFAULTS's
SELECTION_TRAIN_DEFAULTS = {"selective-copy": {"steps": 5000, "eval_every": 500},
                            "induction": {"steps": 2000, "eval_every": 200},
                            "recall": {"steps": 3000, "eval_every": 500}}
# eval of an induction run without --lengths: these multiples of the training length
INDUCTION_TEST_MULTIPLES = (1, 2, 4, 8, 16)
# ... of a recall run, the pairs scaled alike, those the vocabulary has keys for
RECALL_TEST_MULTIPLES = (1, 2, 4, 8)


def train_defaults(task):
    """The defaults of the training flags of `rnnkit train TASK`."""
    return {**TRAIN_DEFAULTS, **SELECTION_TRAIN_DEFAULTS.get(task, {})}


def _positive_int(s):
    """argparse type: an integer >= 1 (argparse names the flag in its message and exits 2)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _lengths(s):
    """argparse type: comma-separated sequence lengths, each >= 2."""
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 2, got {s!r}") from None
    if not vals or min(vals) < 2:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 2, got {s!r}")
    return vals


def _cell_list(s):
    from rnnkit import cells as registry

    known = registry.names()
    cells = [c.strip().lower() for c in s.split(",") if c.strip()]
    bad = [c for c in cells if c not in known]
    if not cells or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(known)}, "
                                         f"got {s!r}")
    return cells


def register(sub, train_sub):
    from rnnkit import cells

    sc, ih = SELECTION_DEFAULTS["selective-copy"]["length"], SELECTION_DEFAULTS["induction"]["length"]
    ar = SELECTION_DEFAULTS["recall"]["length"]
    for task, what, length in (
            ("adding", "the adding problem (regress the sum of two marked values)",
             "the gap to remember; 100"),
            ("copy", "the copy-memory task (repeat 10 symbols after T blanks)",
             "the gap to remember; 100"),
            ("selective-copy", "selective copying (recall the data tokens scattered among noise, in "
             "order)", f"every step, the markers included; {sc}"),
            ("induction", "induction heads (recall the token that followed a trigger when the trigger "
             "comes again)", f"every step, the final trigger included; {ih}"),
            ("recall", "multi-query associative recall (key-value pairs, then each key again: answer "
             "its value; Zoology's MQAR)", f"every step, the pairs and the queries; {ar}")):
        p = train_sub.add_parser(task, help=f"train a recurrent model on {what}")
        m = p.add_argument_group("model and data (a resumed run keeps its own)")
        m.add_argument("--cell", choices=cells.names(), help=f"recurrent cell (lstm): {cells.describe()}")
        m.add_argument("--length", "-T", type=_positive_int, help=f"sequence length T ({length})")
        m.add_argument("--hidden", type=_positive_int, help="hidden size H (64)")
        m.add_argument("--layers", type=_positive_int, help="stacked layers (1)")
        m.add_argument("--forget-bias", type=float, help="LSTM forget-gate bias at init (1.0)")
        m.add_argument("--update-bias", type=float, help=cells.option_help("update_bias"))
        m.add_argument("--batch", type=_positive_int, help="batch size (64)")
        m.add_argument("--test-size", type=_positive_int, help="size of the fixed test set (1000)")
        m.add_argument("--dtype", choices=["float64", "float32"],
                       help="float64 by default: vanishing float32 gradients hit slow subnormal numbers")
        m.add_argument("--seed", type=int, help="weights, batches and the test set (0)")
        add_optimization_args(p.add_argument_group("training"), train_defaults(task),
                              {"checkpoint_every": "--eval-every"})
        add_run_args(p.add_argument_group("run"), None, f"runs/{task}-<cell>-T<length>")
        p.set_defaults(func=train, task=task)
        _add_selection_args(m, task)
        add_cell_args(m, own=("forget_bias", "update_bias"))

    exp = sub.add_parser("experiment", help="run a packaged experiment (vanishing)")
    exp_sub = exp.add_subparsers(dest="experiment", metavar="<experiment>", required=True)
    v = exp_sub.add_parser("vanishing", help="which cells learn the adding problem at which lengths, and "
                                             "the gradient flow against the lag")
    v.add_argument("--lengths", type=_lengths, default=[50, 100, 200, 400],
                   help="comma-separated sequence lengths (default 50,100,200,400)")
    v.add_argument("--cells", type=_cell_list, default=["rnn", "lstm", "gru"],
                   help="comma-separated cells (default rnn,lstm,gru)")
    v.add_argument("--steps", type=_positive_int, default=600,
                   help="budget: training updates per (cell, length), fewer if solved earlier "
                        "(default 600: the whole default experiment takes about 8 minutes of CPU time)")
    v.add_argument("--hidden", type=_positive_int, default=64, help="hidden size H")
    v.add_argument("--batch", type=_positive_int, default=64, help="batch size")
    v.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    v.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    v.add_argument("--eval-every", type=_positive_int, default=100,
                   help="steps between test evaluations (and the early stop once solved)")
    v.add_argument("--test-size", type=_positive_int, default=500,
                   help="size of the fixed test set")
    v.add_argument("--update-bias", type=float, default=None, help=cells.option_help("update_bias"))
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", default="runs/vanishing", help="output folder (default runs/vanishing)")
    v.add_argument("--force", action="store_true",
                   help="replace an earlier experiment's files in --out (refused without)")
    v.add_argument("--json", action="store_true", help="print the table as JSON")
    add_cell_args(v, own=("update_bias",), shown={"forget_bias": "1.0"})
    v.set_defaults(func=experiment_vanishing)


def _add_selection_args(group, task):
    """The selection tasks' own model and data flags."""
    from rnnkit.models.memory import MemoryConfig

    if task == "selective-copy":
        group.add_argument("--tokens", "-M", type=_positive_int,
                           help=f"data tokens to remember, M ({MemoryConfig.tokens}; the Mamba paper's "
                                f"16 at length 4096 is a GPU's budget)")
    if task == "recall":
        d = SELECTION_DEFAULTS["recall"]
        group.add_argument("--pairs", "-P", type=_positive_int,
                           help=f"key-value pairs per sequence, each queried once ({d['pairs']}; at most "
                                f"length / 4 and vocab / 2 - 1)")
        group.add_argument("--vocab", "-V", type=_positive_int,
                           help=f"vocabulary V: keys from the lower half (less 0), values from the upper "
                                f"({d['vocab']})")
        group.add_argument("--embed", type=_positive_int,
                           help=f"size of the tokens' embedding, the recurrent stack's input "
                                f"({d['embed']})")
    elif task in SELECTION_DEFAULTS:
        group.add_argument("--vocab", "-V", type=_positive_int,
                           help=f"vocabulary V: the noise (or no-op), the marker and V-2 symbols "
                                f"({MemoryConfig.vocab})")


def check_selection(cfg):
    """Refuse a selection task's length or vocabulary it cannot be generated at, naming the flag."""
    if cfg.task not in SELECTION_DEFAULTS:
        return
    if cfg.task == "recall":
        check_recall(cfg.length, cfg.pairs, cfg.vocab)
        return
    if cfg.vocab < 4:
        raise UserError(f"--vocab {cfg.vocab}: expected at least 4 (the noise, the marker and two "
                        f"symbols to tell apart)")
    if cfg.task == "selective-copy" and cfg.length < 2 * cfg.tokens + 1:
        raise UserError(f"--length {cfg.length}: too short for --tokens {cfg.tokens}; selective copying "
                        f"needs at least 2 x tokens + 1 = {2 * cfg.tokens + 1} (the data, one noise "
                        f"token, the markers)")
    if cfg.task == "induction" and cfg.length < 3:
        raise UserError(f"--length {cfg.length}: expected at least 3 (the trigger, its symbol, the "
                        f"trigger again)")


def check_recall(length, pairs, vocab, flag="--length"):
    """Refuse a recall configuration it cannot be generated at, naming the flag."""
    if vocab < 4:
        raise UserError(f"--vocab {vocab}: expected at least 4 (0, a key, two values)")
    if pairs > vocab // 2 - 1:
        what = (f"--pairs {pairs}" if flag == "--length" else
                f"{flag}: length {length} scales to {pairs} pairs")
        raise UserError(f"{what}: too many for --vocab {vocab}; the keys are distinct, from "
                        f"1..vocab/2 - 1, so at most {vocab // 2 - 1}")
    if length < 4 * pairs:
        what = (f"--length {length}: too short for --pairs {pairs}" if flag == "--length" else
                f"{flag}: length {length} is too short for its {pairs} pairs (scaled with the length)")
        raise UserError(f"{what}; recall needs at least 4 x pairs = {4 * pairs} steps (the pairs, then "
                        f"a slot of two steps for each query)")


# --- train -----------------------------------------------------------------------------------------


# the model and data flags (None when not given) and the MemoryConfig field each sets
MODEL_FLAGS = {"cell": "cell", "length": "length", "hidden": "hidden", "layers": "layers",
               "forget_bias": "forget_bias", "update_bias": "update_bias", "batch": "batch_size",
               "test_size": "test_size", "dtype": "dtype", "seed": "seed"}
MODEL_FLAGS |= {"tokens": "tokens", "vocab": "vocab"}  # of the selection tasks only
MODEL_FLAGS |= {"pairs": "pairs", "embed": "embed"}  # of recall only


def _model_flags(args):
    """{MemoryConfig field: value} of the model and data flags the user gave."""
    return {field: getattr(args, flag, None) for flag, field in MODEL_FLAGS.items()
            if getattr(args, flag, None) is not None}


def train(args):
    from rnnkit.models.memory import MemoryConfig
    from rnnkit.tasks.memory import MemoryTask
    from rnnkit.train import fit, load_checkpoint, prepare_run_dir

    check_run_flags(args)
    given = _model_flags(args)
    cfg = MemoryConfig(task=args.task, **{**SELECTION_DEFAULTS.get(args.task, {}), **given})
    check_selection(cfg)
    out = Path(args.out or f"runs/{args.task}-{cfg.cell}-T{cfg.length}")
    saved_train = {}
    if args.resume:  # the model and data are the run's: a flag that says otherwise is refused
        prepare_run_dir(out, resume=True)
        _, meta, _ = load_checkpoint(out, "last", args.task)
        try:
            cfg = MemoryConfig(**meta["config"])
        except (KeyError, TypeError) as e:
            raise UserError(f"{out}/last.json: not a {args.task} run ({e})") from None
        flag = {field: name for name, field in MODEL_FLAGS.items()}
        for field, value in given.items():
            if value != getattr(cfg, field):
                raise UserError(f"--{flag[field].replace('_', '-')} {value} differs from the run's "
                                f"{getattr(cfg, field)!r}; a resumed run keeps its model and data")
        saved_train = meta.get("train") or {}
    cfg.cell_options = cell_options(args, cfg.cell, saved=cfg.cell_options if args.resume else None)
    train_args = resolve(args, train_defaults(args.task), saved_train)
    check(train_args)
    if not args.resume:
        prepare_run_dir(out, resume=False, force=args.force)
    task = MemoryTask(cfg)
    summary = fit(task, task.source(), train_config(train_args, cfg.seed), out, asdict(cfg),
                  resume=args.resume, progress=not args.no_progress and not args.json)
    last = summary["last_eval"]
    if cfg.task == "adding":
        last["solved"] = bool(last.get("test_mse", 1.0) < SOLVED_MSE)
    if args.json:
        print(json.dumps({"run_dir": str(out), "step": summary["step"], "config": asdict(cfg), **last}))
    else:
        print(_describe(cfg, last, summary["step"], out))


def _describe(cfg, figures, step, out):
    if cfg.task == "adding":
        verdict = "solved" if figures["test_mse"] < SOLVED_MSE else "not solved"
        return (f"{cfg.cell} on the adding problem, T={cfg.length}, step {step}: test MSE "
                f"{figures['test_mse']:.4f} (predicting the mean: {figures['baseline']:.3f}; solved below "
                f"{SOLVED_MSE}: {verdict}); run in {out}")
    if cfg.task in SELECTION_DEFAULTS:
        return _describe_selection(cfg, figures, step, out)
    return (f"{cfg.cell} on the copy task, T={cfg.length}, step {step}: test cross-entropy "
            f"{figures['test_loss']:.4f} nats/step (memoryless: {figures['baseline']:.4f}), recall "
            f"accuracy {figures['test_acc']:.3f} (chance 0.125); run in {out}")


def _describe_selection(cfg, figures, step, out):
    if cfg.task == "recall":
        return _describe_recall(cfg, figures, step, out)
    if cfg.task == "selective-copy":
        what = (f"selective copying, T={cfg.length}, M={cfg.tokens}, V={cfg.vocab}, step {step}: "
                f"accuracy {figures['test_acc']:.3f} on the data tokens (chance "
                f"{figures['chance_acc']:.3f}), every token right in {figures['test_seq_acc']:.3f} of "
                f"the sequences")
    else:
        what = (f"induction heads, T={cfg.length}, V={cfg.vocab}, step {step}: accuracy "
                f"{figures['test_acc']:.3f} on the recalled token (chance {figures['chance_acc']:.3f})")
    lines = [f"{cfg.cell} on {what}, test cross-entropy {figures['test_loss']:.4f} nats/answer "
             f"(chance: {figures['baseline']:.4f}); run in {out}"]
    for row in figures.get("lengths", []):
        lines.append(f"  length {row['length']:>6} ({row['length'] / cfg.length:g}x): accuracy "
                     f"{row['test_acc']:.3f}, cross-entropy {row['test_loss']:.4f}")
    return "\n".join(lines)


def _describe_recall(cfg, figures, step, out):
    lines = [f"{cfg.cell} on associative recall, T={cfg.length}, {cfg.pairs} pairs, V={cfg.vocab}, step "
             f"{step}: accuracy {figures['test_acc']:.3f} on the queries (chance "
             f"{figures['chance_acc']:.4f}), every query right in {figures['test_seq_acc']:.3f} of the "
             f"sequences, test cross-entropy {figures['test_loss']:.4f} nats/answer (chance: "
             f"{figures['baseline']:.4f}); run in {out}"]
    for row in figures.get("lengths", []):
        lines.append(f"  length {row['length']:>6} ({row['length'] / cfg.length:g}x), "
                     f"{row['pairs']:>3} pairs: accuracy {row['test_acc']:.3f}, all right "
                     f"{row['test_seq_acc']:.3f}, cross-entropy {row['test_loss']:.4f}")
    return "\n".join(lines)


def recall_lengths(cfg, lengths=None):
    """The test lengths of a recall run: `lengths` (each checked), or RECALL_TEST_MULTIPLES of its
    length as far as the vocabulary has keys for the scaled pairs."""
    if lengths:
        for L in lengths:
            check_recall(L, cfg.pairs_at(L), cfg.vocab, flag="--lengths")
        return lengths
    return [k * cfg.length for k in RECALL_TEST_MULTIPLES
            if cfg.pairs_at(k * cfg.length) <= cfg.vocab // 2 - 1]


# --- eval ------------------------------------------------------------------------------------------


def evaluate(args):
    from rnnkit.tasks.memory import load_run

    if getattr(args, "data", None):
        raise UserError("--data: runs of the generated memory tasks evaluate on their generated test "
                        "set; drop --data")
    task, meta = load_run(args.dir)
    cfg = task.cfg
    lengths = getattr(args, "lengths", None)
    figures = task.evaluate()
    figures.pop("val_loss", None)
    if cfg.task == "induction":
        lengths = lengths or [k * cfg.length for k in INDUCTION_TEST_MULTIPLES]
        if min(lengths) < 3:
            raise UserError(f"--lengths: expected lengths of at least 3, got {min(lengths)}")
        figures["lengths"] = task.evaluate_lengths(lengths)
    if cfg.task == "recall":
        figures["lengths"] = task.evaluate_lengths(recall_lengths(cfg, lengths))
    if cfg.task == "adding":
        figures["solved"] = bool(figures["test_mse"] < SOLVED_MSE)
    if args.json:
        print(json.dumps({"run_dir": str(args.dir), "task": cfg.task, "step": meta.get("step"),
                          "config": asdict(cfg), **figures}))
    else:
        print(_describe(cfg, figures, meta.get("step"), args.dir))


# --- experiment vanishing --------------------------------------------------------------------------


def flow_of(task, x, y):
    """The gradient flow of the adding loss for one probe batch: the top layer's curves, as lists."""
    from rnnkit.diagnostics import gradient_flow

    m = task.model
    gf = gradient_flow(m.rnn, m.inputs(x), lambda out_last: m.last_step_grad(out_last, y))
    top = gf["layers"][-1]
    rec = {"dh": [float(v) for v in top["dh"]]}
    if "dc" in top:
        rec["dc"] = [float(v) for v in top["dc"]]
    return rec


def train_until_solved(task, steps, lr, clip, eval_every, batch, seed, threshold=SOLVED_MSE):
    """Adam on fresh batches for at most `steps` updates; evaluate every `eval_every` steps and stop
    once the test MSE is below `threshold`. Returns (history [(step, train_loss, test_mse)], figures)."""
    from rnnkit.data.synthetic import SyntheticSource
    from rnnkit.optim import clip_grad_norm, collect_params
    from rnnkit.train.loop import TrainConfig, make_optimizer

    source = SyntheticSource(task.cfg.task, task.cfg.length, batch, seed=seed, dtype=task.model.dtype)
    params = collect_params(**task.modules)
    opt = make_optimizer(TrainConfig(optimizer="adam", lr=lr), params)
    history, window = [], []
    figures = {"solved_at": None, "diverged": False}
    best = math.inf
    for step in range(1, steps + 1):
        opt.zero_grad()
        task.model.train()
        loss = task.train_step(source.next_batch())["loss"]
        if not math.isfinite(loss):
            figures["diverged"] = True
            break
        clip_grad_norm(params, clip)
        opt.step()
        window.append(loss)
        if step % eval_every == 0 or step == steps:
            mse = task.evaluate()["test_mse"]
            best = min(best, mse)
            history.append((step, float(np.mean(window)), mse))
            window = []
            if mse < threshold:
                figures["solved_at"] = step
                break
    figures.update({"steps": history[-1][0] if history else 0, "test_mse": history[-1][2] if history
                    else float("nan"), "best_test_mse": best})
    return history, figures


def experiment_vanishing(args):
    from rnnkit.data.synthetic import make_batch
    from rnnkit.models.memory import MemoryConfig
    from rnnkit.tasks.memory import MemoryTask
    from rnnkit.train.checkpoint import write_json_atomic

    if not args.lr > 0:
        raise UserError(f"--lr: expected a positive number, got {args.lr}")
    options = cell_options(args, *args.cells)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if (out / "vanishing.json").exists() and not args.force:
        raise UserError(f"--out {out}: holds an earlier experiment (vanishing.json); pass --force to "
                        f"replace it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    t_all, cpu_all = time.perf_counter(), time.process_time()
    rows, curves = [], {}
    for cell in args.cells:
        for T in args.lengths:
            cfg = MemoryConfig(task="adding", length=T, cell=cell, hidden=args.hidden, seed=args.seed,
                               batch_size=args.batch, test_size=args.test_size,
                               update_bias=args.update_bias,
                               cell_options=own_options(cell, options))
            task = MemoryTask(cfg)
            probe = make_batch("adding", 64, T, np.random.default_rng([args.seed, 31337]))
            t0, cpu0 = time.perf_counter(), time.process_time()
            flow0 = flow_of(task, *probe)
            history, fig = train_until_solved(task, args.steps, args.lr, args.clip, args.eval_every,
                                              args.batch, args.seed)
            flow1 = flow_of(task, *probe)
            seconds = time.perf_counter() - t0
            row = {"cell": cell, "length": T, "solved": fig["solved_at"] is not None, **fig,
                   "seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
                   # how much of the gradient at the loss reaches the first step: dL/dh_1 vs dL/dh_T
                   "flow_ratio_init": flow0["dh"][1] / max(flow0["dh"][-1], 1e-300),
                   "flow_ratio_trained": flow1["dh"][1] / max(flow1["dh"][-1], 1e-300)}
            rows.append(row)
            curves[f"{cell}/{T}"] = {"init": flow0, "trained": flow1,
                                     "history": [list(h) for h in history]}
            if not args.json:
                print(_row_line(row), flush=True)
    elapsed = time.perf_counter() - t_all
    settings = {"lengths": args.lengths, "cells": args.cells, "steps": args.steps, "hidden": args.hidden,
                "batch": args.batch, "lr": args.lr, "clip": args.clip, "eval_every": args.eval_every,
                "test_size": args.test_size, "seed": args.seed, "threshold": SOLVED_MSE,
                "update_bias": args.update_bias, "cell_options": options,
                "baseline_mse": 1 / 6}
    result = {"settings": settings, "rows": rows, "seconds": round(elapsed, 1),
              "cpu_seconds": round(time.process_time() - cpu_all, 1)}
    write_json_atomic(out / "vanishing.json", {**result, "curves": curves})
    (out / "vanishing.md").write_text(markdown_table(result), encoding="utf-8")
    pngs = plot_vanishing(curves, args.cells, args.lengths, out)
    if args.json:
        print(json.dumps({**result, "files": [str(out / "vanishing.json"), str(out / "vanishing.md"),
                                              *pngs]}))
    else:
        print(markdown_table(result))
        print(f"wrote {out}/vanishing.json, vanishing.md and {len(pngs)} PNGs in {elapsed:.0f} s")


def plot_vanishing(curves, cells, lengths, out):
    """One PNG per cell: ||dL/dh_t|| / ||dL/dh_T|| against the lag, at init (dashed) and trained."""
    from rnnkit.diagnostics import plot_gradient_flow

    pngs = []
    for cell in cells:
        lines = []
        for j, T in enumerate(lengths):
            c = curves[f"{cell}/{T}"]
            for when, style in (("init", "--"), ("trained", "-")):
                dh = np.asarray(c[when]["dh"])
                lines.append((f"T={T} {when}", np.arange(T, -1, -1), dh / max(dh[-1], 1e-300),
                              f"C{j}{style}"))
        path = Path(out) / f"gradient_flow_{cell}.png"
        plot_gradient_flow(lines, path, title=f"{cell} on the adding problem: gradient flow from the loss",
                           ylabel="||dL/dh_t|| / ||dL/dh_T|| (batch mean)")
        pngs.append(str(path))
    return pngs


def _row_line(row):
    verdict = f"solved at step {row['solved_at']}" if row["solved"] else "not solved"
    return (f"{row['cell']:>5} T={row['length']:<4} test MSE {row['test_mse']:.4f} after {row['steps']} "
            f"steps: {verdict}  ({row['seconds']:.0f} s)")


def markdown_table(result):
    s = result["settings"]
    lines = [f"Adding problem: test MSE after at most {s['steps']} Adam updates (batch {s['batch']}, lr "
             f"{s['lr']}, H={s['hidden']}), stopping once below {s['threshold']} (solved). Predicting the "
             f"mean gives 0.167. Flow: ||dL/dh_1|| / ||dL/dh_T|| for the loss at the last step."
             + (f" Update-gate bias {s['update_bias']:g} at initialisation (cells that have one)."
                if s.get("update_bias") is not None else "")
             + (f" Cell options {s['cell_options']} (to the cells that have them)."
                if s.get("cell_options") else ""),
             "",
             "| cell | T | solved | steps | test MSE | flow at init | flow trained | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        solved = f"yes (step {r['solved_at']})" if r["solved"] else ("diverged" if r["diverged"] else "no")
        lines.append(f"| {r['cell']} | {r['length']} | {solved} | {r['steps']} | {r['test_mse']:.4f} | "
                     f"{r['flow_ratio_init']:.1e} | {r['flow_ratio_trained']:.1e} | {r['seconds']:.0f} |")
    cells = list(dict.fromkeys(r["cell"] for r in result["rows"]))
    lines.append("")
    for cell in cells:
        ok = [str(r["length"]) for r in result["rows"] if r["cell"] == cell and r["solved"]]
        bad = [str(r["length"]) for r in result["rows"] if r["cell"] == cell and not r["solved"]]
        said = [f"learns at T = {', '.join(ok)}"] if ok else ["learns at no length"]
        if bad:
            said.append(f"not within the budget at T = {', '.join(bad)}")
        lines.append(f"- {cell}: {'; '.join(said)}")
    cpu = f" ({result['cpu_seconds']:.0f} s of CPU time)" if "cpu_seconds" in result else ""
    lines.append(f"\nTotal wall time {result['seconds']:.0f} s{cpu}.")
    return "\n".join(lines) + "\n"

