"""The causal depthwise convolution over time (the local mixing before a recurrence, as Mamba's),
forward beside backward, with its state: the last K-1 inputs, so that a sequence can be run
in pieces, or one step at a time, and give what it gives in one piece.

Dimensions, declared once for this module:
    T  time steps    N  batch size    C  channels    K  kernel width (taps)

    x      (T, N, C)      input, time-major
    state  (N, K-1, C)    the K-1 inputs before x, oldest first (zeros: PyTorch's zero padding)
    w      (K, C)         taps: w[K-1] multiplies the current input (PyTorch's conv1d weight (C, 1, K) is
                          w.T[:, None, :])
    b      (C,)
    out    (T, N, C)      out_t = b + sum_{j<K} w[j] * x_{t-K+1+j}, x_{<0} read from the state

With a mask of valid steps (T, N), each column a prefix of ones, the final state is each sequence's own
last K-1 inputs (the outputs are causal: padding after a sequence never reaches them).
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit.backend import get_array_module
from rnnkit.functional._checks import expect_shape


class CausalConvCache(NamedTuple):
    xpad: object  # (T+K-1, N, C): the state's inputs, then x
    w: object  # (K, C)
    ends: object  # (N,) each sequence's length, or None (all T)


def _padded(x, state, xp):
    T, N, C = x.shape
    K1 = state.shape[1]
    xpad = xp.empty((T + K1, N, C), dtype=x.dtype)
    xpad[:K1] = state.transpose(1, 0, 2)
    xpad[K1:] = x
    return xpad


def final_state(x, state, lengths=None):
    """The state after x: each sequence's last K-1 inputs, (N, K-1, C); those before x (the state's)
    where a sequence is shorter than K-1. lengths: (N,) or None (all T)."""
    xp = get_array_module(x)
    T, N, C = x.shape
    K1 = state.shape[1]
    if K1 == 0 or (lengths is None and T >= K1):
        return xp.ascontiguousarray(x[T - K1:].transpose(1, 0, 2))
    ends = xp.full(N, T) if lengths is None else lengths
    pos = ends[:, None] + xp.arange(K1)[None, :]              # (N, K-1) in the padded sequence
    rows = xp.arange(N)[:, None]
    from_x = x[xp.maximum(pos - K1, 0), rows]                 # (N, K-1, C)
    from_state = state[rows, xp.minimum(pos, K1 - 1)]
    return xp.where((pos >= K1)[..., None], from_x, from_state)


def final_state_backward(dfinal, lengths, dx, dstate):
    """Adds the final state's gradient (N, K-1, C) into dx (T, N, C) and dstate (N, K-1, C), at the
    inputs `final_state` read."""
    xp = get_array_module(dfinal)
    T, N, _ = dx.shape
    K1 = dstate.shape[1]
    ends = xp.full(N, T) if lengths is None else lengths
    for i in range(K1):  # K-1 positions, each one per sequence: no two of a row coincide
        pos = ends + i
        in_x = pos >= K1
        n = xp.nonzero(in_x)[0]
        dx[pos[n] - K1, n] += dfinal[n, i]
        m = xp.nonzero(~in_x)[0]
        dstate[m, pos[m]] += dfinal[m, i]


def causal_conv_forward(x, state, w, b, lengths=None):
    """x (T, N, C), state (N, K-1, C), w (K, C), b (C,) -> out (T, N, C), final state (N, K-1, C),
    cache. lengths: (N,) each sequence's number of valid steps, or None (all T)."""
    xp = get_array_module(x)
    T, N, C = x.shape
    K = w.shape[0]
    expect_shape("state", state, (N, K - 1, C), ("N", "K-1", "C"))
    expect_shape("b", b, (C,), ("C",))
    xpad = _padded(x, state, xp)
    out = xp.empty_like(x)
    out[...] = b
    for j in range(K):  # K passes over the whole sequence: no loop over time
        out += w[j] * xpad[j:j + T]
    return out, final_state(x, state, lengths), CausalConvCache(xpad, w, lengths)


def causal_conv_backward(dout, cache: CausalConvCache, dfinal=None, per_row=False):
    """dout (T, N, C), dfinal (N, K-1, C) or None -> dx (T, N, C), dstate (N, K-1, C), dw (K, C),
    db (C,):  dx_{t-K+1+j} += w[j] dout_t,  dw[j] = sum_{t,n} dout_t x_{t-K+1+j},  db = sum dout; the
    final state's gradient goes to the inputs it holds. per_row: dw (N, K, C) and db (N, C) left
    per batch row (the compiled loops' form: rows run on separate threads)."""
    xpad, w, lengths = cache
    xp = get_array_module(dout)
    T, N, C = dout.shape
    K = w.shape[0]
    dxpad = xp.zeros_like(xpad)
    dw = xp.empty((N, K, C), dtype=dout.dtype)
    for j in range(K):
        dxpad[j:j + T] += w[j] * dout
        dw[:, j] = (dout * xpad[j:j + T]).sum(axis=0)
    dx, dstate = dxpad[K - 1:], xp.ascontiguousarray(dxpad[:K - 1].transpose(1, 0, 2))
    if dfinal is not None and K > 1:
        final_state_backward(dfinal, lengths, dx, dstate)
    db = dout.sum(axis=0)
    return (dx, dstate, dw, db) if per_row else (dx, dstate, dw.sum(axis=0), db.sum(axis=0))
