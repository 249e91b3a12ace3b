"""The causal depthwise convolution over time (Mamba's and the minGRU paper's local mixing before the
recurrence), forward beside backward, with its state: the last K-1 inputs, so that a sequence can be run
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
    if lengths is None:
        final = xpad[T:].transpose(1, 0, 2).copy()
    else:
        rows = xp.arange(N)
        final = xpad[lengths[None, :] + xp.arange(K - 1)[:, None], rows[None, :]].transpose(1, 0, 2)
    return out, xp.ascontiguousarray(final), CausalConvCache(xpad, w, lengths)


def causal_conv_backward(dout, cache: CausalConvCache, dfinal=None):
    """dout (T, N, C), dfinal (N, K-1, C) or None -> dx (T, N, C), dstate (N, K-1, C), dw (K, C),
    db (C,):  dx_{t-K+1+j} += w[j] dout_t,  dw[j] = sum_{t,n} dout_t x_{t-K+1+j},  db = sum dout; the
    final state's gradient goes to the inputs it holds."""
    xpad, w, lengths = cache
    xp = get_array_module(dout)
    T, N, C = dout.shape
    K = w.shape[0]
    dxpad = xp.zeros_like(xpad)
    dw = xp.empty_like(w)
    flat = dout.reshape(T * N, C)
    for j in range(K):
        dxpad[j:j + T] += w[j] * dout
        dw[j] = (flat * xpad[j:j + T].reshape(T * N, C)).sum(axis=0)
    if dfinal is not None and K > 1:
        if lengths is None:
            dxpad[T:] += dfinal.transpose(1, 0, 2)
        else:
            rows = xp.arange(N)
            xp.add.at(dxpad, (lengths[None, :] + xp.arange(K - 1)[:, None], rows[None, :]),
                      dfinal.transpose(1, 0, 2))
    dstate = xp.ascontiguousarray(dxpad[:K - 1].transpose(1, 0, 2))
    return dxpad[K - 1:], dstate, dw, flat.sum(axis=0)
