"""Numerical gradient checks: central differences in float64 along a random upstream gradient."""

from __future__ import annotations

import numpy as np


def numerical_grad(f, x, dout, eps=1e-6):
    """d/dx of sum(f() * dout), by central differences over every element of x (modified in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = np.sum(f() * dout)
        x[i] = old - eps
        fm = np.sum(f() * dout)
        x[i] = old
        grad[i] = (fp - fm) / (2 * eps)
        it.iternext()
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|): robust to tiny entries, 0 for two zero arrays."""
    num = np.max(np.abs(a - b))
    den = np.max(np.abs(a) + np.abs(b))
    return 0.0 if den == 0 else float(num / den)
