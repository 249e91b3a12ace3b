"""`rnnkit <verb>`: a thin argparse layer over plain functions.

Each task registers its own verbs from its own file (`rnnkit.cli.<task>`), so the command line grows one
module at a time. A `UserError`, like a flag argparse refuses, becomes one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rnnkit.errors import UserError

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
]


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes on one line: the usage block it prints first runs to thirty lines for
    `rnnkit train translate`, burying the line that says what was wrong. Subparsers inherit the class."""

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


def main(argv=None):
    from rnnkit import cells

    try:
        cells.load_plugins()  # cells from RNNKIT_CELLS or installed packages: before the --cell choices
    except ValueError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
