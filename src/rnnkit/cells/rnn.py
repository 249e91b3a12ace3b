"""The vanilla RNN: `rnn_step_forward`/`rnn_step_backward` for one step (as in CS231n),
`rnn_forward`/`rnn_backward` for the unrolled sequence, and its declaration, `RNNCell`.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    h_t = tanh(x_t Wx + h_{t-1} Wh + b)       (or relu)

Buffers: x (T, N, D); h (T+1, N, H) with h[0] the initial state; Wx (D, H); Wh (H, H); b (H,).
The one set of weights (Wx, Wh, b) is shared by every step. Derivation in docs/derivations/rnn.md. The
time loops are written twice, here in NumPy (the reference) and in rnn.c (compiled), and tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Cell
from rnnkit.cells.common import (final_grad, input_and_weight_grads, step_gates,
                                  wh_transposed_once)
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.kernels import LoopKernel
from rnnkit.kernels.workspace import empty

SOURCE = Path(__file__).with_name("rnn.c")

NONLINEARITIES = ("tanh", "relu")


class RNNCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    Wx: object  # (D, H)
    Wh: object  # (H, H)
    mask: object  # (T, N) bool or None
    nonlinearity: str


def rnn_step_forward(x, h_prev, Wx, Wh, b, nonlinearity="tanh"):
    """One step: x (N, D), h_prev (N, H) -> h (N, H). Returns h and the cache (x, h_prev, h, Wx, Wh)."""
    xp = get_array_module(x)
    a = x @ Wx + h_prev @ Wh + b
    h = xp.tanh(a) if nonlinearity == "tanh" else xp.maximum(a, 0)
    return h, (x, h_prev, h, Wx, Wh, nonlinearity)


def rnn_step_backward(dh, cache):
    """Backward of one step. Returns dx (N, D), dh_prev (N, H), dWx, dWh, db."""
    x, h_prev, h, Wx, Wh, nonlinearity = cache
    da = dh * (1 - h * h) if nonlinearity == "tanh" else dh * (h > 0)
    return da @ Wx.T, da @ Wh.T, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b, mask=None, nonlinearity="tanh", *, scan_weights=True):
    """Run the RNN over x (T, N, D) from h0 (N, H). Returns h: (T+1, N, H) and the cache.
    scan_weights: False skips the weights' NaN/inf scan (see lstm_forward)."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    expect_shape("Wh", Wh, (None, None), ("H", "H"))
    H = Wh.shape[0]
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], H), ("D", "H")), "Wh": (Wh, (H, H), ("H", "H")),
         "b": (b, (H,), ("H",))},
        mask,
        scan_weights,
    )
    xp = get_array_module(x)
    ops = get_ops(x, Wh)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    ops.matmul(x.reshape(T * N, D), Wx, out=h[1:].reshape(T * N, H))  # hoisted input projection
    h[1:] += b
    ops.run(RNN_FW, T=T, N=N, H=H, h=h, Wh=Wh, mask=mask, relu=int(nonlinearity == "relu"))
    return h, RNNCache(x, h, Wx, Wh, mask, nonlinearity)


def rnn_recompute(x, h, Wx, Wh, mask=None, nonlinearity="tanh"):
    """The cache of `rnn_forward` rebuilt from the hidden states that forward produced: it is those
    states and the input, so nothing is computed (the RNN's BPTT needs nothing beyond its output)."""
    return RNNCache(x, h, Wx, Wh, mask, nonlinearity)


def rnn_fw(T, N, H, h, Wh, mask, relu):
    """The forward time loop (the reference of rnn.c's `rnn_fw`, in place): h (T+1, N, H) with h[0] the
    initial state and h[1:] holding x_t Wx + b on entry; relu 1 for relu, 0 for tanh."""
    xp = get_array_module(h)
    hW = xp.empty((N, H), dtype=h.dtype)
    for t in range(T):
        xp.matmul(h[t], Wh, out=hW)
        h[t + 1] += hW
        if not relu:
            xp.tanh(h[t + 1], out=h[t + 1])
        else:
            xp.maximum(h[t + 1], 0, out=h[t + 1])
        if mask is not None:
            xp.copyto(h[t + 1], h[t], where=~mask[t][:, None])


def rnn_backward(dh, cache, dhT=None, trace=None, *, workspace=None, into=None):
    """BPTT for `rnn_forward`. dh: (T, N, H) gradient of h[1:]; dhT: (N, H) or None.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.
    into: (dx, acc) to write dx and sum the weight gradients across calls, as in `lstm_backward`.

    Returns dx (T, N, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    x, h, Wx, Wh, mask, nonlinearity = cache
    T, N, D = x.shape
    H = Wh.shape[0]
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    dh_next = final_grad("dhT", dhT, N, H, x.dtype, xp)
    da = empty(workspace, (T, N, H), x.dtype, xp)  # workspace: see lstm_forward
    WhT = xp.ascontiguousarray(Wh.T)  # contiguous once: faster than the transposed view at every step
    trace_dh = None
    if trace is not None:
        trace_dh = trace["dh"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, h, WhT).run(RNN_BW, T=T, N=N, H=H, dh=dh, h=h, WhT=WhT, mask=mask,
                            relu=int(nonlinearity == "relu"), dh_next=dh_next, da=da,
                            dht=xp.empty((N, H), dtype=x.dtype), trace_dh=trace_dh)
    if trace is not None:
        trace_dh[0] = dh_next
    dx, dWx, dWh, db = input_and_weight_grads(x, h, da, Wx, workspace, xp, into)
    return dx, dh_next, dWx, dWh, db


def rnn_bw(T, N, H, dh, h, WhT, mask, relu, dh_next, da, dht, trace_dh):
    """The BPTT loop (the reference of rnn.c's `rnn_bw`, in place): fills da (T, N, H), and turns
    dh_next (N, H) from the final state's gradient into the initial state's; dht (N, H) scratch."""
    xp = get_array_module(dh)
    for t in reversed(range(T)):
        dat = da[t]
        if mask is None:
            xp.add(dh[t], dh_next, out=dat)
        else:
            m = mask[t][:, None]
            xp.multiply(dh[t], m, out=dat)
            dat += dh_next
            dht[...] = dat
        if trace_dh is not None:
            trace_dh[t + 1] = dat
        if not relu:
            dat *= 1 - h[t + 1] * h[t + 1]  # tanh'(a) = 1 - h^2
        else:
            dat *= h[t + 1] > 0
        if mask is not None:
            xp.copyto(dat, 0, where=~m)
        xp.matmul(dat, WhT, out=dh_next)
        if mask is not None:
            xp.copyto(dh_next, dht, where=~m)


def rnn_step(x, h, Wx, Wh, b, nonlinearity="tanh", *, x_gates=None):
    """One RNN step for inference: x (N, D), h (N, H) -> h_new. No cache; the weights are not scanned
    for NaN/inf (rnn_forward does that). Same arithmetic as one step of rnn_forward.
    x_gates: (N, H) x Wx + b computed ahead, used in place of x."""
    xp = get_array_module(h)
    H = Wh.shape[0]
    a = step_gates(x, x_gates, {"h": h}, Wx, b, H)
    N = a.shape[1]
    hh = xp.empty((2, N, H), dtype=a.dtype)
    hh[0] = h
    hh[1] = a[0]
    get_ops(hh, Wh).run(RNN_FW, T=1, N=N, H=H, h=hh, Wh=Wh, mask=None, relu=int(nonlinearity == "relu"))
    return hh[1]


# The compiled time loops: each the entry point of the same name in rnn.c, with the function above as
# its reference (the same arguments by name).
RNN_FW = LoopKernel("rnn_fw", SOURCE, rnn_fw, blocks=1)
RNN_BW = LoopKernel("rnn_bw", SOURCE, rnn_bw, blocks=1)


@dataclass
class RNNCell(Cell):
    """The vanilla RNN: one layer and direction has Wx (D, H), Wh (H, H), b (H,)."""

    nonlinearity: str = field(default="tanh", metadata={"help": "tanh | relu"})

    name = "rnn"
    title = "RNN"
    summary = "the vanilla RNN, h_t = tanh(x_t Wx + h_{t-1} Wh + b)"
    torch_mode = "RNN_TANH"
    writes_into = True

    def __post_init__(self):
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        self.torch_mode = "RNN_RELU" if self.nonlinearity == "relu" else "RNN_TANH"

    def param_shapes(self, D, H):
        return {"Wx": (D, H), "Wh": (H, H), "b": (H,)}

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        h, cache = rnn_forward(x, state[0], p["Wx"], p["Wh"], p["b"], mask, self.nonlinearity,
                               scan_weights=scan_weights)
        return h[1:], (h[-1],), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        dx, dh0, dWx, dWh, db = rnn_backward(dy, cache, dstate[0], trace, workspace=workspace, into=into)
        return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db}

    def backward_params(self, p, xp):
        return wh_transposed_once(p, xp)

    def recompute(self, x, h, kept, p, mask=None, *, workspace=None):
        return rnn_recompute(x, h, p["Wx"], p["Wh"], mask, self.nonlinearity)

    def step(self, x, state, p, *, x_gates=None):
        h = rnn_step(x, state[0], p["Wx"], p["Wh"], p["b"], self.nonlinearity, x_gates=x_gates)
        return h, (h,)

    def to_torch(self, p, H):
        return p["Wx"].T, p["Wh"].T, p["b"].copy(), np.zeros_like(p["b"])

    def from_torch(self, w_ih, w_hh, b_ih, b_hh, H):
        return {"Wx": w_ih.T, "Wh": w_hh.T, "b": b_ih + b_hh}

    def torch_kwargs(self):
        return {"nonlinearity": self.nonlinearity}
