"""Softmax, log-softmax and the losses on a model's output: softmax cross-entropy (with its gradient, or
the loss alone for evaluation) and the mean squared error.

Dimensions, declared once for this module:
    N  rows (batch, or every step of every sequence)    V  classes / vocabulary

    x, logits  (..., V)   scores; the softmax runs over the last axis unless told otherwise
    y          logits.shape[:-1] integer labels in [0, V)
    pred, y    (N,)       for the squared error

Every softmax here subtracts the maximum first, so exp never overflows:
    softmax(x)_j     = exp(x_j - m) / sum_k exp(x_k - m)                  m = max_k x_k
    log_softmax(x)_j = (x_j - m) - log sum_k exp(x_k - m)
    logsumexp(x)     = log sum_k exp(x_k - m) + m
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.functional._checks import expect_shape
from rnnkit.kernels import FlatKernel


# --- softmax, log-softmax ------------------------------------------------------------------------


def softmax(x, axis=-1):
    """Probabilities over `axis` (the classes): exp(x - max) normalised to sum 1."""
    xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log softmax(x) over `axis`, without forming the probabilities: (x - m) - log sum exp(x - m).
    Entries of -inf (masked classes) stay -inf, as long as one entry per row is finite."""
    xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def logsumexp(x, axis=-1):
    """log sum_k exp(x_k) over `axis` (removed): log sum exp(x - m) + m."""
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    return xp.log(xp.exp(x - m).sum(axis=axis)) + xp.squeeze(m, axis=axis)


# --- softmax cross-entropy -----------------------------------------------------------------------


def softmax_cross_entropy(logits, y, mask=None, smoothing=0.0):
    """Mean cross-entropy over valid tokens, and its gradient.

    logits: (..., V); y: integer labels of shape logits.shape[:-1]; mask: same shape as y, or None.
    smoothing (label smoothing, Szegedy et al. 2016): the target puts 1 - eps on y and eps / V on every
    class, so per token, with log p = log softmax(x):
        loss = -(1 - eps) log p_y - (eps / V) sum_j log p_j
        dloss / dx_j = p_j - (1 - eps) [j = y] - eps / V
    Returns loss (a float, nats per valid token) and dlogits (same shape as logits).
    """
    xp = get_array_module(logits)
    V = logits.shape[-1]
    expect_shape("y", y, logits.shape[:-1])
    if y.dtype.kind not in "iu":
        raise ValueError(f"y has dtype {y.dtype}, expected an integer dtype")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= V):
        raise ValueError(f"y has labels in [{int(y.min())}, {int(y.max())}], expected [0, {V})")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    flat = logits.reshape(-1, V)
    yf = y.reshape(-1)
    if mask is not None:
        expect_shape("mask", mask, y.shape)
    M = yf.shape[0]
    w = None if mask is None else mask.reshape(-1).astype(logits.dtype)
    count = M if w is None else float(w.sum())
    if count == 0:
        return 0.0, xp.zeros_like(logits)
    dlogits = xp.empty_like(flat)
    nll = xp.empty(M, dtype=np.float64)
    # one compiled pass per row (flat.c), rows across threads, or its NumPy reference below
    get_ops(flat, yf).run(SOFTMAX_XENT, V=V, logits=flat, y=yf, w=w, scale=1.0 / count, eps=smoothing,
                          dlogits=dlogits, nll=nll)
    loss = float((nll if w is None else nll * w).sum()) / count
    return loss, dlogits.reshape(logits.shape)


def softmax_xent(V, logits, y, w, scale, eps, dlogits, nll):
    """Per row r of logits (M, V), label y[r], weight w[r] (None: all 1), label smoothing eps (the
    reference of flat.c's `softmax_xent`):
        nll[r]     = -(1 - eps) log p_ry - (eps / V) sum_j log p_rj            p_r = softmax(x_r)
        dlogits[r] = (p_r - (1 - eps) onehot(y_r) - eps / V) * w[r] * scale
    nll (M,) float64 and dlogits (M, V) written in place."""
    xp = get_array_module(logits)
    log_p = log_softmax(logits, axis=1)
    rows = xp.arange(y.shape[0])
    out = -log_p[rows, y]
    if eps:
        out = (1 - eps) * out - eps * log_p.mean(axis=1)
    nll[...] = out
    xp.exp(log_p, out=dlogits)  # softmax
    dlogits[rows, y] -= 1 - eps
    if eps:
        dlogits -= eps / V
    if w is None:
        dlogits *= scale
    else:
        dlogits *= (w * scale)[:, None]


SOFTMAX_XENT = FlatKernel("softmax_xent", softmax_xent, lambda a: (a["logits"].shape[0], a["V"]))


def softmax_cross_entropy_loss_only(logits, y):
    """The mean cross-entropy without building the gradient (evaluation), in float64:
    mean over rows of logsumexp(x) - x_y. logits (..., V); y logits.shape[:-1]. Returns (loss, None)."""
    xp = get_array_module(logits)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V).astype(np.float64)
    nll = logsumexp(flat, axis=1) - flat[xp.arange(flat.shape[0]), y.reshape(-1)]
    return float(nll.mean()), None


# --- mean squared error --------------------------------------------------------------------------


class MSECache(NamedTuple):
    diff: object  # pred - y, (N,)


def mse_forward(pred, y):
    """L = mean_n (pred_n - y_n)^2. pred, y: (N,). Returns (loss as a float, cache)."""
    expect_shape("y", y, pred.shape)
    diff = pred - y
    return float((diff * diff).mean()), MSECache(diff)


def mse_backward(cache, dloss=1.0):
    """dL/dpred = 2 (pred - y) / N, times the upstream gradient of the loss."""
    diff = cache.diff
    return diff * (2.0 * dloss / diff.shape[0])
