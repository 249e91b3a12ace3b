"""The training flags shared by the `rnnkit train <task>` verbs, and their mapping to `TrainConfig`.

A task keeps its own defaults (a dict) so that a resumed run can tell the flags the user gave (which
override the saved run) from the defaults (which do not).
"""

from __future__ import annotations

from rnnkit.train.loop import TrainConfig

OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]


def explicit(args, defaults):
    """The options the user gave on the command line: argparse leaves the others None."""
    return {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}


def add_optimization_args(group, defaults):
    """--steps --minutes --optimizer --lr --weight-decay --clip --schedule --warmup --eval-every
    --checkpoint-every --patience, with this task's defaults in the help."""
    d = defaults
    group.add_argument("--steps", type=int,
                       help=f"total updates ({d['steps']}; with --minutes only: no step limit)")
    group.add_argument("--minutes", type=float, help="wall-clock budget of this invocation")
    group.add_argument("--optimizer", choices=OPTIMIZERS, help=f"({d['optimizer']})")
    group.add_argument("--lr", type=float, help=f"peak learning rate ({d['lr']:g})")
    group.add_argument("--weight-decay", type=float, help=f"({d['weight_decay']:g})")
    group.add_argument("--clip", type=float, help=f"global gradient-norm clip, 0 for none ({d['clip']:g})")
    group.add_argument("--schedule", choices=["constant", "cosine", "step"],
                       help=f"learning-rate schedule ({d['schedule']})")
    group.add_argument("--warmup", type=int, help=f"warmup steps of the cosine schedule ({d['warmup']})")
    group.add_argument("--eval-every", type=int,
                       help=f"steps between validation passes ({d['eval_every']})")
    group.add_argument("--checkpoint-every", type=int,
                       help=f"steps between checkpoints ({d['checkpoint_every']})")
    group.add_argument("--patience", type=int,
                       help="stop after this many evaluations without improvement")
    group.add_argument("--ema", type=float,
                       help="evaluate and keep a moving average of the weights with this decay "
                            f"(e.g. 0.999; {d.get('ema', 0.0):g}: off)")


def train_config(train_args, seed, monitor="val_loss", monitor_mode="min"):
    """TrainConfig from a task's resolved training options (defaults, saved run, flags)."""
    return TrainConfig(steps=train_args["steps"], minutes=train_args["minutes"],
                       optimizer=train_args["optimizer"], lr=train_args["lr"],
                       weight_decay=train_args["weight_decay"], clip=train_args["clip"],
                       schedule=train_args["schedule"], warmup=train_args["warmup"],
                       eval_every=train_args["eval_every"],
                       checkpoint_every=train_args["checkpoint_every"],
                       patience=train_args["patience"], seed=seed, monitor=monitor,
                       ema=train_args.get("ema", 0.0),
                       monitor_mode=monitor_mode)


def add_run_args(group, default_out):
    """--out --resume --force --no-progress --json: where a run lives and how it reports."""
    group.add_argument("--out", default=default_out, help=f"run directory ({default_out})")
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--force", action="store_true", help="start over in an existing --out")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--json", action="store_true", help="print the final figures as JSON")
