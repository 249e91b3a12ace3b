"""Non-recurrent layers that own parameters: `Embedding`, `Linear` (applied at every step), `Dropout`.

Dimensions: T time steps, N batch, D input size, V vocabulary / output size.
"""

from __future__ import annotations

import math

import numpy as np

from rnnkit.backend import DEFAULT_DTYPE
from rnnkit.functional import (
    affine_backward,
    affine_forward,
    bag_mean_backward_into,
    bag_mean_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward_into,
    embedding_forward,
)
from rnnkit.layers.module import Module


class Embedding(Module):
    """idx (...) -> vectors (..., D); W: (V, D) initialised N(0, 1) as in PyTorch."""

    def __init__(self, num_embeddings, dim, dtype=DEFAULT_DTYPE, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.add_param("W", rng.standard_normal((num_embeddings, dim)).astype(dtype))
        self._cache = None

    def forward(self, idx):
        out, self._cache = embedding_forward(idx, self.params["W"])
        return out

    def backward(self, dout):
        embedding_backward_into(self.grads["W"], dout, self._cache)


class BagEmbedding(Module):
    """Bags of rows -> their means (U, D); W: (B, D) initialised N(0, std^2). For character n-grams
    (`rnnkit.data.subwords`): a word's vector from the buckets of its pieces."""

    def __init__(self, num_buckets, dim, std=1.0, dtype=DEFAULT_DTYPE, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.add_param("W", (std * rng.standard_normal((num_buckets, dim))).astype(dtype))
        self._cache = None

    def forward(self, grams, offsets):
        out, self._cache = bag_mean_forward(grams, offsets, self.params["W"])
        return out

    def backward(self, dout):
        bag_mean_backward_into(self.grads["W"], dout, self._cache)


class Linear(Module):
    """x (..., D) -> x W + b (..., V); W: (D, V), b: (V,), U(-1/sqrt(D), 1/sqrt(D)) as in PyTorch."""

    def __init__(self, in_features, out_features, dtype=DEFAULT_DTYPE, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("W", rng.uniform(-bound, bound, (in_features, out_features)).astype(dtype))
        self.add_param("b", rng.uniform(-bound, bound, (out_features,)).astype(dtype))
        self._cache = None

    def forward(self, x):
        out, self._cache = affine_forward(x, self.params["W"], self.params["b"])
        return out

    def backward(self, dout):
        dx, dW, db = affine_backward(dout, self._cache)
        self.grads["W"] += dW
        self.grads["b"] += db
        return dx


class Dropout(Module):
    """Inverted dropout with its own seeded generator; identity in eval mode."""

    def __init__(self, p=0.0, seed=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng(seed)
        self._cache = None

    def forward(self, x):
        out, self._cache = dropout_forward(x, self.p, self.rng, self.training)
        return out

    def backward(self, dout):
        return dropout_backward(dout, self._cache)
