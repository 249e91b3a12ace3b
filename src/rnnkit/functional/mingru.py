"""minGRU: a gated recurrence whose gates read the input alone (Feng et al. 2024, "Were RNNs All We
Needed?"), one of the linear recurrences of the recent revival (with Mamba's and RWKV's): the state
enters each step only linearly, so no matrix product is left inside the time loop.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    z_t  = sigmoid(x_t Wz + bz)                 update gate, from the input only
    c_t  = x_t Wc + bc                          candidate state (no tanh: minGRU's)
    h_t  = (1 - z_t) h_{t-1} + z_t c_t          = a_t h_{t-1} + b_t: linear in h

Buffers: x (T, N, D); Wx (D, 2H) = [Wz | Wc]; b (2H,) = [bz | bc]; h (T+1, N, H) with h[0] the initial
state; gates (T, N, 2H) = [z | c] after the sigmoid. Compared with the GRU, the reset gate is gone and
neither gate nor candidate reads h_{t-1}: the input projection of all steps is one product before the
loop, the loop is element-wise (a first-order linear recurrence, `linear_scan`, which is associative and
so can also run as a parallel prefix scan in log2 T passes), and BPTT is one reverse scan followed by
two products. What it gives up: the state cannot choose what to forget from what it holds, only from
what it reads. Derivation in docs/derivations/mingru.md.
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit import kernels
from rnnkit.backend import get_array_module
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.functional.lstm import _bytes, _step_gates, input_grad, sigmoid_, summed


class MinGRUCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    gates: object  # (T, N, 2H): [z | c] after the sigmoid
    Wx: object  # (D, 2H)
    mask: object  # (T, N) bool or None


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


def mingru_forward(x, h0, Wx, b, mask=None, *, scan_weights=True, parallel=False):
    """Run minGRU over x (T, N, D) from h0 (N, H). Returns h (T+1, N, H) and the cache.

    At a padded step (mask 0) the state is carried: a = 1, b = 0 there. scan_weights: see lstm_forward;
    parallel: the scan's form (`linear_scan`).
    """
    expect_shape("b", b, (None,), ("2H",))
    if b.shape[0] % 2:
        raise ValueError(f"b has shape {tuple(b.shape)}, expected (2H,): [bz | bc]")
    H = b.shape[0] // 2
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], 2 * H), ("D", "2H")), "b": (b, (2 * H,), ("2H",))},
        mask,
        scan_weights,
    )
    xp = get_array_module(x)
    gates = _input_gates(x, Wx, b, xp)
    fast = None if parallel else kernels.kernel("mingru_fw", x.dtype, x)
    if fast is not None:  # the same step compiled (rnnkit.kernels): gates and scan in one pass
        h = xp.empty((T + 1, N, H), dtype=x.dtype)
        h[0] = h0
        fast(T, N, H, gates, h, _bytes(mask))
        return h, MinGRUCache(x, h, gates, Wx, mask)
    z, c = gates[..., :H], gates[..., H:]
    sigmoid_(z, xp)
    a = 1 - z                       # a_t = 1 - z_t
    bt = z * c                      # b_t = z_t c_t
    if mask is not None:            # a padded step carries h_{t-1}
        pad = ~mask[:, :, None]
        xp.copyto(a, 1, where=pad)
        xp.copyto(bt, 0, where=pad)
    h = linear_scan(a, bt, h0, parallel)
    return h, MinGRUCache(x, h, gates, Wx, mask)


def mingru_recompute(x, h, Wx, b, mask=None):
    """The cache of `mingru_forward` rebuilt from the hidden states it produced: only the gates, one
    product and a sigmoid (they do not depend on h), for exact BPTT in bounded memory."""
    xp = get_array_module(x)
    gates = _input_gates(x, Wx, b, xp)
    sigmoid_(gates[..., :b.shape[0] // 2], xp)
    return MinGRUCache(x, h, gates, Wx, mask)


def _input_gates(x, Wx, b, xp):
    """x Wx + b (T, N, 2H) for every step at once: the only product of the forward."""
    T, N, D = x.shape
    gates = xp.empty((T, N, Wx.shape[1]), dtype=x.dtype)
    kernels.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, Wx.shape[1]))
    gates += b
    return gates


def mingru_backward(dh, cache, dhT=None, trace=None, *, into=None):
    """BPTT for `mingru_forward`. dh: (T, N, H) gradient of h[1:]; dhT: (N, H) gradient of h[T] (from a
    later chunk), or None. Gradients at padded steps are ignored. into: (dx, acc) as in `lstm_backward`.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.

    Returns dx (T, N, D), dh0 (N, H), dWx (D, 2H), db (2H,).
    """
    x, h, gates, Wx, mask = cache
    T, N, D = x.shape
    H = gates.shape[-1] // 2
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    g_next = xp.zeros((N, H), dtype=x.dtype)
    if dhT is not None:
        expect_shape("dhT", dhT, (N, H), ("N", "H"))
        g_next += dhT
    fast = kernels.kernel("mingru_bw", x.dtype, dh, gates)
    if fast is not None:  # the same loop compiled (rnnkit.kernels), tested equal to the one below
        dgates = xp.empty((T, N, 2 * H), dtype=x.dtype)
        trace_dh = None if trace is None else xp.empty((T + 1, N, H), dtype=x.dtype)
        fast(T, N, H, xp.ascontiguousarray(dh), gates, h, _bytes(mask), g_next, dgates, trace_dh)
        if trace is not None:
            trace_dh[0] = g_next
            trace["dh"] = trace_dh
    else:
        dgates = _mingru_backward_loop(dh, gates, h, mask, g_next, trace, xp)
    dg2 = dgates.reshape(T * N, 2 * H)
    dx, acc = into if into is not None else (None, None)
    dx = input_grad(dg2, Wx, dx, (T, N, D))
    dWx = summed(acc, "Wx", x.reshape(T * N, D).T, dg2)
    db = summed(acc, "b", dg2.sum(axis=0))
    return dx, g_next, dWx, db


def _mingru_backward_loop(dh, gates, h, mask, g_next, trace, xp):
    """The reference of `mingru_backward`'s loop (plain NumPy): the gates' gradient (T, N, 2H); g_next
    (N, H) turns from the gradient of h[T] into that of h[0] (in place)."""
    T, N, H = dh.shape
    z, c = gates[..., :H], gates[..., H:]
    a = 1 - z
    if mask is not None:
        xp.copyto(a, 1, where=~mask[:, :, None])
    # The reverse scan: g_t = dL/dh_t (all paths) = dh_t + a_{t+1} g_{t+1}, from g_T = dh_T + dhT.
    g = xp.empty((T, N, H), dtype=dh.dtype)  # g[t] = dL/dh[t+1]
    for t in reversed(range(T)):
        if mask is None:
            xp.add(dh[t], g_next, out=g[t])
        else:  # the loss never reads a padded output
            xp.add(xp.where(mask[t][:, None], dh[t], 0), g_next, out=g[t])
        xp.multiply(g[t], a[t], out=g_next)  # dh_{t-1} = g_t a_t
    if trace is not None:
        trace["dh"] = xp.concatenate([g_next[None], g])
    dgates = xp.empty((T, N, 2 * H), dtype=dh.dtype)
    dz, dc = dgates[..., :H], dgates[..., H:]
    xp.multiply(g, c - h[:-1], out=dz)   # dz = g (c - h_{t-1}), then through the sigmoid:
    dz *= z * (1 - z)
    xp.multiply(g, z, out=dc)            # dc = g z
    if mask is not None:                 # a padded step's gates were not used
        xp.copyto(dgates, 0, where=~mask[:, :, None])
    return dgates


def mingru_step(x, h, Wx, b, *, x_gates=None):
    """One inference step: x (N, D), h (N, H) -> h_t (N, H). x_gates: (N, 2H) = x Wx + b computed
    ahead (an embedding's rows, `Recurrent.input_gates`); x is then None."""
    xp = get_array_module(h)
    H = h.shape[-1]
    gates = _step_gates(x, x_gates, {"h": h}, Wx, b, 2 * H, xp)[0]
    z = sigmoid_(gates[:, :H], xp)
    return (1 - z) * h + z * gates[:, H:]
