"""`rnnkit report DIR`: one self-contained static HTML page for a training run.

The page has no server and makes no network request: the plots are PNGs inlined as data URIs, the
activations are inlined as base64 bytes, and the script and style are in the page. It shows
- the loss curves of `metrics.jsonl` (every run);
- for a run whose model is a recurrent stack (`rnnkit.report.probe`): the gradient flow ||dL/dh_t|| (and
  ||dL/dc_t||) against the lag for a loss at the last step, the gate statistics and histograms, and a
  viewer that colours a sequence (the validation text, for a language model) by the activation of a
  chosen hidden unit or gate, with a list of the most telling units.

Dimensions: T time steps, H hidden size.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np

from rnnkit.errors import UserError



# --- reading a run -----------------------------------------------------------------------------------


def read_metrics(run_dir):
    """The records of run_dir/metrics.jsonl; a missing or empty file is a UserError."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir}: no metrics.jsonl (not a training run directory, or the run logged "
                        f"nothing yet)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: malformed JSON at line {n}: {e.msg}") from None
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
    if not records:
        raise UserError(f"{path}: no metrics recorded (the file holds no step)")
    return records


def run_info(run_dir):
    """(task, meta) from best.json or last.json, or (None, {}) when the run has no checkpoint."""
    from rnnkit.train.checkpoint import read_json

    for name in ("best", "last"):
        p = Path(run_dir) / f"{name}.json"
        if p.exists():
            info = read_json(p, "checkpoint index")
            meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
            return info.get("task"), meta
    return None, {}


# --- pictures ----------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("rnnkit report needs matplotlib for its plots: pip install 'rnnkit[plot]'") from None
    return plt


def _png_uri(fig):
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path):
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def loss_plot(records):
    """Training loss and the evaluation figures against the step (two panels when both exist)."""
    plt = _pyplot()
    train = [r for r in records if r.get("kind", "train") == "train" and "loss" in r]
    evals = [r for r in records if r.get("kind") == "eval"]
    eval_keys = sorted({k for r in evals for k, v in r.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and k not in ("step", "time", "kind") and math.isfinite(v)})
    # the second panel: the other figures that are measurements (floats), not counts such as "chars"
    other_keys = [k for k in eval_keys if not k.endswith("loss")
                  and any(isinstance(r.get(k), float) for r in evals)]
    panels = 1 + bool(other_keys)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    for k in (k for k in eval_keys if k.endswith("loss")):
        pts = [(r["step"], r[k]) for r in evals if k in r]
        ax.plot(*zip(*pts), "o-", ms=3, label=k.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if panels == 2:
        ax = axes[0][1]
        for k in other_keys:
            pts = [(r["step"], r[k]) for r in evals if k in r]
            style = "--" if k == "baseline" else "o-"
            ax.plot(*zip(*pts), style, ms=3, label=k.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_title("evaluation figures", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png_uri(fig)


def flow_plot(flow, what):
    from rnnkit.diagnostics import plot_gradient_flow

    curves = []
    for k, rec in enumerate(flow["layers"]):
        curves.append((f"layer {k}: ||dL/dh_t||", flow["lag"], rec["dh"], f"C{k}-"))
        if "dc" in rec:
            curves.append((f"layer {k}: ||dL/dc_t||", flow["lag"], rec["dc"], f"C{k}--"))
    with tempfile.TemporaryDirectory() as d:
        path = plot_gradient_flow(curves, Path(d) / "flow.png", title=f"gradient flow: {what}")
        return _file_uri(path)


def gates_plot(stats):
    from rnnkit.diagnostics import plot_gate_histograms

    with tempfile.TemporaryDirectory() as d:
        path = plot_gate_histograms(stats, Path(d) / "gates.png")
        return _file_uri(path) if path else None


# --- the activation viewer's data --------------------------------------------------------------------


def _quantize(a, signed):
    """(T, H) -> (bytes row-major, per-unit scale or None). Gates in [0, 1]; signed values in [-s, s]."""
    a = np.asarray(a, dtype=np.float64)
    if not signed:
        q = np.clip(np.rint(a * 255), 0, 255)
        return q.astype(np.uint8).tobytes(), None
    scale = np.maximum(np.abs(a).max(axis=0), 1e-12)  # each unit on its own range
    q = np.clip(np.rint((a / scale + 1) * 127.5), 0, 255)
    return q.astype(np.uint8).tobytes(), scale


def viewer_channels(acts, unsigned=()):
    """acts: `diagnostics.activations` over a (T, 1, D) sequence -> JSON-able channel list.
    unsigned: the names of the sigmoid gates (values in [0, 1], coloured 0 -> 1 in green); everything
    else (states, tanh candidates) is signed, coloured blue (< 0) to red (> 0)."""
    channels = []
    for layer, kinds in acts:
        for kind, a in kinds.items():
            a = a[:, 0, :]  # (T, H) of the one sequence
            signed = kind not in unsigned
            data, scale = _quantize(a, signed)
            channels.append({"layer": layer, "kind": kind, "T": a.shape[0], "H": a.shape[1],
                             "signed": signed,
                             "scale": None if scale is None else [float(f"{s:.4g}") for s in scale],
                             "data": base64.b64encode(data).decode("ascii")})
    return channels


def telling_units(acts, features, top=3):
    """For each feature, the `top` (channel, unit) whose activation correlates most with it.

    Returns a list of {"feature", "channel" (index), "unit", "r"} sorted by |r|, strongest first.
    """
    out = []
    channels = [(layer, kind, a[:, 0, :]) for layer, kinds in acts for kind, a in kinds.items()]
    for fname, f in features.items():
        f = np.asarray(f, dtype=np.float64)
        fc = f - f.mean()
        fn = np.sqrt((fc * fc).sum())
        if fn == 0:
            continue
        best = []
        for ci, (_, _, a) in enumerate(channels):
            a = np.asarray(a, dtype=np.float64)
            ac = a - a.mean(axis=0)
            an = np.sqrt((ac * ac).sum(axis=0))
            r = (fc @ ac) / np.where(an > 0, an * fn, np.inf)  # Pearson r of every unit at once
            for u in np.argsort(-np.abs(r))[:top]:
                best.append((abs(r[u]), ci, int(u), float(r[u])))
        best.sort(reverse=True)
        for _, ci, u, r in best[:top]:
            out.append({"feature": fname, "channel": ci, "unit": u, "r": round(r, 3)})
    out.sort(key=lambda d: -abs(d["r"]))
    return out


# --- the page ----------------------------------------------------------------------------------------


def _table(rows, header):
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def build_report(run_dir, records, task=None, meta=None, probe=None):
    """The page as a string. `probe` (rnnkit.report.probe.Probe) or None for the loss curves alone."""
    from rnnkit.diagnostics import activations, gate_stats, gradient_flow

    meta = meta or {}
    e = html.escape
    title = probe.title if probe else f"run {Path(run_dir).name}"
    sections = []

    last_eval = meta.get("last_eval") or next((r for r in reversed(records) if r.get("kind") == "eval"), {})
    summary = [("run directory", str(run_dir)), ("task", task or "unknown"),
               ("step", meta.get("step", records[-1].get("step")))]
    summary += [(k, _fmt(v)) for k, v in last_eval.items() if k not in ("kind", "step", "time")]
    config = meta.get("config")
    cfg_html = ""
    if isinstance(config, dict):
        model = config.get("model", config)
        flat = {k: v for k, v in model.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if isinstance(model.get("cell_options"), dict):  # the cell's own options, one row each
            flat.update({f"cell_options.{k}": v for k, v in model["cell_options"].items()
                         if isinstance(v, (int, float, str, bool)) or v is None})
        cfg_html = "<h3>model configuration</h3>" + _table(sorted(flat.items()), ["key", "value"])
    notes = "".join(f"<p class=note>{e(n)}</p>" for n in (probe.notes if probe else []))
    sections.append(f"<section id=summary><h2>Run</h2>{notes}{_table(summary, ['', ''])}{cfg_html}"
                    f"</section>")
    sections.append(f"<section id=loss><h2>Loss curves</h2><img alt='loss curves' "
                    f"src='{loss_plot(records)}'></section>")

    data = {"tokens": [], "marks": None, "channels": [], "telling": [], "features": []}
    if probe is not None:
        rnn = probe.rnn
        if rnn.num_directions == 1:
            flow = gradient_flow(rnn, probe.flow_x, probe.last_grad)
            rows = []
            for k, rec in enumerate(flow["layers"]):
                T = len(rec["dh"]) - 1
                for lag in sorted({0, 1, 10, 50, 100, T // 2, T} & set(range(T + 1))):
                    rows.append([k, lag, f"{rec['dh'][T - lag]:.3e}",
                                 f"{rec['dc'][T - lag]:.3e}" if "dc" in rec else ""])
            sections.append(
                "<section id=flow><h2>Gradient flow</h2>"
                "<p>Mean norm of dL/dh<sub>t</sub> "
                + (f"(h<sub>t</sub> here the {e(rnn.cell.title)} cell's {e(rnn.cell.flow_part)} "
                   f"state) " if rnn.cell.flow_part != "h" else "")
                + f"over a batch, for the {e(probe.flow_what)}, against "
                "the lag T - t between step t and the loss (log scale), from the hand-written BPTT. A "
                "straight falling line is a gradient vanishing geometrically; the LSTM's cell state "
                "(dashed, dL/dc<sub>t</sub>) carries it further.</p>"
                f"<img alt='gradient flow' src='{flow_plot(flow, probe.flow_what)}'>"
                + _table(rows, ["layer", "lag", "||dL/dh||", "||dL/dc||"]) + "</section>")
        stats = gate_stats(rnn, probe.flow_x)
        if any(g for _, g in stats):
            rows = [[name, g, f"{r['mean']:.3f}", f"{r['frac_below_0.1']:.3f}" if r["sigmoid"] else "",
                     f"{r['frac_above_0.9']:.3f}" if r["sigmoid"] else ""]
                    for name, gates in stats for g, r in gates.items()]
            img = gates_plot(stats)
            sections.append(
                "<section id=gates><h2>Gates</h2><p>Activated gate values over the batch (all steps and "
                "units): mean, and the fractions saturated shut (&lt; 0.1) and open (&gt; 0.9).</p>"
                + (f"<img alt='gate histograms' src='{img}'>" if img else "")
                + _table(rows, ["layer", "gate", "mean", "< 0.1", "> 0.9"]) + "</section>")
        acts = activations(rnn, probe.view_x)
        data["tokens"] = list(probe.tokens)
        data["marks"] = probe.marks
        data["channels"] = viewer_channels(
            acts, {g.name for g in rnn.cell.gates if g.activation == "sigmoid"})
        data["telling"] = telling_units(acts, probe.features)
        data["features"] = list(probe.features)
        sections.append(VIEWER_HTML)
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return PAGE.format(title=e(title), sections="\n".join(sections), data=payload, script=SCRIPT,
                       style=STYLE)


def write_report(run_dir, out=None, view_chars=1000):
    """Build the report of the run in `run_dir`; returns the path of the HTML file written."""
    from rnnkit.report.probe import probe_for_run

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (expected a run directory)")
    records = read_metrics(run_dir)
    task, meta = run_info(run_dir)
    probe = probe_for_run(run_dir, task, view_chars=view_chars)
    page = build_report(run_dir, records, task, meta, probe)
    out = Path(out) if out else run_dir / "report.html"
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise UserError(f"--out {out}: cannot write ({err.strerror})") from None
    return out


VIEWER_HTML = """<section id=viewer><h2>Activations</h2>
<p>Each token coloured by the chosen unit's activation at that step: for h, c and the tanh candidates blue
is negative and red positive (c is scaled per unit, its range shown); for the gates white is 0 (shut) and
green 1 (open). Hover a token for its value.</p>
<div class=controls>
<label>channel <select id=channel></select></label>
<label>unit <select id=unit></select></label>
<button id=prev type=button>&larr;</button><button id=next type=button>&rarr;</button>
<span id=info></span>
</div>
<div class=cols><div id=text aria-label="coloured sequence"></div>
<div id=telling><h3>Most telling units</h3><p class=note>Pearson correlation of a unit's activation with a
property of the sequence; click to show it.</p><ol id=telling-list></ol></div></div>
</section>"""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1em}img{max-width:100%}.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ddd;padding:2px 8px;
text-align:left}
.controls{margin:.6em 0;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
.cols{display:flex;gap:1.5em;align-items:flex-start}
#text{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;font-size:13px;
line-height:1.5;flex:3;border:1px solid #ddd;padding:.5em;max-height:36em;overflow:auto}
#text span.mk{text-decoration:underline;font-weight:bold}
#telling{flex:1;font-size:.85em}#telling li{cursor:pointer;margin:.2em 0}#telling li:hover{color:#06c}
#info{font-family:ui-monospace,monospace;font-size:.85em;color:#444}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("rnnkit-data").textContent);
  if (!D.channels.length) { return; }
  var chSel = document.getElementById("channel"), unitSel = document.getElementById("unit");
  var text = document.getElementById("text"), info = document.getElementById("info");
  var cache = {}, spans = [];
  function bytes(i) {
    if (!cache[i]) {
      var s = atob(D.channels[i].data), a = new Uint8Array(s.length);
      for (var k = 0; k < s.length; k++) { a[k] = s.charCodeAt(k); }
      cache[i] = a;
    }
    return cache[i];
  }
  function value(i, t, u) {  // the activation, de-quantized
    var ch = D.channels[i], q = bytes(i)[t * ch.H + u];
    if (!ch.signed) { return q / 255; }
    var v = q / 127.5 - 1;
    return ch.scale ? v * ch.scale[u] : v;
  }
  function colour(ch, q) {
    if (ch.signed) {
      var v = q / 127.5 - 1, m = Math.round(255 * (1 - Math.abs(v)));
      return v >= 0 ? "rgb(255," + m + "," + m + ")" : "rgb(" + m + "," + m + ",255)";
    }
    var w = q / 255;
    return "rgb(" + Math.round(255 - 180 * w) + "," + Math.round(255 - 40 * w) + "," +
      Math.round(255 - 180 * w) + ")";
  }
  D.channels.forEach(function (ch, i) {
    var o = document.createElement("option");
    o.value = i; o.textContent = ch.layer + " " + ch.kind;
    chSel.appendChild(o);
  });
  function fillUnits() {
    var H = D.channels[+chSel.value].H, keep = +unitSel.value || 0;
    unitSel.innerHTML = "";
    for (var u = 0; u < H; u++) {
      var o = document.createElement("option");
      o.value = u; o.textContent = u;
      unitSel.appendChild(o);
    }
    unitSel.value = Math.min(keep, H - 1);
  }
  D.tokens.forEach(function (tok, t) {
    var s = document.createElement("span");
    s.textContent = tok === "\n" ? "\u21b5\n" : tok;
    if (D.marks && D.marks[t]) { s.className = "mk"; }
    s.dataset.t = t;
    text.appendChild(s);
    spans.push(s);
  });
  function paint() {
    var i = +chSel.value, u = +unitSel.value, ch = D.channels[i], q = bytes(i);
    for (var t = 0; t < spans.length; t++) {
      spans[t].style.backgroundColor = colour(ch, q[t * ch.H + u]);
    }
    var range = ch.signed ? (ch.scale ? "[-" + ch.scale[u] + ", " + ch.scale[u] + "]" : "[-1, 1]") : "[0, 1]";
    info.textContent = ch.layer + " " + ch.kind + "[" + u + "], range " + range;
    document.body.dataset.unit = u;
    document.body.dataset.channel = i;
  }
  text.addEventListener("mouseover", function (ev) {
    var t = ev.target.dataset && ev.target.dataset.t;
    if (t === undefined) { return; }
    var i = +chSel.value, u = +unitSel.value;
    info.textContent = D.channels[i].layer + " " + D.channels[i].kind + "[" + u + "] at step " + t +
      " (" + JSON.stringify(D.tokens[+t]) + "): " + value(i, +t, u).toFixed(3);
  });
  chSel.addEventListener("change", function () { fillUnits(); paint(); });
  unitSel.addEventListener("change", paint);
  document.getElementById("prev").addEventListener("click", function () {
    unitSel.value = Math.max(0, +unitSel.value - 1); paint();
  });
  document.getElementById("next").addEventListener("click", function () {
    unitSel.value = Math.min(D.channels[+chSel.value].H - 1, +unitSel.value + 1); paint();
  });
  var list = document.getElementById("telling-list");
  D.telling.forEach(function (d) {
    var li = document.createElement("li"), ch = D.channels[d.channel];
    li.textContent = ch.layer + " " + ch.kind + "[" + d.unit + "]: r = " + d.r.toFixed(2) + " with " +
      d.feature;
    li.addEventListener("click", function () {
      chSel.value = d.channel; fillUnits(); unitSel.value = d.unit; paint();
    });
    list.appendChild(li);
  });
  if (!D.telling.length) { list.innerHTML = "<li>(no sequence features)</li>"; }
  var start = D.telling.length ? D.telling[0] : {channel: 0, unit: 0};
  chSel.value = start.channel; fillUnits(); unitSel.value = start.unit; paint();
})();
"""

PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<link rel=icon href="data:,">
<title>rnnkit report: {title}</title>
<style>{style}</style></head>
<body>
<h1>rnnkit report: {title}</h1>
{sections}
<script type="application/json" id="rnnkit-data">{data}</script>
<script>{script}</script>
</body></html>
"""
