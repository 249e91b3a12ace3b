"""`rnnkit eval DIR`: evaluate a run of any task. The run's checkpoint names its task, and the task's CLI
module (`rnnkit.cli.<module>`) provides `evaluate(args)`."""

from __future__ import annotations

import importlib
from pathlib import Path

from rnnkit.cli import positive_int
from rnnkit.cli.memory import _lengths
from rnnkit.errors import UserError
from rnnkit.train.checkpoint import read_json

# task name (as saved in the checkpoint) -> CLI module that defines `evaluate(args)`
TASK_MODULES = {
    "lm": "rnnkit.cli.lm",
    "classify": "rnnkit.cli.classify",
    "caption": "rnnkit.cli.caption",
    "translate": "rnnkit.cli.translate",
    "adding": "rnnkit.cli.memory",
    "copy": "rnnkit.cli.memory",
    "selective-copy": "rnnkit.cli.memory",
    "induction": "rnnkit.cli.memory",
    "recall": "rnnkit.cli.memory",
}


def register(sub, train_sub):
    p = sub.add_parser("eval", help="evaluate a trained run (validation loss, accuracy, BLEU, ...)")
    p.add_argument("dir", help="run directory written by `rnnkit train`")
    p.add_argument("--data", help="data file to evaluate on (the task's format); default: the run's own")
    p.add_argument("--beam", type=positive_int, default=None,
                   help="beam width, for tasks that decode (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="translation: beam scores are divided by length**this (default 0.6)")
    p.add_argument("--split", choices=("test", "dev"), default="test",
                   help="translation: which split of the run's own data (without --data)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of --data")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (and count) malformed rows of --data instead of stopping at the first")
    p.add_argument("--lengths", type=_lengths, default=None,
                   help="induction: comma-separated test lengths (default 1, 2, 4, 8 and 16 times "
                        "the training length); recall: the same, the pairs scaled with the length "
                        "(default 1, 2, 4 and 8 times)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run_task(run_dir) -> str:
    """The task of the run in `run_dir`, read from its checkpoint index."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    for name in ("best", "last"):
        if (run_dir / f"{name}.json").exists():
            task = read_json(run_dir / f"{name}.json", "checkpoint index").get("task")
            if task not in TASK_MODULES:
                raise UserError(f"{run_dir}: unknown task {task!r} in {name}.json")
            return task
    raise UserError(f"{run_dir}: not an rnnkit run directory (no checkpoint)")


def run(args):
    task = run_task(args.dir)
    if task != "translate" and (args.split != "test" or args.length_penalty is not None):
        raise UserError(f"--split / --length-penalty: only for translation runs ({args.dir} is a {task} "
                        f"run)")
    if args.lengths and task not in ("induction", "recall"):
        raise UserError(f"--lengths: only for induction and recall runs ({args.dir} is a {task} run)")
    module = importlib.import_module(TASK_MODULES[task])
    return module.evaluate(args)
