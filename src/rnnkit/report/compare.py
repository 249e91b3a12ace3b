"""The pictures and the page of `rnnkit compare` (`rnnkit.tasks.compare` computes the figures):
loss.png, every cell's validation curve on one plot, and compare.html, self-contained (no network
request: the table as HTML, the picture inlined as a data URI), with the speed table when the folder
holds one. matplotlib is optional: without it there is no loss.png and the page says so.
"""

from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

from rnnkit.tasks.compare import speed_rows, table_rows


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(result, path):
    """Every cell's validation loss (and the task's accuracy, when it has one) against the updates, or
    against the seconds when the budget was minutes (the axis the budget is equal on). Returns the
    path written, or None without matplotlib or without a curve."""
    plt = _pyplot()
    curves = {cell: c for cell, c in result["curves"].items() if c}
    if plt is None:
        print("rnnkit: matplotlib is not installed, no loss.png (pip install 'rnnkit[plot]')",
              file=sys.stderr)
        return None
    if not curves:
        return None
    by_time = result["settings"].get("minutes") is not None
    x_at, xlabel = (1, "seconds (evaluations included)") if by_time else (0, "updates")
    panels = [(2, "validation loss")]
    if result["metric"] != "val_loss":
        panels.insert(0, (3, result["metric_title"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (col, ylabel) in zip(axes[0], panels):
        for cell, curve in curves.items():
            pts = [(p[x_at], p[col]) for p in curve if p[x_at] is not None and p[col] is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", ms=3, lw=1.2, label=cell)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['title']}: {result['settings']['budget']}, about "
                 f"{result['settings']['params']:,} parameters", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _table(header, rows):
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 76em; color: #222 }}
table {{ border-collapse: collapse; margin: 1em 0 }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right }}
th:first-child, td:first-child {{ text-align: left }}
img {{ max-width: 100%; border: 1px solid #eee }}
.note {{ color: #666 }}
</style></head><body>
<h1>{title}</h1>
{sections}
</body></html>
"""


def write_page(out, result=None, speed=None):
    """out/compare.html from a comparison (`run_compare`'s result) and/or a speed table
    (`speed_table`'s); the picture is out/loss.png's, inlined. Returns the path."""
    out = Path(out)
    e = html.escape
    sections = []
    if result is not None:
        s = result["settings"]
        header, rows = table_rows(result)
        sections.append(
            f"<h2>{e(result['title'])}</h2><p>Every cell at about {s['params']:,} parameters, "
            f"{e(s['budget'])}, seed {s['seed']}; the figures of the last evaluation. Generation: one "
            f"token at a time, batch 1, the state carried. Settings: "
            f"{e(', '.join(f'{k} {v}' for k, v in s.items() if v not in (None, {})))}.</p>"
            + _table(header, rows))
        png = out / "loss.png"
        if png.is_file():
            uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
            sections.append(f"<h2>Validation curves</h2><img alt='validation curves' src='{uri}'>")
        else:
            sections.append("<p class=note>No picture: matplotlib is not installed "
                            "(pip install 'rnnkit[plot]').</p>")
    if speed is not None:
        header, rows = speed_rows(speed)
        sections.append(
            f"<h2>Training speed against the sequence length</h2><p>Tokens/s of the recurrent stack "
            f"(forward + backward, batch {speed['batch']}, float32), each cell at about "
            f"{speed['params']:,} parameters on {e(speed['task'])}.</p>" + _table(header, rows))
    title = f"rnnkit compare: {result['task'] if result else speed['task']}"
    path = out / "compare.html"
    path.write_text(PAGE.format(title=e(title), sections="\n".join(sections)), encoding="utf-8")
    return path
