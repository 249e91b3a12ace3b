"""The cell registry: every recurrence rnnkit knows, declared once each (`rnnkit.cells.cell.Cell`), and
found here by name by everything that uses cells: the layer (`rnnkit.layers.Recurrent`,
`make_recurrent`), the models' `cell` settings, diagnostics and the report, interop, and every `--cell`
choice of the CLI with its help text.

    rnnkit.cells.names()                 ["lstm", "gru", "rnn", "rnn_relu", ...]
    rnnkit.cells.create("lstm", forget_bias=1.0)   a cell with its options
    rnnkit.cells.register(MyCell)        a cell written anywhere (docs/ADDING_A_CELL.md)

A name may preset options of a registered class ("rnn_relu" is the RNN cell with
nonlinearity="relu").

Cells from elsewhere are registered by importing their module, which calls `register`. So that the
CLI and saved runs find them too, the registry imports (each once per process, when a name is looked
up; a file is imported as the module `rnnkit_cell_plugin_<stem>_<hash of its path>`):
    RNNKIT_CELLS=path/to/indrnn.py:some.module     files or module names, ':' or ',' apart
    the entry point group "rnnkit.cells"            of installed packages (each names a module)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from rnnkit.cells.cell import Cell, Gate

__all__ = ["Cell", "Gate", "create", "describe", "get_class", "load_plugins", "names", "option_help",
           "options", "plugin_module_name", "register"]


@dataclass(frozen=True)
class _Entry:
    cls: type
    preset: dict = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict = {}


def register(cls: type, name: str | None = None, *, summary: str | None = None, replace: bool = False,
             **preset) -> type:
    """Make the `Cell` subclass `cls` available as `name` (default: `cls.name`), with `preset` options.
    Returns `cls`, so it also works as a class decorator. A name already taken is refused unless
    `replace=True` (re-registering the same class under its name is allowed: a module imported twice)."""
    if not (isinstance(cls, type) and issubclass(cls, Cell)):
        raise TypeError(f"register expects a subclass of rnnkit.cells.Cell, got {cls!r}")
    name = (name or cls.name).strip().lower()
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a cell's name must be letters, digits and '_', got {name!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(preset) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option {', '.join(unknown)}")
    old = _REGISTRY.get(name)
    if old is not None and not replace and (old.cls.__qualname__, old.cls.__module__) != (
            cls.__qualname__, cls.__module__):
        raise ValueError(f"a cell named {name!r} is registered already ({old.cls.__module__}."
                         f"{old.cls.__qualname__}); pass replace=True to replace it")
    _REGISTRY[name] = _Entry(cls, dict(preset), summary if summary is not None else cls.summary)
    return cls


_plugins = {"entry_points": None, "done": set()}


def plugin_module_name(path) -> str:
    """The module name a plugin file is imported under (one per file, whatever its directory)."""
    path = Path(path).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"rnnkit_cell_plugin_{path.stem}_{digest}"


def _import_plugin(spec: str):
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"RNNKIT_CELLS: {spec}: no such file")
        name = plugin_module_name(path)
        if name in sys.modules:
            return
        found = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            raise
    else:
        importlib.import_module(spec)


def load_plugins():
    """Import the cell modules named by RNNKIT_CELLS (as it is now) and by the "rnnkit.cells" entry
    points (read once), each the first time it is named. A module that fails to import is reported as
    one ValueError naming it (and tried again at the next call)."""
    if _plugins["entry_points"] is None:
        _plugins["entry_points"] = []
        try:
            from importlib.metadata import entry_points

            _plugins["entry_points"] = [ep.value.split(":")[0]
                                        for ep in entry_points(group="rnnkit.cells")]
        except Exception:  # noqa: BLE001 - no metadata: only RNNKIT_CELLS
            pass
    specs = [s.strip() for s in os.environ.get("RNNKIT_CELLS", "").replace(",", ":").split(":")
             if s.strip()]
    for spec in specs + _plugins["entry_points"]:
        if spec in _plugins["done"]:
            continue
        try:
            _import_plugin(spec)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure is the plugin's: say which
            raise ValueError(f"cell plugin {spec}: {type(e).__name__}: {e}") from None
        _plugins["done"].add(spec)


def names(plugins: bool = True) -> list:
    """The registered cell names, in the order they were registered; plugins=False: without importing
    the plugins first (what is registered so far)."""
    if plugins:
        load_plugins()
    return list(_REGISTRY)


def _entry(name):
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        load_plugins()  # a saved run's cell, or a --cell value, from a plugin not imported yet
    if key not in _REGISTRY:
        raise ValueError(f"cell must be one of {', '.join(_REGISTRY)}; got {name!r} (a cell of a "
                         f"plugin is found through RNNKIT_CELLS or an installed package's "
                         f"'rnnkit.cells' entry point)")
    return _REGISTRY[key]


def get_class(name: str) -> type:
    return _entry(name).cls


def create(name: str, *, strict: bool = True, **options) -> Cell:
    """The cell registered as `name`, with `options` over its preset ones. strict=False leaves out the
    options this cell does not have (one model config can then carry, say, the LSTM's forget bias
    whichever cell it names); strict=True refuses them."""
    entry = _entry(name)
    known = {f.name for f in fields(entry.cls)}
    if strict:
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"cell {name!r} has no option {', '.join(unknown)} "
                             f"(its options: {', '.join(sorted(known)) or 'none'})")
    given = {k: v for k, v in options.items() if k in known}
    return entry.cls(**{**entry.preset, **given})


def options(name: str) -> dict:
    """{option: its dataclasses.Field} of the cell `name` that a user may set: its class's fields less
    those its name presets ("rnn_relu" fixes the RNN's nonlinearity)."""
    entry = _entry(name)
    return {f.name: f for f in fields(entry.cls) if f.name not in entry.preset}


def option_help(option: str) -> str:
    """Help text for a cell option, naming the cells that have it (for a flag such as --update-bias)."""
    owners, text = [], ""
    for name in names():
        f = options(name).get(option)
        if f is not None:
            owners.append(name)
            text = text or f.metadata.get("help", "")
    return f"{', '.join(owners) or 'no cell'}: {text}" if text else f"option of {', '.join(owners)}"


def describe(choices=None) -> str:
    """`name: summary` of each registered cell (or of `choices`), for help texts."""
    return "; ".join(f"{n}: {_entry(n).summary}" for n in (choices or names()))


# The built-in cells, each declared in its own module: the one place they are listed.
from rnnkit.cells.gru import GRUCell  # noqa: E402
from rnnkit.cells.lstm import LSTMCell  # noqa: E402
from rnnkit.cells.mamba import MambaCell  # noqa: E402
from rnnkit.cells.mingru import MinGRUCell  # noqa: E402
from rnnkit.cells.minlstm import MinLSTMCell  # noqa: E402
from rnnkit.cells.rnn import RNNCell  # noqa: E402
from rnnkit.cells.rwkv7 import RWKV7Cell  # noqa: E402

register(LSTMCell)
register(GRUCell)
register(RNNCell)
register(RNNCell, "rnn_relu", nonlinearity="relu", summary="the vanilla RNN with relu")
register(MinGRUCell)
register(MinLSTMCell)
register(MambaCell)
register(RWKV7Cell)
