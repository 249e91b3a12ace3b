"""Argument checks shared by the stateless functions.

Every check raises `ValueError` naming the argument, what it got and what was expected: a wrong shape is
never broadcast silently.
"""

from __future__ import annotations

import numpy as np

from rnnkit.backend import get_array_module


def _fmt(shape, names):
    parts = []
    for s, n in zip(shape, names):
        parts.append(n if s is None else f"{n}={s}" if n else str(s))
    return "(" + ", ".join(parts) + ")"


def expect_shape(name, arr, shape, names=None):
    """Check `arr.shape` against `shape`, whose entries are ints or None (any size).

    `names` gives the dimension letters for the message, e.g. ("T", "N", "D").
    """
    names = names or ("",) * len(shape)
    if not hasattr(arr, "shape"):
        raise ValueError(f"{name} must be an array of shape {_fmt(shape, names)}, got {type(arr).__name__}")
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {_fmt(shape, names)}")


def expect_float(name, arr, dtype):
    if arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype)} like the input x")


def expect_finite(name, arr):
    xp = get_array_module(arr)
    # One reduction first: a NaN or inf anywhere makes the sum non-finite; the element-wise test runs
    # only then, to tell a real NaN/inf from an overflowing sum.
    if not bool(xp.isfinite(arr.sum())) and not bool(xp.isfinite(arr).all()):
        raise ValueError(f"{name} contains NaN or inf")


def check_mask(mask, T, N):
    """Return a boolean (T, N) mask of valid steps, or None; each column must be a prefix of ones."""
    if mask is None:
        return None
    expect_shape("mask", mask, (T, N), ("T", "N"))
    xp = get_array_module(mask)
    m = mask.astype(bool) if mask.dtype != bool else mask
    if mask.dtype != bool and not bool(xp.all((mask == 0) | (mask == 1))):
        raise ValueError("mask must hold only 0/1 or True/False")
    if T > 1 and bool(xp.any(m[1:] & ~m[:-1])):
        raise ValueError("mask must be a prefix of valid steps in each column (1...1 0...0)")
    return m


def check_recurrent_args(x, states, weights, mask, scan_weights=True):
    """Validate the inputs of a sequence forward: x (T, N, D), states (N, H), named weights.

    `weights` maps a name to (array, expected shape with symbolic None filled in). Returns (T, N, D, mask).
    scan_weights: False skips the weights' NaN/inf scan (their shapes and dtypes are still checked).
    """
    expect_shape("x", x, (None, None, None), ("T", "N", "D"))
    T, N, D = x.shape
    if x.dtype.kind != "f":
        raise ValueError(f"x has dtype {x.dtype}, expected a floating dtype (float32 or float64)")
    expect_finite("x", x)
    for name, (w, shape, names) in weights.items():
        expect_shape(name, w, shape, names)
        expect_float(name, w, x.dtype)
        if scan_weights:
            expect_finite(name, w)
    for name, (s, shape) in states.items():
        expect_shape(name, s, shape, ("N", "H"))
        expect_float(name, s, x.dtype)
        expect_finite(name, s)
    return T, N, D, check_mask(mask, T, N)
