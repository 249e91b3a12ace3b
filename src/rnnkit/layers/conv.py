"""Convolutional layer objects: `Conv2d`, `ReLU`, `MaxPool2d`, `AvgPool2d`, `GlobalAvgPool`.

They own parameters (Conv2d) and the cache of their last forward; the math is in
`rnnkit.functional.conv`. Layout NCHW, dimensions as declared there:
    N batch, C input channels, F filters, H, W height / width, K kernel size.
"""

from __future__ import annotations

import math

import numpy as np

from rnnkit.backend import DEFAULT_DTYPE
from rnnkit.functional.conv import (
    avgpool2d_backward,
    avgpool2d_forward,
    conv2d_backward,
    conv2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    relu_backward,
    relu_forward,
)
from rnnkit.layers.module import Module


class Conv2d(Module):
    """x (N, C, H, W) -> (N, F, Ho, Wo); w: (F, C, K, K), b: (F,), torch.nn.Conv2d's layout.

    init "he": N(0, 2 / fan_in) (He et al. 2015, suited to a ReLU after the layer);
    init "torch": U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, bias=True,
                 init="he", dtype=DEFAULT_DTYPE, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        K = kernel_size
        fan_in = in_channels * K * K
        shape = (out_channels, in_channels, K, K)
        if init == "he":
            w = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        elif init == "torch":
            w = rng.uniform(-1, 1, shape) / math.sqrt(fan_in)
        else:
            raise ValueError(f"init must be 'he' or 'torch', got {init!r}")
        self.add_param("w", w.astype(dtype))
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            b = np.zeros(out_channels) if init == "he" else rng.uniform(-bound, bound, out_channels)
            self.add_param("b", b.astype(dtype))
        self.stride, self.padding = stride, padding
        self._cache = None

    def forward(self, x):
        out, self._cache = conv2d_forward(x, self.params["w"], self.params.get("b"), self.stride,
                                          self.padding)
        return out

    def backward(self, dout):
        dx, dw, db = conv2d_backward(dout, self._cache)
        self.grads["w"] += dw
        if "b" in self.params:
            self.grads["b"] += db
        return dx


class ReLU(Module):
    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        out, self._cache = relu_forward(x)
        return out

    def backward(self, dout):
        return relu_backward(dout, self._cache)


class MaxPool2d(Module):
    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.k, self.stride = kernel_size, stride
        self._cache = None

    def forward(self, x):
        out, self._cache = maxpool2d_forward(x, self.k, self.stride)
        return out

    def backward(self, dout):
        return maxpool2d_backward(dout, self._cache)


class AvgPool2d(Module):
    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.k, self.stride = kernel_size, stride
        self._cache = None

    def forward(self, x):
        out, self._cache = avgpool2d_forward(x, self.k, self.stride)
        return out

    def backward(self, dout):
        return avgpool2d_backward(dout, self._cache)


class GlobalAvgPool(Module):
    """(N, C, H, W) -> (N, C)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        out, self._cache = global_avgpool_forward(x)
        return out

    def backward(self, dout):
        return global_avgpool_backward(dout, self._cache)


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse. Children are named '0', '1', ..."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout
