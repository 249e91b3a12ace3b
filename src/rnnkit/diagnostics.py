"""Seeing memory: gradient flow, gate statistics and activations, read from the hand-written BPTT.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size    L  layers

Everything here runs one recurrent stack (`rnnkit.layers.Recurrent`, unidirectional for the gradient
flow) layer by layer through its cell's own forward and backward (`rnnkit.cells`) with the layer's own
parameters, so the numbers are those of the model's real BPTT, for any registered cell: what is shown
(the state's parts, the gates and their ranges) is what the cell declares.

- `gradient_flow`: for a loss at the last step, ||dL/dh_t|| (and ||dL/dc_t|| for the LSTM) at every step
  t, taken from the backward's `trace`. Plotted against the lag T - t on a log scale it shows the vanilla
  RNN's gradient vanishing geometrically while the LSTM's cell state carries it (lecture 7).
- `activations`: the state's parts (h, and c for the LSTM) and the activated gates of every layer at
  every step.
- `gate_stats`: per gate, the mean and the fraction of values below 0.1 and above 0.9 (a gate saturated
  shut or open), with a histogram.
"""

from __future__ import annotations

import numpy as np

from rnnkit.functional import reverse_padded


def _layer_forward(rnn, k, d, x, mask=None, shared=None):
    """One layer, one direction, from a zero state: (y (T, N, H), cache). shared: the first layer's
    shared array, for the later layers of a cell that has one (RWKV's v_first)."""
    p = {name: v.astype(x.dtype, copy=False) for name, v in rnn.layer_params(k, d).items()}
    N, H = x.shape[1], rnn.hidden_size
    state = tuple(np.zeros(shape, dtype=x.dtype) for shape in rnn.cell.state_shape(N, H).values())
    kw = {"shared": shared} if rnn.cell.shared else {}
    y, _, cache = rnn.cell.forward(x, state, p, mask, **kw)
    return y, cache


def run_layers(rnn, x, mask=None):
    """Forward through every layer and direction (no dropout: diagnostics look at the eval model).

    Returns a list over layers of lists over directions of dicts {"y": the output (T, N, H), "cache",
    "views": the cell's named arrays (its state parts and gates), each (T, N, H) in the order the
    direction ran}.
    """
    out = []
    inp = x
    shared = [None] * rnn.num_directions
    for k in range(rnn.num_layers):
        dirs, outs = [], []
        for d in range(rnn.num_directions):
            xin = reverse_padded(inp, mask) if d else inp
            y, cache = _layer_forward(rnn, k, d, xin, mask, shared[d])
            if rnn.cell.shared and k == 0:
                shared[d] = rnn.cell.shared_of(cache)
            dirs.append({"y": y, "cache": cache, "views": rnn.cell.views(cache)})
            outs.append(reverse_padded(y, mask) if d else y)
        out.append(dirs)
        inp = np.concatenate(outs, axis=-1) if len(outs) == 2 else outs[0]
    return out


def gradient_flow(rnn, x, last_grad, dtype=np.float64):
    """dL/dh_t for a loss at the last step, through every layer of a unidirectional stack.

    x: (T, N, D) the stack's input; last_grad: a function out_last (N, H) -> dL/d out_last (N, H), the
    gradient the loss sends into the top layer's last output (the head's backward).
    Returns {"lag": (T+1,) with lag[t] = T - t, "layers": [{"dh": (T+1,), "dc": (T+1,) or absent}, ...]}
    ("dh" is the gradient of the cell's `flow_part` of the state: h, or Mamba's SSM state)
    where dh[t] is the mean over the batch of ||dL/dh_t||_2, bottom layer first; index t = 0 is the
    initial state. Computed in float64 by default: a vanishing gradient falls below float32's range (and
    through its slow subnormal numbers) within a few hundred steps.
    """
    x = x.astype(dtype, copy=False)
    if rnn.num_directions != 1:
        raise ValueError("gradient_flow needs a unidirectional stack (a loss at the last step has no "
                         "meaning for the reverse direction)")
    layers = run_layers(rnn, x)
    top = layers[-1][0]["y"]
    T, N, H = top.shape
    dh = np.zeros((T, N, H), dtype=top.dtype)
    dh[-1] = last_grad(top[-1])  # the loss reads only the last step
    cell = rnn.cell
    zeros = tuple(np.zeros(shape, dtype=top.dtype) for shape in cell.state_shape(N, H).values())
    result = [None] * rnn.num_layers
    dshared = None  # the later layers' gradients of the first layer's shared array (RWKV's v_first)
    for k in reversed(range(rnn.num_layers)):
        trace = {}
        kw = {"dshared": dshared} if cell.shared and k == 0 else {}
        dx, _, _, *ds = cell.backward(dh, layers[k][0]["cache"], zeros, trace=trace, **kw)
        if cell.shared and k > 0:
            dshared = ds[0] if dshared is None else dshared + ds[0]
        # one curve per state part the backward traces: dh, and dc for the LSTM's cell state; "dh" is
        # the cell's `flow_part` (Mamba's SSM state, the paper's h)
        result[k] = {f"d{part}": np.linalg.norm(trace[f"d{part}"].reshape(T + 1, N, -1), axis=-1)
                     .mean(axis=1) for part in cell.state if f"d{part}" in trace}
        result[k]["dh"] = result[k][f"d{cell.flow_part}"]
        dh = dx  # the gradient of the layer below's outputs
    return {"lag": np.arange(T, -1, -1), "layers": result, "cell": cell.name}


def activations(rnn, x, mask=None):
    """Per layer (and direction): {"h": (T, N, H), "c": ..., "i"/"f"/"o"/"g" or "r"/"z"/"n": (T, N, H)}.

    Returns a list of (name, dict) with names like "layer 0" ("layer 0 reverse" for a reverse direction).
    """
    out = []
    for k, dirs in enumerate(run_layers(rnn, x, mask)):
        for d, rec in enumerate(dirs):
            acts = dict(rec["views"])
            if d:  # back to the input's time order
                acts = {name: reverse_padded(a, mask) for name, a in acts.items()}
            out.append((f"layer {k}" + (" reverse" if d else ""), acts))
    return out


def gate_stats(rnn, x, mask=None, bins=20):
    """Per layer and gate: mean, fraction < 0.1, fraction > 0.9, and a histogram over [0, 1]
    (the tanh candidates over [-1, 1]). Padded steps are left out."""
    shown = [g for g in rnn.cell.gates if g.activation in ("sigmoid", "tanh")]
    out = []
    for name, acts in activations(rnn, x, mask):
        gates = {}
        for g in shown:
            a = acts[g.name]
            v = a[mask] if mask is not None else a.reshape(-1, a.shape[-1])
            v = v.ravel().astype(np.float64)
            sigmoid = g.activation == "sigmoid"
            lo, hi = (0.0, 1.0) if sigmoid else (-1.0, 1.0)
            counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
            rec = {"mean": float(v.mean()), "frac_below_0.1": float((v < 0.1).mean()),
                   "frac_above_0.9": float((v > 0.9).mean()), "hist": counts.tolist(),
                   "edges": edges.tolist(), "sigmoid": sigmoid, "title": g.title}
            gates[g.name] = rec
        out.append((name, gates))
    return out


# --- plots -----------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from rnnkit.errors import UserError

        raise UserError("plots need matplotlib: pip install 'rnnkit[plot]'") from None
    return plt


def plot_gradient_flow(curves, path, title="gradient flow", ylabel="mean ||dL/dh_t||"):
    """curves: list of (label, lag (T+1,), norms (T+1,), style) -> a log-scale PNG at `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, lag, norms, style in curves:
        norms = np.maximum(np.asarray(norms, dtype=np.float64), 1e-300)  # log scale: no zeros
        ax.plot(lag, norms, style or "-", label=label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("lag T - t (steps between h_t and the loss)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_gate_histograms(stats, path):
    """stats: the output of `gate_stats` -> one row per layer, one panel per gate."""
    plt = _pyplot()
    rows = [(name, gates) for name, gates in stats if gates]
    if not rows:
        return None
    cols = max(len(g) for _, g in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.2 * len(rows)), squeeze=False)
    for r, (name, gates) in enumerate(rows):
        for c, (g, rec) in enumerate(gates.items()):
            ax = axes[r][c]
            edges = np.asarray(rec["edges"])
            ax.bar(edges[:-1], rec["hist"], width=np.diff(edges), align="edge", color="#4c78a8")
            ax.set_title(f"{name}: {g} ({rec['title']})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
        for c in range(len(gates), cols):
            axes[r][c].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
