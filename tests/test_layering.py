"""The package layering: no module imports from a layer above its own. Read from the source with `ast`
(every import statement, at module level or inside a function, and `importlib.import_module("...")`
with a literal name), so a lazy import counts as much as one at the top of a file."""

import ast
from pathlib import Path

import pytest

import rnnkit

# package under src/rnnkit -> the rnnkit packages its modules must not import (a layer above it).
# Extend a row, or add one for a new package.
FORBIDDEN = {
    "kernels": ("rnnkit.cli", "rnnkit.cells", "rnnkit.functional", "rnnkit.layers", "rnnkit.models",
                "rnnkit.tasks", "rnnkit.train", "rnnkit.report"),
    "functional": ("rnnkit.cli", "rnnkit.cells", "rnnkit.layers", "rnnkit.models", "rnnkit.tasks",
                   "rnnkit.train", "rnnkit.report"),
    "cells": ("rnnkit.cli", "rnnkit.layers", "rnnkit.models", "rnnkit.tasks", "rnnkit.train",
              "rnnkit.report"),
    "layers": ("rnnkit.cli", "rnnkit.models", "rnnkit.tasks", "rnnkit.train", "rnnkit.report"),
    "metrics": ("rnnkit.cli", "rnnkit.report", "rnnkit.tasks", "rnnkit.models", "rnnkit.train"),
    "models": ("rnnkit.cli", "rnnkit.report", "rnnkit.tasks"),
    "train": ("rnnkit.cli", "rnnkit.report", "rnnkit.tasks"),
    "data": ("rnnkit.cli", "rnnkit.report", "rnnkit.tasks"),
    "tasks": ("rnnkit.cli", "rnnkit.report"),
    "report": ("rnnkit.cli",),
}

ROOT = Path(rnnkit.__file__).parent


def imported_modules(source, module):
    """[(line, dotted name)] of every module `source` imports; `module` (e.g. "rnnkit.report.probe")
    resolves relative imports. `from rnnkit import cli` names rnnkit.cli."""
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module",
                                                                                "__import__")):
            out.append((node.lineno, node.args[0].value))
    return out


def is_within(name, package):
    return name == package or name.startswith(package + ".")


def violations(package, forbidden):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if rel.name == "__init__":
            module += ".__init__"  # so that relative imports resolve against the package itself
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module):
            for bad in forbidden:
                if is_within(name, bad):
                    found.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_from_a_layer_above(package):
    assert list((ROOT / package).rglob("*.py")), f"rnnkit/{package}: no such package (see FORBIDDEN)"
    found = violations(package, FORBIDDEN[package])
    assert not found, "\n".join(found)


def test_the_import_reader_sees_every_form():
    src = ("import rnnkit.cli.lm\n"
           "from rnnkit import cli\n"
           "def f():\n"
           "    from ..cli.memory import load_run\n"
           "    importlib.import_module('rnnkit.cli.caption')\n"
           "from rnnkit.tasks import lm\n")
    names = [n for _, n in imported_modules(src, "rnnkit.report.probe")]
    assert sorted(n for n in names if is_within(n, "rnnkit.cli")) == [
        "rnnkit.cli", "rnnkit.cli.caption", "rnnkit.cli.lm", "rnnkit.cli.memory",
        "rnnkit.cli.memory.load_run"]
    assert "rnnkit.tasks.lm" in names and not is_within("rnnkit.client", "rnnkit.cli")


def test_a_violation_is_found():
    # report/ does import the tasks (it is above them): forbidding that must fail the check
    assert any("rnnkit/report/probe.py" in v for v in violations("report", ("rnnkit.tasks",)))
