"""The cells' options as flags, for every verb with a --cell: one flag per option found in the
registry (`rnnkit.cells.options`; plugin cells included, since the CLI loads them before it builds
its parsers), named after the dataclass field (`state_size` -> --state-size), typed by its
annotation, its help naming the cells that have it. `add_cell_args` declares them, `cell_options`
reads the chosen cell's.
"""

from __future__ import annotations

import argparse
import types
import typing

from rnnkit import cells
from rnnkit.errors import UserError

DEST = "cell_option_"  # the namespace attribute of option x is cell_option_x: no verb's own flag is


def _flag_type(cls, f):
    """(argparse type, choices) of the option field `f` of the cell class `cls`; None for a type a
    flag cannot give (a tuple, a dict)."""
    try:
        kind = typing.get_type_hints(cls).get(f.name, f.type)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate: go by the default
        kind = type(f.default)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        given = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = given[0] if len(given) == 1 else None
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        return type(choices[0]), choices
    return (kind, None) if kind in (bool, int, float, str) else None


def _all_options():
    """{option: (argparse type, choices)} over the registered cells, each option typed by the first
    cell that has it."""
    found = {}
    for name in cells.names():
        cls = cells.get_class(name)
        for option, f in cells.options(name).items():
            if option not in found:
                found[option] = _flag_type(cls, f)
    return {k: v for k, v in found.items() if v is not None}


def add_cell_args(group, own=(), shown=None):
    """One flag per cell option of the registry, on the argparse `group`, except the options in
    `own` (those the verb declares itself, for a config field of their own: memory's --forget-bias
    sets MemoryConfig.forget_bias, for any cell). `shown`: words for an option's default in this
    verb ({"forget_bias": "1.0"}), where the model's differs from the cell's. An option whose flag
    a verb already has for something else is --cell-<option> there, so a verb calls this after
    declaring its own flags (a plugin's option then never takes a name the verb needs)."""
    flags = {}
    for option, (kind, choices) in _all_options().items():
        if option in own:
            continue
        help_text = cells.option_help(option)
        if shown and option in shown:
            help_text += f"; this model's default: {shown[option]}"
        if kind is bool:
            spec = {"action": argparse.BooleanOptionalAction}
        else:
            spec = {"type": kind, "choices": choices,
                    "metavar": option.upper() if choices is None else None}
        for flag in (f"--{option.replace('_', '-')}", f"--cell-{option.replace('_', '-')}"):
            try:
                group.add_argument(flag, dest=DEST + option, default=None, help=help_text, **spec)
            except argparse.ArgumentError:
                continue
            flags[option] = flag
            break
    group.set_defaults(cell_flags=flags)


def _given(args):
    return {option: getattr(args, DEST + option) for option in getattr(args, "cell_flags", {})
            if getattr(args, DEST + option, None) is not None}


def cell_options(args, *chosen, saved=None) -> dict:
    """The cell options of the flags given (`add_cell_args`), for the cells `chosen` (one, or the
    several of an experiment, where each takes those it has). A flag for an option none of them has
    is refused, as is a value a cell refuses. A resumed run keeps its own (`saved`: the run's
    cell_options): a flag that differs is refused, and the saved options are returned."""
    given, flags = _given(args), getattr(args, "cell_flags", {})
    for option in given:
        if not any(option in cells.options(c) for c in chosen):
            owners = [n for n in cells.names() if option in cells.options(n)]
            raise UserError(f"{flags[option]}: applies to {', '.join(owners)}, not "
                            f"{', '.join(chosen)}")
    if saved is not None:
        for option, value in given.items():
            if option not in saved or saved[option] != value:
                was = repr(saved[option]) if option in saved else "(the cell's default)"
                raise UserError(f"{flags[option]} {value} differs from the run's {was}; a resumed "
                                f"run keeps its model")
        return dict(saved)
    for c in chosen:
        mine = own_options(c, given)
        try:
            cells.create(c, **mine)
        except ValueError as e:
            raise UserError(f"{', '.join(flags[k] for k in mine)}: {e} (cell {c})") from None
    return given


def own_options(cell, options) -> dict:
    """Those of `options` that the cell `cell` has (an experiment's, for each of its cells)."""
    have = cells.options(cell)
    return {k: v for k, v in options.items() if k in have}
