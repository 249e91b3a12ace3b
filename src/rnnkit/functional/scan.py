"""First-order linear recurrences, the time loop of the recent revival's linear cells (and of Mamba's and
RWKV's scans): h_t = a_t h_{t-1} + b_t, element-wise.

Dimensions: T time steps; the rest of each array (N, H, ...) any shape shared by a, b and h0.
"""

from __future__ import annotations

from rnnkit.backend import get_array_module


def linear_scan(a, b, h0, parallel=False):
    """h_t = a_t h_{t-1} + b_t for t = 1..T: a, b (T, ...), h0 (...) -> h (T+1, ...) with h[0] = h0.

    parallel=False: one step after another (T element-wise passes over (N, H); the fastest on a CPU).
    parallel=True: Hillis and Steele's prefix scan over the pairs (a, b), composed as
    (a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2), in ceil(log2 T) passes over all steps at once: the form
    that lets a GPU run the recurrence in parallel over time. Equal up to rounding (tested).
    """
    xp = get_array_module(a)
    T = a.shape[0]
    h = xp.empty((T + 1,) + h0.shape, dtype=b.dtype)
    h[0] = h0
    if not parallel:
        for t in range(T):
            xp.multiply(a[t], h[t], out=h[t + 1])
            h[t + 1] += b[t]
        return h
    A, B = a.copy(), b.copy()  # after the pass with offset d, (A_t, B_t) composes steps t-2d+1..t
    d = 1
    while d < T:
        B[d:] = A[d:] * B[:-d] + B[d:]  # right-hand sides read the previous pass (NumPy copies)
        A[d:] = A[d:] * A[:-d]
        d *= 2
    h[1:] = A * h0 + B
    return h
