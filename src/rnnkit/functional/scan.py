"""First-order linear recurrences, the time loop of the recent revival's linear cells (and of Mamba's and
RWKV's scans): h_t = a_t h_{t-1} + b_t, element-wise; directly (`linear_scan`), or from the logarithms of
positive terms (`linear_scan_log`).

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


def linear_scan_log(log_a, log_b, log_h0, parallel=False):
    """h_t = a_t h_{t-1} + b_t for t = 1..T from the logarithms of its terms, in the closed form (Heinsen
    2023) that Feng et al. 2024 ("Were RNNs All We Needed?") train their minimal recurrences with:
    log_a, log_b (T, ...), log_h0 (...) -> h (T+1, ...) with h[0] = exp(log_h0), equal to
    `linear_scan(a, b, h0)` up to rounding (tested).

    Unrolled, h_t = A_t (h_0 + sum_{s<=t} b_s / A_s) with A_t = a_1 ... a_t, so with a*_t = log A_t:
        a*_t     = cumsum(log a)_t                                   (a*_0 = 0)
        log h_t  = a*_t + logcumsumexp([log h_0, log b_1 - a*_1, ..., log b_T - a*_T])_t
    h_0 enters as the first term of the sum: as the state itself, log h_0, never passed through the
    candidate's activation a second time (a state carried from an earlier call is positive already).

    Positivity: every term needs a real logarithm. a_t in (0, 1] (log a finite and <= 0: a gate, log
    sigmoid(k) = -softplus(-k)); b_t >= 0 and h_0 >= 0, a zero as log = -inf (a padded step is
    log a = 0, log b = -inf). A recurrence with a signed candidate or state has no log form: the paper
    makes the candidate positive with g(x) = x + 0.5 for x >= 0 and sigmoid(x) below (continuous, 0.5
    at 0; log g = log(x + 0.5), resp. -softplus(-x)) and starts from a positive state.

    Stability: the logcumsumexp is a running logaddexp, which never overflows, however far a*_t falls;
    but log h_t is the sum of a*_t and a term about as large with the other sign, so h_t carries a
    relative error of about eps |a*_t| (a state decayed by e^-100 is good to 1e-14 in float64, to 1e-5
    in float32; restarting the scan from the state reached every so many steps bounds |a*_t|).
    parallel=False: a logaddexp one step after another; parallel=True: Hillis and Steele's prefix
    over logaddexp (ceil(log2(T+1)) passes over all steps at once), the form a GPU runs.
    """
    xp = get_array_module(log_b)
    T = log_b.shape[0]
    v = xp.empty((T + 1,) + log_b.shape[1:], dtype=log_b.dtype)
    a_star = xp.zeros_like(v)
    xp.cumsum(log_a, axis=0, out=a_star[1:])   # a*_t = sum_{s<=t} log a_s
    v[0] = log_h0
    xp.subtract(log_b, a_star[1:], out=v[1:])  # log b_t - a*_t
    if not parallel:
        for t in range(T):
            xp.logaddexp(v[t], v[t + 1], out=v[t + 1])
    else:
        d = 1
        while d < T + 1:
            v[d:] = xp.logaddexp(v[d:], v[:-d])  # the right-hand side reads the previous pass
            d *= 2
    v += a_star                                # log h_t = a*_t + logcumsumexp(...)_t
    return xp.exp(v, out=v)
