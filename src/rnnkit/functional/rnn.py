"""Vanilla RNN over a whole sequence: `rnn_step_forward`/`rnn_step_backward` for one step (as in CS231n)
and `rnn_forward`/`rnn_backward` for the unrolled sequence.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    h_t = tanh(x_t Wx + h_{t-1} Wh + b)       (or relu)

Buffers: x (T, N, D); h (T+1, N, H) with h[0] the initial state; Wx (D, H); Wh (H, H); b (H,).
The one set of weights (Wx, Wh, b) is shared by every step. Derivation in docs/derivations/rnn.md.
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit import kernels
from rnnkit.backend import get_array_module
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.functional.lstm import _bytes, _step_gates, input_and_weight_grads
from rnnkit.kernels.workspace import empty

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
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    kernels.matmul(x.reshape(T * N, D), Wx, out=h[1:].reshape(T * N, H))  # hoisted input projection
    h[1:] += b
    fast = kernels.kernel("rnn_fw", x.dtype, x, Wh)
    if fast is not None:  # the same loop compiled (rnnkit.kernels), tested equal to the one below
        fast(T, N, H, h, xp.ascontiguousarray(Wh), _bytes(mask), int(nonlinearity == "relu"))
    else:
        _rnn_forward_loop(h, Wh, mask, nonlinearity, xp)
    return h, RNNCache(x, h, Wx, Wh, mask, nonlinearity)


def rnn_recompute(x, h, Wx, Wh, mask=None, nonlinearity="tanh"):
    """The cache of `rnn_forward` rebuilt from the hidden states that forward produced: it is those
    states and the input, so nothing is computed (the RNN's BPTT needs nothing beyond its output)."""
    return RNNCache(x, h, Wx, Wh, mask, nonlinearity)


def _rnn_forward_loop(h, Wh, mask, nonlinearity, xp):
    """The reference time loop of `rnn_forward` (plain NumPy, in place); h[1:] holds x Wx + b."""
    T, N, H = h.shape[0] - 1, h.shape[1], h.shape[2]
    hW = xp.empty((N, H), dtype=h.dtype)
    for t in range(T):
        xp.matmul(h[t], Wh, out=hW)
        h[t + 1] += hW
        if nonlinearity == "tanh":
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
    dh_next = xp.zeros((N, H), dtype=x.dtype)
    if dhT is not None:
        expect_shape("dhT", dhT, (N, H), ("N", "H"))
        dh_next += dhT
    da = empty(workspace, (T, N, H), x.dtype, xp)  # workspace: see lstm_forward
    WhT = xp.ascontiguousarray(Wh.T)  # contiguous once: faster than the transposed view at every step
    trace_dh = None
    if trace is not None:
        trace_dh = trace["dh"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
    fast = kernels.kernel("rnn_bw", x.dtype, dh, h, WhT)
    if fast is not None:  # the same loop compiled (rnnkit.kernels), tested equal to the one below
        dht = xp.empty((N, H), dtype=x.dtype)
        fast(T, N, H, xp.ascontiguousarray(dh), h, WhT, _bytes(mask), int(nonlinearity == "relu"),
             dh_next, da, dht, trace_dh)
    else:
        _rnn_backward_loop(dh, h, WhT, mask, nonlinearity, dh_next, da, trace_dh, xp)
    if trace is not None:
        trace_dh[0] = dh_next
    dx, dWx, dWh, db = input_and_weight_grads(x, h, da, Wx, workspace, xp, into)
    return dx, dh_next, dWx, dWh, db


def _rnn_backward_loop(dh, h, WhT, mask, nonlinearity, dh_next, da, trace_dh, xp):
    """The reference time loop of `rnn_backward` (plain NumPy, in place): fills da, and dh_next with
    the initial state's gradient."""
    T = dh.shape[0]
    for t in reversed(range(T)):
        dat = da[t]
        if mask is None:
            xp.add(dh[t], dh_next, out=dat)
        else:
            m = mask[t][:, None]
            xp.multiply(dh[t], m, out=dat)
            dat += dh_next
            dht = dat.copy()
        if trace_dh is not None:
            trace_dh[t + 1] = dat
        if nonlinearity == "tanh":
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
    a = _step_gates(x, x_gates, {"h": h}, Wx, b, H, xp)
    N = a.shape[1]
    hh = xp.empty((2, N, H), dtype=a.dtype)
    hh[0] = h
    hh[1] = a[0]
    fast = kernels.kernel("rnn_fw", a.dtype, a, Wh)
    if fast is not None:
        fast(1, N, H, hh, xp.ascontiguousarray(Wh), None, int(nonlinearity == "relu"))
    else:
        _rnn_forward_loop(hh, Wh, None, nonlinearity, xp)
    return hh[1]
