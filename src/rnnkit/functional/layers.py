"""Non-recurrent layers with their backward: embedding, affine at every step, inverted dropout, and the
helpers for padded sequences.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size    V  vocabulary / classes
"""

from __future__ import annotations

import numpy as np

from rnnkit import kernels
from rnnkit.backend import get_array_module, get_ops
from rnnkit.functional._checks import check_mask, expect_shape
from rnnkit.kernels import FlatKernel


# --- embedding -----------------------------------------------------------------------------------


def embedding_forward(idx, W):
    """idx: integer array of any shape (e.g. (T, N)) with values in [0, V); W: (V, D) -> out: idx.shape + (D,)."""
    expect_shape("W", W, (None, None), ("V", "D"))
    if idx.dtype.kind not in "iu":
        raise ValueError(f"idx has dtype {idx.dtype}, expected an integer dtype")
    V = W.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= V):
        raise ValueError(f"idx has values in [{int(idx.min())}, {int(idx.max())}], expected [0, {V})")
    return W[idx], (idx, V)


def embedding_backward(dout, cache):
    """dout: idx.shape + (D,) -> dW: (V, D). Rows of repeated indices add up."""
    idx, V = cache
    xp = get_array_module(dout)
    D = dout.shape[-1]
    dW = xp.zeros((V, D), dtype=dout.dtype)
    xp.add.at(dW, idx.reshape(-1), dout.reshape(-1, D))
    return dW


def embedding_backward_into(dW, dout, cache):
    """`embedding_backward` added straight into an existing gradient dW (V, D): no dense (V, D)
    temporary and no second pass over it (for a 13k-word vocabulary those cost more than the rows).
    Rows of one index are summed first (sorted, `add.reduceat`), then added once to their row of dW."""
    idx, V = cache
    xp = get_array_module(dout)
    D = dout.shape[-1]
    flat = idx.reshape(-1)
    if flat.size == 0:
        return dW
    order = xp.argsort(flat, kind="stable")
    ids = flat[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=bool), ids[1:] != ids[:-1]]))
    dW[ids[starts]] += xp.add.reduceat(dout.reshape(-1, D)[order], starts, axis=0)
    return dW


def bag_mean_forward(grams, offsets, W):
    """Mean of rows per bag (fastText's word vector from its character n-grams).

    grams: (G,) integer rows of W, the bags one after another; offsets: (U,) where each of the U bags
    starts in `grams` (offsets[0] = 0, increasing, every bag non-empty); W: (B, D) -> out (U, D):
        out_u = (1 / |G_u|) sum_{g in G_u} W[g]
    """
    expect_shape("W", W, (None, None), ("B", "D"))
    xp = get_array_module(W)
    (B, D), G, U = W.shape, grams.shape[0], offsets.shape[0]
    if U == 0:
        return xp.zeros((0, D), dtype=W.dtype), (grams, None, None, B)
    if int(offsets[0]) != 0 or (U > 1 and int(xp.diff(offsets).min()) < 1) or int(offsets[-1]) >= G:
        raise ValueError("offsets must start at 0 and mark non-empty bags inside grams")
    if int(grams.min()) < 0 or int(grams.max()) >= B:
        raise ValueError(f"grams has values in [{int(grams.min())}, {int(grams.max())}], "
                         f"expected [0, {B})")
    ends = xp.concatenate([offsets, xp.asarray([G], dtype=offsets.dtype)]).astype(np.int64)  # (U+1,)
    inv = (1.0 / xp.diff(ends)).astype(W.dtype)  # (U,) 1 / |G_u|
    grams = grams.astype(np.int64, copy=False)
    out = xp.empty((U, D), dtype=W.dtype)
    # bags across threads in one compiled pass (flat.c), or its NumPy reference below
    get_ops(W, grams).run(BAG_MEAN, D=D, grams=grams, ends=ends, W=W, inv=inv, out=out)
    return out, (grams, ends, inv, B)


def bag_mean(D, grams, ends, W, inv, out):
    """out[u] = inv[u] * sum of the rows W[grams[j]], j in [ends[u], ends[u+1]) (the reference of
    flat.c's `bag_mean`)."""
    xp = get_array_module(W)
    out[...] = xp.add.reduceat(W[grams], ends[:-1], axis=0) * inv[:, None]


def bag_scatter(U, D, grams, ends, dout, inv, dW):
    """dW[grams[j]] += dout[u] * inv[u] for every gram j of bag u, repeats adding up (the reference of
    flat.c's `bag_scatter`, whose threads take disjoint columns)."""
    xp = get_array_module(dout)
    owner = xp.repeat(xp.arange(U), xp.diff(ends))  # (G,) the bag each gram belongs to
    embedding_backward_into(dW, (dout * inv[:, None])[owner], (grams, dW.shape[0]))


def _bags(a):
    """(bags, elements per bag on average): how bag_mean's range of bags is cut across threads."""
    U = a["ends"].shape[0] - 1
    return U, a["D"] * a["grams"].shape[0] // max(1, U)


BAG_MEAN = FlatKernel("bag_mean", bag_mean, _bags)
BAG_SCATTER = FlatKernel("bag_scatter", bag_scatter, lambda a: (a["D"], a["grams"].shape[0]))


def bag_mean_backward_into(dW, dout, cache):
    """dout: (U, D) -> adds into dW (B, D): each row of bag u gets dout_u / |G_u| (repeats add up)."""
    grams, ends, inv, B = cache
    if ends is None:
        return dW
    U, D = dout.shape
    # columns across threads in one compiled pass (flat.c), or its NumPy reference
    get_ops(dW, dout).run(BAG_SCATTER, U=U, D=D, grams=grams, ends=ends, dout=dout, inv=inv, dW=dW)
    return dW


# --- affine at every step ------------------------------------------------------------------------


def affine_forward(x, W, b):
    """x: (..., D); W: (D, V); b: (V,) -> out: (..., V). Applied at every time step as one product."""
    expect_shape("W", W, (x.shape[-1], None), ("D", "V"))
    expect_shape("b", b, (W.shape[1],), ("V",))
    D = x.shape[-1]
    out = kernels.matmul(x.reshape(-1, D), W)
    out += b
    return out.reshape(x.shape[:-1] + (W.shape[1],)), (x, W)


def affine_backward(dout, cache):
    """Returns dx (..., D), dW (D, V), db (V,)."""
    x, W = cache
    D, V = W.shape
    d2 = dout.reshape(-1, V)
    dx = kernels.matmul(d2, W.T).reshape(x.shape)
    dW = kernels.matmul(x.reshape(-1, D).T, d2)
    db = d2.sum(axis=0)
    return dx, dW, db


# --- inverted dropout ----------------------------------------------------------------------------


def dropout_forward(x, p, rng, training=True):
    """Inverted dropout: keep each unit with probability 1-p and scale by 1/(1-p), so eval is identity.

    rng: a `numpy.random.Generator` (seeded by the caller). Returns out and the cache (the scaled mask).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x, None
    xp = get_array_module(x)
    keep = xp.asarray(rng.random(x.shape) >= p).astype(x.dtype)
    keep /= 1.0 - p
    return x * keep, keep


def dropout_backward(dout, cache):
    return dout if cache is None else dout * cache


# --- padded sequences ----------------------------------------------------------------------------


def lengths_to_mask(lengths, T, xp=None):
    """lengths: (N,) ints -> mask (T, N) bool with mask[t, n] = t < lengths[n]."""
    xp = xp or get_array_module(lengths)
    lengths = xp.asarray(lengths)
    return xp.arange(T)[:, None] < lengths[None, :]


def mask_to_lengths(mask):
    """mask (T, N) prefix mask -> lengths (N,)."""
    return mask.sum(axis=0).astype("int64")


def reverse_padded(x, mask):
    """Reverse each sequence within its valid prefix: out[t, n] = x[L_n - 1 - t, n] for t < L_n.

    x: (T, N, ...); mask: (T, N) bool or None (all valid). Padded steps stay where they are. The same
    call undoes itself, which the bidirectional wrapper uses on the way back.
    """
    T, N = x.shape[:2]
    xp = get_array_module(x)
    if mask is None:
        return x[::-1].copy()
    mask = check_mask(mask, T, N)
    L = mask.sum(axis=0)
    t = xp.arange(T)[:, None]
    src = xp.where(t < L[None, :], L[None, :] - 1 - t, t)  # (T, N) source step for each output step
    return x[src, xp.arange(N)[None, :]]
