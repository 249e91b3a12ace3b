"""The training flags shared by the `rnnkit train <task>` verbs, and their mapping to `TrainConfig`.

A task keeps its own defaults (a dict) so that a resumed run can tell the flags the user gave (which
override the saved run) from the defaults (which do not).
"""

from __future__ import annotations

from rnnkit.errors import UserError
from rnnkit.train.loop import TrainConfig

OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "adagrad"]


def explicit(args, defaults):
    """The options the user gave on the command line: argparse leaves the others None."""
    return {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}


def resolve(args, defaults, saved=None):
    """A run's options: the flags given, else those of the resumed run (`saved`, e.g. its checkpoint's
    meta["train"]), else `defaults`. --minutes without --steps lifts the step limit; a checkpoint_every
    of None (in `defaults`) follows eval_every."""
    given = explicit(args, defaults)
    kept = {k: v for k, v in (saved or {}).items() if k in defaults}
    follows = "checkpoint_every" in defaults and defaults["checkpoint_every"] is None
    if follows and kept.get("checkpoint_every") == kept.get("eval_every"):
        kept.pop("checkpoint_every", None)  # it followed eval_every: let it follow a new one
    out = {**defaults, **kept, **given}
    if "minutes" in given and "steps" not in given:
        out["steps"] = None
    if follows and out["checkpoint_every"] is None:
        out["checkpoint_every"] = out["eval_every"]
    return out


def check_run_flags(args):
    """Refuse --resume with --force, first thing in a verb: the one continues the run in --out and the
    other removes it, so neither may read or remove anything before the choice is made."""
    if args.resume and args.force:
        raise UserError("--resume and --force: choose one (--resume continues the run in --out, "
                        "--force starts it over)")


def check(train_args):
    """Refuse a bad training option (one line naming the flag) before any data is read or any old run
    is removed; a task may still set the steps later (None here)."""
    steps = 1 if train_args["steps"] is None else train_args["steps"]
    train_config({**train_args, "steps": steps}, seed=0).validate()


def _shown(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_optimization_args(group, defaults, shown=None):
    """--steps --minutes --optimizer --lr --weight-decay --clip --schedule --warmup --eval-every
    --checkpoint-every --patience --ema, with this task's defaults in the help (`shown`: the help's
    words for a default that is no one value, e.g. {"steps": "400 for the date task, else 10000"})."""
    d = {k: _shown(v) for k, v in {**defaults, **(shown or {})}.items()}
    group.add_argument("--steps", type=int,
                       help=f"total updates ({d['steps']}; with --minutes only: no step limit)")
    group.add_argument("--minutes", type=float, help="wall-clock budget of this invocation")
    group.add_argument("--optimizer", choices=OPTIMIZERS, help=f"({d['optimizer']})")
    group.add_argument("--lr", type=float, help=f"peak learning rate ({d['lr']})")
    group.add_argument("--weight-decay", type=float, help=f"({d['weight_decay']})")
    group.add_argument("--clip", type=float, help=f"global gradient-norm clip, 0 for none ({d['clip']})")
    group.add_argument("--schedule", choices=["constant", "cosine", "step"],
                       help=f"learning-rate schedule ({d['schedule']})")
    group.add_argument("--warmup", type=int, help=f"warmup steps of the cosine schedule ({d['warmup']})")
    group.add_argument("--eval-every", type=int,
                       help=f"steps between validation passes ({d['eval_every']})")
    group.add_argument("--checkpoint-every", type=int,
                       help=f"steps between checkpoints ({d['checkpoint_every']})")
    group.add_argument("--patience", type=int,
                       help="stop after this many evaluations without improvement (0: off)")
    group.add_argument("--ema", type=float,
                       help="evaluate and keep a moving average of the weights with this decay "
                            f"(e.g. 0.999; {d.get('ema', '0')}: off)")


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


def add_run_args(group, default_out, shown=None):
    """--out --resume --force --no-progress --json: where a run lives and how it reports (`shown`: the
    help's words for a --out default that depends on other flags, `default_out` then None). A verb
    calls `check_run_flags` before it reads or prepares the run directory."""
    group.add_argument("--out", default=default_out, help=f"run directory ({shown or default_out})")
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--force", action="store_true", help="start over in an existing --out")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    group.add_argument("--json", action="store_true", help="print the final figures as JSON")
