"""Attention of decoder states over encoder outputs, a whole batch of decoder steps at once: Luong's dot
and general (multiplicative) scores and Bahdanau's additive score. Stateless forward/backward pairs.

Dimensions, declared once for this module:
    T  decoder steps (queries)    S  source steps (keys)    N  batch size
    H  query size (decoder)       E  key size (encoder output)    A  additive attention size

    q      (T, N, H)    decoder states
    keys   (S, N, E)    encoder outputs, which are the values too
    mask   (S, N)       valid source positions (bool), or None (all valid)
    alpha  (T, N, S)    attention weights: softmax over s of the scores; exactly 0 at padded positions
    ctx    (T, N, E)    context vectors: ctx[t, n] = sum_s alpha[t, n, s] keys[s, n]

Scores e[t, n, s] (Luong et al. 2015, Bahdanau et al. 2015):
    dot        q[t, n] . keys[s, n]                                  (needs H == E)
    general    q[t, n] . (keys[s, n] Wa)                             Wa (E, H)
    additive   v . tanh(q[t, n] Wq + keys[s, n] Wk + b)              Wq (H, A), Wk (E, A), b (A,), v (A,)

Inside, the batch leads (N, T, S) so that every score and context is one batched matrix product.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit import kernels
from rnnkit.backend import get_array_module
from rnnkit.functional._checks import expect_shape

KINDS = ("dot", "general", "additive")


def attention_params(kind, H, E, A=None, rng=None, dtype=np.float32):
    """Fresh parameters for `kind`: {} for dot, {"Wa"} for general, {"Wq", "Wk", "b", "v"} for additive,
    initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's Linear."""
    rng = rng if rng is not None else np.random.default_rng(0)
    u = lambda fan, *shape: rng.uniform(-fan ** -0.5, fan ** -0.5, shape).astype(dtype)  # noqa: E731
    if kind == "dot":
        if H != E:
            raise ValueError(f"dot attention needs query size H == key size E, got H={H}, E={E}")
        return {}
    if kind == "general":
        return {"Wa": u(E, E, H)}
    if kind == "additive":
        A = A or H
        return {"Wq": u(H, H, A), "Wk": u(E, E, A), "b": u(E, A), "v": u(A, A)}
    raise ValueError(f"attention kind must be one of {KINDS}, got {kind!r}")


class AttentionCache(NamedTuple):
    kind: str
    qn: object  # (N, T, H) queries, batch-major
    kn: object  # (N, S, E) keys, batch-major
    kp: object  # (N, S, H) projected keys (dot: kn itself; general: kn Wa); None for additive
    z: object  # (N, T, S, A) tanh of the additive pre-activation; None otherwise
    alpha: object  # (N, T, S)
    params: dict
    q_shape: tuple
    k_shape: tuple


def attention_forward(q, keys, mask, kind, params):
    """q: (T, N, H); keys: (S, N, E); mask: (S, N) bool or None; params from `attention_params`.

    Returns ctx (T, N, E), alpha (T, N, S) and the cache for `attention_backward`.
    """
    xp = get_array_module(q, keys)
    expect_shape("q", q, (None, None, None), ("T", "N", "H"))
    T, N, H = q.shape
    expect_shape("keys", keys, (None, N, None), ("S", "N", "E"))
    S, _, E = keys.shape
    if mask is not None:
        expect_shape("mask", mask, (S, N), ("S", "N"))
    qn = q.transpose(1, 0, 2)
    kn = keys.transpose(1, 0, 2)
    kp = z = None
    if kind == "dot":
        if H != E:
            raise ValueError(f"dot attention needs H == E, got q (.., {H}) and keys (.., {E})")
        kp = kn
        e = qn @ kp.transpose(0, 2, 1)  # e = q . k
    elif kind == "general":
        expect_shape("Wa", params["Wa"], (E, H), ("E", "H"))
        # the projection as one 2-D product in time-major order (a stack of N small ones: ~2.4x slower)
        kp = _project(keys, params["Wa"]).transpose(1, 0, 2)  # (N, S, H): kp = k Wa
        e = qn @ kp.transpose(0, 2, 1)  # e = q . (k Wa)
    elif kind == "additive":
        Wq, Wk, b, v = params["Wq"], params["Wk"], params["b"], params["v"]
        A = v.shape[0]
        expect_shape("Wq", Wq, (H, A), ("H", "A"))
        expect_shape("Wk", Wk, (E, A), ("E", "A"))
        pq = _project(q, Wq).transpose(1, 0, 2)  # (N, T, A)
        pk = (_project(keys, Wk) + b).transpose(1, 0, 2)  # (N, S, A)
        z = xp.tanh(pq[:, :, None, :] + pk[:, None, :, :])  # (N, T, S, A)
        e = z @ v  # e = v . tanh(q Wq + k Wk + b)
    else:
        raise ValueError(f"attention kind must be one of {KINDS}, got {kind!r}")
    if mask is not None:
        valid = mask.T[:, None, :]  # (N, 1, S)
        e = xp.where(valid, e, -xp.inf)
    e = e - e.max(axis=-1, keepdims=True)  # shift so exp never overflows
    alpha = xp.exp(e)
    alpha /= alpha.sum(axis=-1, keepdims=True)  # softmax over s; exp(-inf) = 0 at padded positions
    ctx = alpha @ kn  # (N, T, E): ctx = sum_s alpha_s k_s
    cache = AttentionCache(kind, qn, kn, kp, z, alpha, params, q.shape, keys.shape)
    return ctx.transpose(1, 0, 2), alpha.transpose(1, 0, 2), cache


def attention_backward(dctx, cache, dalpha=None):
    """dctx: (T, N, E) gradient of the context; dalpha: (T, N, S) gradient of the weights, or None.

    Returns dq (T, N, H), dkeys (S, N, E) and the parameter gradients {name: array} (empty for dot).
    """
    kind, qn, kn, kp, z, alpha, params, q_shape, k_shape = cache
    T, N, H = q_shape
    S, _, E = k_shape
    expect_shape("dctx", dctx, (T, N, E), ("T", "N", "E"))
    dctxn = dctx.transpose(1, 0, 2)  # (N, T, E)
    da = dctxn @ kn.transpose(0, 2, 1)  # dL/dalpha[t, s] = dctx_t . k_s
    if dalpha is not None:
        expect_shape("dalpha", dalpha, (T, N, S), ("T", "N", "S"))
        da = da + dalpha.transpose(1, 0, 2)
    dkn = alpha.transpose(0, 2, 1) @ dctxn  # dL/dk_s from ctx = sum_t alpha[t, s] dctx_t
    # Softmax backward: de = alpha * (dalpha - sum_s alpha dalpha); zero where alpha is (padded).
    de = alpha * (da - (alpha * da).sum(axis=-1, keepdims=True))
    grads = {}
    if kind in ("dot", "general"):
        dqn = de @ kp  # (N, T, H)
        dkp = de.transpose(0, 2, 1) @ qn  # (N, S, H)
        if kind == "dot":
            dkn += dkp
            return dqn.transpose(1, 0, 2), dkn.transpose(1, 0, 2), grads
        dkeys = _time_major(dkn)
        dkp = _time_major(dkp)
        Wa = params["Wa"]
        grads["Wa"] = _weight_grad(kn, dkp)  # kp = k Wa
        dkeys += _project(dkp, Wa.T)
        return dqn.transpose(1, 0, 2), dkeys, grads
    Wq, Wk, v = params["Wq"], params["Wk"], params["v"]
    A = v.shape[0]
    grads["v"] = (de[..., None] * z).reshape(-1, A).sum(axis=0)  # e = z . v
    dpre = de[..., None] * v  # (N, T, S, A)
    dpre *= 1 - z * z  # tanh' = 1 - z^2
    dpq = _time_major(dpre.sum(axis=2))  # (T, N, A): each query meets every key
    dpk = _time_major(dpre.sum(axis=1))  # (S, N, A)
    grads["Wq"] = _weight_grad(qn, dpq)
    grads["Wk"] = _weight_grad(kn, dpk)
    grads["b"] = dpk.reshape(N * S, A).sum(axis=0)
    dkeys = _time_major(dkn)
    dkeys += _project(dpk, Wk.T)
    return _project(dpq, Wq.T), dkeys, grads


def _project(x, W):
    """x (L, N, I) @ W (I, O) -> (L, N, O) as one 2-D product."""
    L, N, I = x.shape
    return kernels.matmul(x.reshape(L * N, I), W).reshape(L, N, W.shape[1])


def _time_major(a):
    """A batch-major (N, L, F) array as a C-contiguous time-major (L, N, F) one."""
    return get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2))


def _weight_grad(xn, dy):
    """dW = x^T dy over every (step, row): xn (N, L, I) batch-major view, dy (L, N, O) time-major."""
    L, N, O = dy.shape
    x = xn.transpose(1, 0, 2)  # back to the caller's time-major layout (no copy when it was contiguous)
    return kernels.matmul(x.reshape(L * N, -1).T, dy.reshape(L * N, O))
