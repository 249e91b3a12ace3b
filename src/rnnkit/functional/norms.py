"""Standardisations without gain or bias (the projection after each provides those), forward beside
backward: over the channels of each feature-map location (layer normalisation) and over the batch for
each feature (batch normalisation).

Dimensions, declared once for this module:
    N  batch size (images)    L  feature-map locations (h * w)    C  channels    D  features of a vector

    A, Ahat    (N, L, C)   a feature map, one C-vector per location, and its standardised copy
    v, vhat    (N, D)      feature vectors, and their standardised copy
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit.backend import get_array_module


class ChannelNormCache(NamedTuple):
    Ahat: object  # (N, L, C) the standardised map
    inv: object  # (N, L, 1) 1 / sqrt(var + eps) of each location


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
