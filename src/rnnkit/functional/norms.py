"""Normalisations, forward beside backward: standardisations without gain or bias (the projection
after each provides those) over the channels of each feature-map location (layer normalisation) and over
the batch for each feature (batch normalisation); and the root-mean-square normalisation with a gain of
the pre-norm residual blocks (Mamba's, RWKV's).

Dimensions, declared once for this module:
    N  batch size (images)    L  feature-map locations (h * w)    C  channels    D  features of a vector

    A, Ahat    (N, L, C)   a feature map, one C-vector per location, and its standardised copy
    v, vhat    (N, D)      feature vectors, and their standardised copy
    x, u       (..., D)    vectors of any leading shape, and their RMS-normalised copy
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit.backend import get_array_module


class ChannelNormCache(NamedTuple):
    Ahat: object  # (N, L, C) the standardised map
    inv: object  # (N, L, 1) 1 / sqrt(var + eps) of each location


class RMSNormCache(NamedTuple):
    xhat: object  # (..., D) x / rms(x)
    inv: object  # (..., 1) 1 / sqrt(mean(x^2) + eps)
    w: object  # (D,) the gain


class LayerNormCache(NamedTuple):
    xhat: object  # (..., D) the standardised vectors
    inv: object  # (..., 1) 1 / sqrt(var + eps)
    w: object  # (D,) the gain


class FeatureNormCache(NamedTuple):
    vhat: object  # (N, D) the standardised vectors
    inv: object  # (D,) 1 / sqrt(var + eps) of each feature
    batch: bool  # the statistics were the batch's own (their gradient counts) or fixed


def channel_norm_forward(A, eps=1e-5):
    """Standardise each location's feature vector over its channels: A (N, L, C) -> Ahat (N, L, C).
        Ahat = (A - mean_c A) / sqrt(var_c A + eps)
    (Layer normalisation with no gain or bias, the projections after it provide those.)"""
    xp = get_array_module(A)
    mu = A.mean(axis=-1, keepdims=True)
    inv = 1.0 / xp.sqrt(A.var(axis=-1, keepdims=True) + eps)
    Ahat = (A - mu) * inv
    return Ahat, ChannelNormCache(Ahat, inv)


def channel_norm_backward(dAhat, cache: ChannelNormCache):
    """dA = inv * (dAhat - mean_c(dAhat) - Ahat * mean_c(dAhat * Ahat))."""
    Ahat, inv = cache
    return inv * (dAhat - dAhat.mean(axis=-1, keepdims=True)
                  - Ahat * (dAhat * Ahat).mean(axis=-1, keepdims=True))


def layer_norm_forward(x, w, b, eps=1e-5):
    """Layer normalisation with a gain and a bias over the last axis (PyTorch's nn.LayerNorm):
        u = (x - mean_d x) / sqrt(var_d x + eps) * w + b
    x: (..., D), w, b: (D,) -> u (..., D) and the cache. A group norm is this over (..., groups, D/G)
    with the gain and bias applied after (`group_norm_forward`)."""
    xhat, cache = channel_norm_forward(x, eps)
    return xhat * w + b, LayerNormCache(xhat, cache.inv, w)


def layer_norm_backward(du, cache: LayerNormCache):
    """dx = inv (g - mean_d g - xhat mean_d(g xhat)) with g = du w; dw = sum du xhat, db = sum du over
    every leading axis. Returns dx, dw, db."""
    xhat, inv, w = cache
    D = w.shape[0]
    dx = channel_norm_backward(du * w, ChannelNormCache(xhat, inv))
    return dx, (du * xhat).reshape(-1, D).sum(axis=0), du.reshape(-1, D).sum(axis=0)


def group_norm_forward(x, groups, w, b, eps=1e-5):
    """Group normalisation of vectors (PyTorch's nn.GroupNorm on (rows, D) inputs): each of `groups`
    consecutive blocks of the last axis standardised on its own, then one gain and bias per feature.
    x: (..., D), w, b: (D,) -> u (..., D) and the cache."""
    shape = x.shape
    xhat, cache = channel_norm_forward(x.reshape(shape[:-1] + (groups, shape[-1] // groups)), eps)
    return xhat.reshape(shape) * w + b, LayerNormCache(xhat, cache.inv, w)


def group_norm_backward(du, cache: LayerNormCache):
    """`layer_norm_backward` per group. Returns dx, dw, db."""
    xhat, inv, w = cache
    D = w.shape[0]
    dx = channel_norm_backward((du * w).reshape(xhat.shape), ChannelNormCache(xhat, inv))
    return (dx.reshape(du.shape), (du * xhat.reshape(du.shape)).reshape(-1, D).sum(axis=0),
            du.reshape(-1, D).sum(axis=0))


def feature_norm_forward(v, mean=None, var=None, eps=1e-5):
    """Standardise each feature over the batch of images (batch normalisation with no gain or bias; the
    projection after it provides those): vhat = (v - mean) / sqrt(var + eps).

    v: (N, D). In training mean / var are the batch's own (None); in evaluation, the running averages.
    Dataset-wide standardisation matters: ReLU features share a large common component, and what tells
    one image from another is a small deviation from it. Returns vhat and the cache.
    """
    xp = get_array_module(v)
    batch = mean is None
    if batch:
        mean, var = v.mean(axis=0), v.var(axis=0)
    inv = 1.0 / xp.sqrt(var + eps)
    vhat = (v - mean) * inv
    return vhat, FeatureNormCache(vhat, inv, batch)


def feature_norm_backward(dvhat, cache: FeatureNormCache):
    """With batch statistics: dv = inv * (dvhat - mean(dvhat) - vhat * mean(dvhat * vhat)), means over
    the batch; with fixed statistics: dv = inv * dvhat."""
    vhat, inv, batch = cache
    if not batch:
        return dvhat * inv
    return inv * (dvhat - dvhat.mean(axis=0) - vhat * (dvhat * vhat).mean(axis=0))


def rms_norm_forward(x, w, eps=1e-5):
    """Root-mean-square normalisation with a gain (Zhang and Sennrich 2019), over the last axis:
        u = x / sqrt(mean_d x^2 + eps) * w
    x: (..., D), w: (D,) -> u (..., D) and the cache. No mean is taken out, and there is no bias."""
    xp = get_array_module(x)
    inv = 1.0 / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * inv
    return xhat * w, RMSNormCache(xhat, inv, w)


def rms_norm_backward(du, cache: RMSNormCache):
    """With g = du w (the gradient of xhat):  dx = inv (g - xhat mean_d(g xhat)),  dw = sum du xhat
    over every leading axis. Returns dx, dw."""
    xhat, inv, w = cache
    g = du * w
    dx = inv * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    dw = (du * xhat).reshape(-1, w.shape[0]).sum(axis=0)
    return dx, dw
