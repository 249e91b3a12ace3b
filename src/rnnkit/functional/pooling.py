"""Pooling a recurrent layer's outputs over the valid steps of each sequence (the many-to-one read-out),
with its backward written out; derived in docs/derivations/pooling.md.

Dimensions, declared once for this module:
    T  time steps    N  batch size    H  hidden size of one direction    K  directions (1 or 2)
    F  pooled features, K*H

    out    (T, N, F)   recurrent outputs, the forward direction in [:H], the reverse one in [H:]
    mask   (T, N)      valid steps (bool), a prefix of L_n ones per column; None: all valid
    feat   (N, F)      the pooled features

Modes:
    last   forward direction: its state at the sequence's true last token, out[L_n - 1, n, :H];
           reverse direction: its state after reading the first token, out[0, n, H:] (as PyTorch's h_n).
           The recurrent layers carry their state through padding, so this equals their final state.
    mean   (1 / L_n) sum_{t < L_n} out[t, n]
    max    max_{t < L_n} out[t, n], per feature; the gradient goes to the step that won.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module

POOLINGS = ("last", "mean", "max")


class SeqPoolCache(NamedTuple):
    mode: str
    shape: tuple  # (T, N, F) of the pooled array
    lengths: np.ndarray  # (N,) valid steps per sequence
    H: int  # hidden size of one direction
    K: int  # directions
    weights: np.ndarray | None  # mean: mask / L_n, (T, N, 1)
    argmax: np.ndarray | None  # max: winning step per (n, f), (N, F)


def pool_forward(out, mask, mode="last", num_directions=1):
    """out: (T, N, K*H) recurrent outputs; mask: (T, N) bool prefix mask or None -> feat (N, K*H)."""
    if mode not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {mode!r}")
    xp = get_array_module(out)
    T, N, F = out.shape
    K = num_directions
    if F % K:
        raise ValueError(f"out has {F} features, not divisible by {K} directions")
    H = F // K
    if mask is None:
        mask = xp.ones((T, N), dtype=bool)
    lengths = mask.sum(axis=0).astype(np.int64)
    if N and int(lengths.min()) < 1:
        raise ValueError("every sequence needs at least one valid step")
    weights = argmax = None
    n = xp.arange(N)
    if mode == "last":
        feat = xp.empty((N, F), dtype=out.dtype)
        feat[:, :H] = out[lengths - 1, n, :H]  # forward direction: after the true last token
        if K == 2:
            feat[:, H:] = out[0, :, H:]  # reverse direction: after reading the first token
    elif mode == "mean":
        weights = (mask / lengths[None, :]).astype(out.dtype)[:, :, None]  # (T, N, 1)
        feat = (out * weights).sum(axis=0)  # feat = sum_t out_t * m_t / L
    else:
        masked = xp.where(mask[:, :, None], out, -xp.inf)
        argmax = masked.argmax(axis=0)  # (N, F)
        feat = xp.take_along_axis(out, argmax[None], axis=0)[0]
    return feat, SeqPoolCache(mode, (T, N, F), lengths, H, K, weights, argmax)


def pool_backward(dfeat, cache: SeqPoolCache):
    """dfeat: (N, F) -> dout: (T, N, F), zero at padded steps."""
    xp = get_array_module(dfeat)
    T, N, F = cache.shape
    H = cache.H
    if cache.mode == "mean":
        return dfeat[None, :, :] * cache.weights  # d/dout_t = dfeat * m_t / L
    dout = xp.zeros((T, N, F), dtype=dfeat.dtype)
    n = xp.arange(N)
    if cache.mode == "last":
        dout[cache.lengths - 1, n, :H] = dfeat[:, :H]
        if cache.K == 2:
            dout[0, :, H:] = dfeat[:, H:]  # for a one-token sentence both land on step 0, different halves
    else:
        xp.put_along_axis(dout, cache.argmax[None], dfeat[None], axis=0)  # one winner per (n, f)
    return dout
