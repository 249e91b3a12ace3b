"""`rnnkit <verb>`: a thin argparse layer over plain functions.

Each task registers its own verbs from its own file (`rnnkit.cli.<task>`), so the command line grows one
module at a time. A `UserError`, like a flag argparse refuses, becomes one line on stderr and exit
status 2. A reader that stops early (`rnnkit sample RUN | head -1`) ends the command quietly, with
the status of a program killed by SIGPIPE (141), as `cat` in the same pipe would.

Started by an MPI launcher (`mpiexec -n 2 rnnkit train lm`), every process runs the verb as one rank of
a data-parallel job (`rnnkit.train.distributed`): only rank 0 writes to stdout, and a failure on any
rank prints its line, with the rank, and ends the whole job (MPI Abort) rather than leave the others
waiting.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback

from rnnkit.errors import UserError
from rnnkit.train import distributed
from rnnkit.train.checkpoint import release_run_dirs

# Modules that add verbs: each defines `register(sub, train_sub)` where `sub` holds the top-level verbs
# and `train_sub` the tasks of `rnnkit train <task>`.
VERB_MODULES = [
    "rnnkit.cli.demo",
    "rnnkit.cli.bench",
    "rnnkit.cli.evaluate",
    "rnnkit.cli.lm",
    "rnnkit.cli.translate",
    "rnnkit.cli.classify",
    "rnnkit.cli.memory",
    "rnnkit.cli.report",
    "rnnkit.cli.caption",
    "rnnkit.cli.compare",
]


def finite_float(text):
    """A number that is not nan or inf: float() takes both, and a nan learning rate or dropout would
    pass every range check (each comparison is False) and surface steps later as a diverged loss."""
    value = float(text)  # a ValueError: argparse's own "invalid float value" line
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1, for a count where 0 would otherwise read as "not given" (`--beam 0`)."""
    value = int(text)  # a ValueError: argparse's own "invalid int value" line
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes on one line: the usage block it prints first runs to thirty lines for
    `rnnkit train translate`, burying the line that says what was wrong. Subparsers inherit the class.
    Every `type=float` flag reads as `finite_float`, those of the cells' options included."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser():
    parser = _Parser(prog="rnnkit", description="Recurrent networks on NumPy.")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    train = sub.add_parser("train", help="train a model for a task")
    train_sub = train.add_subparsers(dest="task", metavar="<task>", required=True)
    for name in VERB_MODULES:
        importlib.import_module(name).register(sub, train_sub)
    return parser


# 128 + SIGPIPE: what the shell reports for a program the signal ended, so `set -o pipefail` scripts
# see rnnkit as they see coreutils.
BROKEN_PIPE_STATUS = 141


def main(argv=None):
    try:
        try:
            return _main(argv)
        finally:
            # Inside the try: a pipe stdout holds its last block until this flush, and a broken pipe
            # found at the interpreter's own flush would print "Exception ignored" and exit 120.
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_STATUS


def _silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's flush at exit has nowhere to fail (the
    Python documentation's recipe for SIGPIPE). Not SIG_DFL for SIGPIPE: that would kill the
    process on any broken socket too."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # a stdout that is no file (a test's capture): nothing flushes it to a pipe at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main(argv):
    from rnnkit import cells

    try:
        cells.load_plugins()  # cells from RNNKIT_CELLS or installed packages: before the --cell choices
    except ValueError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    where = ""
    try:
        comm = distributed.world()
        if comm.size > 1:
            where = f"rank {comm.rank} of {comm.size}: "
            if comm.rank != 0:
                _silence_stdout()
        return args.func(args) or 0
    except UserError as e:
        print(f"rnnkit: error: {where}{e}", file=sys.stderr)
        distributed.abort_job(2)
        return 2
    except KeyboardInterrupt:
        print(f"rnnkit: {where}interrupted", file=sys.stderr)
        distributed.abort_job(130)
        return 130
    except Exception:
        if where:  # the traceback here: MPI Abort ends the process before Python would print it
            traceback.print_exc()
            print(f"rnnkit: error: {where}the job is ended", file=sys.stderr)
            distributed.abort_job(1)
        raise
    finally:
        release_run_dirs()  # a verb's lock on its run directory lasts as long as the verb


if __name__ == "__main__":
    sys.exit(main())
