"""minLSTM: the LSTM-derived cell of Feng et al. 2024, "Were RNNs All We Needed?": an LSTM whose forget
and input gates read the input alone, normalised to sum to one, with no output gate and no cell
state apart from h. The state enters each step only linearly, so no matrix product is left inside
the time loop.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    f_t  = sigmoid(x_t Wf + bf)                 forget gate, from the input only
    i_t  = sigmoid(x_t Wi + bi)                 input gate, from the input only
    h~_t = x_t Wh + bh                          candidate state (linear: the paper's sequential form)
    f'_t = f_t / (f_t + i_t)                    the gates normalised: f' + i' = 1, so h_t is a convex
    i'_t = i_t / (f_t + i_t)                    combination and its scale does not grow with t
    h_t  = f'_t h_{t-1} + i'_t h~_t             = a_t h_{t-1} + b_t: linear in h

Buffers: x (T, N, D); Wx (D, 3H) = [Wf | Wi | Wh~]; b (3H,) = [bf | bi | bh~]; h (T+1, N, H) with
h[0] the initial state; gates (T, N, 3H) = [f | i | h~] after the sigmoids; fp (T, N, H) = f'. As in
the paper's GRU-derived cell, the input projection of all steps is one product before the loop, the
loop is the first-order linear recurrence `linear_scan` (sequential, or a parallel prefix scan), and
BPTT is one reverse scan followed by two products. Since f' + i' = 1 the recurrence is that GRU-
derived cell's with its update gate z = i' written as a ratio of two sigmoids: what differs is the
gate's parametrisation and its gradient (the quotient rule through f/(f+i)), not the family of
recurrences. Derivation in docs/derivations/minlstm.md. The cell's declaration is `MinLSTMCell`; its
time loops are written twice, here in NumPy (the reference) and in minlstm.c (compiled), tested
equal.

The ratio f/(f+i) is formed from e^{-|k|} of each pre-activation (`_gates`), not from the two sigmoids:
where both gates are nearly shut the sigmoids lose their relative precision (float32's tanh-based
sigmoid moves in steps of 3e-8 below k = -12 and is exactly 0 below k = -20), and f/(f+i) becomes
coarse, then 0/0, while f' itself is well defined there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Gate
from rnnkit.cells.common import (InputOnlyCell, expect_float, expect_shape, final_grad,
                                 input_only_args, input_projection, input_projection_grads,
                                 step_gates)
from rnnkit.functional.scan import linear_scan
from rnnkit.kernels import LoopKernel

SOURCE = Path(__file__).with_name("minlstm.c")


class MinLSTMCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    gates: object  # (T, N, 3H): [f | i | h~] after the sigmoids
    fp: object  # (T, N, H): f' = f / (f + i)
    Wx: object  # (D, 3H)
    mask: object  # (T, N) bool or None


def minlstm_forward(x, h0, Wx, b, mask=None, *, scan_weights=True, parallel=False):
    """Run minLSTM over x (T, N, D) from h0 (N, H). Returns h (T+1, N, H) and the cache.

    At a padded step (mask 0) the state is carried: a = 1, b = 0 there. scan_weights: see lstm_forward;
    parallel: the scan's form (`linear_scan`).
    """
    T, N, D, H, mask = input_only_args(x, h0, Wx, b, mask, scan_weights, 3, ("bf", "bi", "bh~"))
    xp = get_array_module(x)
    gates = input_projection(x, Wx, b)
    fp = xp.empty((T, N, H), dtype=x.dtype)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    if parallel:
        minlstm_fw(T, N, H, gates, fp, h, mask, parallel=True)
    else:
        get_ops(x, gates).run(MINLSTM_FW, T=T, N=N, H=H, gates=gates, fp=fp, h=h, mask=mask)
    return h, MinLSTMCache(x, h, gates, fp, Wx, mask)


def _gates(kf, ki, xp):
    """f, i, f', i' from the pre-activations kf, ki, each to a few ulps in both tails.

    With e_k = e^{-|k|} and q_k = 1 + e_k (in [1, 2]), sigmoid(k) = e^{min(k, 0)} / q_k, so
    f / i = e^{-delta} q_i / q_f with delta = min(ki, 0) - min(kf, 0); scaled by s = e^{-|delta|},
    f' = A / (A + B) and i' = B / (A + B) with (A, B) = (q_i, s q_f) if delta <= 0 else (s q_i, q_f).
    No exponent is positive, and A + B >= 1: nothing overflows and there is no 0/0."""
    ef, ei = xp.exp(-xp.abs(kf)), xp.exp(-xp.abs(ki))
    qf, qi = 1 + ef, 1 + ei
    f = xp.where(kf >= 0, 1.0, ef) / qf                     # sigmoid(kf)
    i = xp.where(ki >= 0, 1.0, ei) / qi                     # sigmoid(ki)
    delta = xp.minimum(ki, 0) - xp.minimum(kf, 0)
    s = xp.exp(-xp.abs(delta))
    A = xp.where(delta <= 0, 1.0, s) * qi
    B = xp.where(delta <= 0, s, 1.0) * qf
    r = 1 / (A + B)
    return f, i, A * r, B * r                               # f, i, f' = f/(f+i), i' = i/(f+i)


def _activate(gates, fp, H, xp):
    """In place: gates' f and i blocks from pre-activations to sigmoids, fp = f'. Returns i'."""
    kf, ki = gates[..., :H], gates[..., H:2 * H]
    f, i, fp[...], ip = _gates(kf, ki, xp)
    kf[...], ki[...] = f, i
    return ip


def minlstm_fw(T, N, H, gates, fp, h, mask, parallel=False):
    """The forward (the reference of minlstm.c's `minlstm_fw`, in place): gates (T, N, 3H) = [f | i | h~]
    pre-activations in, f and i through the sigmoid out; fp (T, N, H) out, f'; h (T+1, N, H) with h[0]
    set, filled by the scan (`linear_scan`, sequential or parallel)."""
    xp = get_array_module(gates)
    ip = _activate(gates, fp, H, xp)
    a = fp.copy()                   # a_t = f'_t
    bt = ip * gates[..., 2 * H:]    # b_t = i'_t h~_t
    if mask is not None:            # a padded step carries h_{t-1}
        pad = ~mask[:, :, None]
        xp.copyto(a, 1, where=pad)
        xp.copyto(bt, 0, where=pad)
    h[:] = linear_scan(a, bt, h[0], parallel)


def minlstm_recompute(x, h, Wx, b, mask=None):
    """The cache of `minlstm_forward` rebuilt from the hidden states it produced: only the gates, one
    product and the activations (they do not depend on h), for exact BPTT in bounded memory."""
    xp = get_array_module(x)
    T, N, _ = x.shape
    H = b.shape[0] // 3
    gates = input_projection(x, Wx, b)
    fp = xp.empty((T, N, H), dtype=x.dtype)
    _activate(gates, fp, H, xp)
    return MinLSTMCache(x, h, gates, fp, Wx, mask)


def minlstm_backward(dh, cache, dhT=None, trace=None, *, into=None):
    """BPTT for `minlstm_forward`. dh: (T, N, H) gradient of h[1:]; dhT: (N, H) gradient of h[T] (from a
    later chunk), or None. Gradients at padded steps are ignored. into: (dx, acc) as in `lstm_backward`.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.

    Returns dx (T, N, D), dh0 (N, H), dWx (D, 3H), db (3H,).
    """
    x, h, gates, fp, Wx, mask = cache
    T, N, D = x.shape
    H = fp.shape[-1]
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    g_next = final_grad("dhT", dhT, N, H, x.dtype, xp)
    dgates = xp.empty((T, N, 3 * H), dtype=x.dtype)
    trace_dh = None if trace is None else xp.empty((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, gates, h).run(MINLSTM_BW, T=T, N=N, H=H, dh=dh, gates=gates, fp=fp, h=h, mask=mask,
                              dh_next=g_next, dgates=dgates, trace_dh=trace_dh)
    if trace is not None:
        trace_dh[0] = g_next
        trace["dh"] = trace_dh
    dx, dWx, db = input_projection_grads(x, dgates, Wx, into)
    return dx, g_next, dWx, db


def minlstm_bw(T, N, H, dh, gates, fp, h, mask, dh_next, dgates, trace_dh):
    """The BPTT loop (the reference of minlstm.c's `minlstm_bw`, in place): dgates (T, N, 3H) out, the
    pre-activations' gradient; dh_next (N, H) turns from the gradient of h[T] into that of h[0];
    trace_dh (T+1, N, H) or None: dL/dh_t at t >= 1."""
    xp = get_array_module(dh)
    g_next = dh_next
    a = fp if mask is None else xp.where(mask[:, :, None], fp, 1)
    # The reverse scan: g_t = dL/dh_t (all paths) = dh_t + f'_{t+1} g_{t+1}, from g_T = dh_T + dhT.
    g = xp.empty((T, N, H), dtype=dh.dtype)  # g[t] = dL/dh[t+1]
    for t in reversed(range(T)):
        if mask is None:
            xp.add(dh[t], g_next, out=g[t])
        else:  # the loss never reads a padded output
            xp.add(xp.where(mask[t][:, None], dh[t], 0), g_next, out=g[t])
        xp.multiply(g[t], a[t], out=g_next)  # dh_{t-1} = g_t f'_t
    if trace_dh is not None:
        trace_dh[1:] = g
    f, i, c = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:]
    ip = 1 - fp
    # dL/df' = g (h_{t-1} - h~) with i' = 1 - f'; the quotient rule through f' = f/(f+i) and the
    # sigmoids gives df'/dkf = f' i' (1 - f) and df'/dki = -f' i' (1 - i)
    w = g * (h[:-1] - c) * (fp * ip)
    df, di, dc = dgates[..., :H], dgates[..., H:2 * H], dgates[..., 2 * H:]
    xp.multiply(w, 1 - f, out=df)        # dkf = w (1 - f)
    xp.multiply(-w, 1 - i, out=di)       # dki = -w (1 - i)
    xp.multiply(g, ip, out=dc)           # dh~ = g i'
    if mask is not None:                 # a padded step's gates were not used
        xp.copyto(dgates, 0, where=~mask[:, :, None])


def minlstm_step(x, h, Wx, b, *, x_gates=None):
    """One inference step: x (N, D), h (N, H) -> h_t (N, H). x_gates: (N, 3H) = x Wx + b computed
    ahead (an embedding's rows, `Recurrent.input_gates`); x is then None."""
    xp = get_array_module(h)
    H = h.shape[-1]
    gates = step_gates(x, x_gates, {"h": h}, Wx, b, 3 * H)
    N = gates.shape[1]
    hh = xp.empty((2, N, H), dtype=gates.dtype)
    hh[0] = h
    fp = xp.empty((1, N, H), dtype=gates.dtype)
    get_ops(gates, hh).run(MINLSTM_FW, T=1, N=N, H=H, gates=gates, fp=fp, h=hh, mask=None)
    return hh[1]


# The compiled time loops: each the entry point of the same name in minlstm.c, with the function above
# as its reference (the same arguments by name). No product in the loop: its O(N H) element-wise step
# is counted as one H x H block, so that long loops split across threads.
MINLSTM_FW = LoopKernel("minlstm_fw", SOURCE, minlstm_fw, blocks=1)
MINLSTM_BW = LoopKernel("minlstm_bw", SOURCE, minlstm_bw, blocks=1)


@dataclass
class MinLSTMCell(InputOnlyCell):
    """minLSTM (Feng et al. 2024): h_t = f'_t h_{t-1} + i'_t h~_t with f' = f/(f+i), i' = i/(f+i),
    f_t = sigmoid(x_t Wf + bf), i_t = sigmoid(x_t Wi + bi) and h~_t = x_t Wh~ + bh~; one layer and
    direction has Wx = [Wf | Wi | Wh~] (D, 3H) and b = [bf | bi | bh~] (3H,), no recurrent weights, so
    the time loop is an element-wise linear scan; depth comes from stacked layers."""

    name = "minlstm"
    title = "MinLSTM"
    summary = "minLSTM (Feng et al. 2024): normalised gates from the input only, the loop a linear scan"
    # The normalised gates are shown, not f and i: they are the recurrence's own coefficients (how much
    # of h_{t-1} is kept, how much of h~ written), while f and i matter only through their ratio
    # (f = i = 0.01 mixes as evenly as f = i = 0.99), so their saturation says nothing about memory.
    # i' = 1 - f' mirrors f', shown for the reading "where does the unit write".
    gates = (Gate("f'", "normalised forget gate f/(f+i)", "sigmoid"),
             Gate("i'", "normalised input gate i/(f+i)", "sigmoid"))
    blocks = 3
    functions = (minlstm_forward, minlstm_backward, minlstm_recompute, minlstm_step)
    step_blocks = 1  # an element-wise step (cell.py)


    def views(self, cache):
        """h, and the normalised gates f' and i' = 1 - f' (the cache keeps f' only)."""
        return {"h": cache.h[1:], "f'": cache.fp, "i'": 1 - cache.fp}
