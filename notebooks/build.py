"""Build the lecture notebooks from their sources (notebooks/source/*.py) and execute them in place.

    python notebooks/build.py                # every notebook, normal setting: the committed outputs
    python notebooks/build.py --small 03     # the small setting CI runs (RNNKIT_NOTEBOOK_SMALL=1)

A source is a Python file in the "percent" format: `# %%` starts a code cell, `# %% [markdown]` a
markdown cell whose lines lose their leading `# `. The notebook is executed with nbclient from
notebooks/ (the directory nbmake runs it in), then cleaned so that a rebuild with the same results
changes nothing: cell ids numbered, no execution timestamps, and no output that names a directory of
this machine. Each notebook's wall time is printed here, never saved into it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "source"


def parse_cells(text: str):
    """[(kind, source)] of a percent-format file; kind is "code" or "markdown"."""
    cells, kind, lines = [], None, []

    def close():
        if kind is not None:
            body = "\n".join(lines).strip("\n")
            if body:
                cells.append((kind, body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            close()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(re.sub(r"^# ?", "", line))
        elif kind is not None:
            lines.append(line)
    close()
    return cells


def make_notebook(src: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, (kind, body) in enumerate(parse_cells(src.read_text(encoding="utf-8"))):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        cell.id = f"{src.stem[:2]}-{i:02d}"  # stable ids: a rebuild does not rewrite every cell
        nb.cells.append(cell)
    return nb


def clean(nb, machine_paths):
    """Drop what differs between two runs of the same notebook; refuse an output naming a path."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                raise SystemExit(f"{cell.id}: wrote to stderr (a warning or a progress bar): "
                                 f"{out['text'][:200]!r}")
            text = str(out)
            for p in machine_paths:
                if p in text:
                    raise SystemExit(f"{cell.id}: an output names this machine's directory {p!r}")


def build(src: Path, small: bool, timeout: int) -> float:
    nb = make_notebook(src)
    os.environ["RNNKIT_NOTEBOOK_SMALL"] = "1" if small else "0"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    clean(nb, [str(HERE.parent), str(Path.home())])
    nbformat.write(nb, HERE / f"{src.stem}.ipynb")
    return seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebooks to build, by prefix (default: all)")
    ap.add_argument("--small", action="store_true", help="the small setting (RNNKIT_NOTEBOOK_SMALL=1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = ap.parse_args(argv)
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if args.names:
        sources = [s for s in sources if any(s.stem.startswith(n) for n in args.names)]
        if not sources:
            sys.exit(f"no notebook source in notebooks/source/ starts with {', '.join(args.names)}")
    for src in sources:
        print(f"{src.stem}: {build(src, args.small, args.timeout):.0f} s", flush=True)


if __name__ == "__main__":
    main()
