"""RWKV-7 "Goose" (Peng et al. 2025): its WKV recurrence, the time loop of the time-mixing block, as
BlinkDL/RWKV-LM computes it (RWKV-v7/rwkv_v7_numpy.py, train_temp/cuda/rwkv7_clampw.cu). The block
around it (token shift, the LoRA projections of w, a and v, the group norm and the gate) is not here yet.

Dimensions, declared once for this module:
    T  time steps    N  batch size    H  heads    C  head size (the channels are H*C)

Per head, the state S is a C x C matrix, value index i by key index j. With r, w, k, v, a, b (each C)
read from the input at step t:
    sa_t = S_{t-1} a_t                                          (C,)
    S_t  = S_{t-1} diag(w_t) + sa_t b_t^T + v_t k_t^T           S_ij = S_ij w_j + sa_i b_j + v_i k_j
    y_t  = S_t r_t                                              y_i = sum_j S_ij r_j
w is the decay (the reference's exp(-exp(-0.5) sigmoid(.)), in (0.545, 1)); the model passes
a = -kk and b = kk * a' (kk the normalised key, a' the in-context learning rate), so that S_{t-1} is
pulled off its old value along kk before v k^T is written. Here w, a and b are any values: the
recurrence and its gradients do not depend on their range.

Inputs r, w, k, v, a, b and the output y are time-major (T, N, H*C), head h in columns [h*C, (h+1)*C);
the state is (N, H, C, C), as the reference's (B, H, N, N) state (value x key). A mask (T, N) of valid
steps (each column a prefix) carries the state over a padded step, writes y = 0 there, and lets no
gradient reach that step's inputs.

The time loop is written twice: here in NumPy (`wkv7_fw`, `wkv7_bw`, the reference and specification)
and in rwkv7.c (compiled; tested equal). Both see the batch's heads as independent *streams*: their N
is the stream count N*H (one head of one batch row each, which never meet) and their H is C, the
loop's row width, so (T, N, H*C) arrays are passed as the same memory viewed (T, N*H, C), the state as
(N*H, C, C), and the mask repeated across heads (T, N*H). The rows cut across threads are then
streams, each a C x C state's work per step. The forward keeps the state every `chunk` steps (the
reference CUDA kernel keeps one per 16) and the backward recomputes each chunk from it before running
its steps in reverse, so the loop holds O(T/chunk + chunk) states rather than O(T). Derivation:
docs/derivations/rwkv7.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Cell, Gate
from rnnkit.cells.common import check_mask, expect_finite, expect_float, expect_shape, sigmoid_
from rnnkit.functional.causal_conv import final_state, final_state_backward
from rnnkit.functional.norms import (group_norm_backward, group_norm_forward, layer_norm_backward,
                                     layer_norm_forward)
from rnnkit.kernels import LoopKernel

SOURCE = Path(__file__).with_name("rwkv7.c")
CHUNK = 16  # states kept every this many steps by default, as the reference CUDA kernel's _CHUNK_LEN_
INPUTS = ("r", "w", "k", "v", "a", "b")


class Wkv7Cache(NamedTuple):
    r: object  # (T, N*H, C) each of r, w, k, v, a, b, as streams
    w: object
    k: object
    v: object
    a: object
    b: object
    kept: object  # (ceil(T/chunk), N*H, C, C) the state at steps 0, chunk, 2 chunk, ...
    mask: object  # (T, N*H) bool, or None
    chunk: int
    shape: tuple  # (T, N, H, C)


# --- the reference of rwkv7.c's loops: arrays as streams, N the streams, H the head size -------------

def _step(S, w, k, v, a, b, xp):
    """One step for every stream: S (N, H, H) -> (sa_t, S_t), with S_{t-1} = S and w..b (N, H)."""
    sa = xp.einsum("nij,nj->ni", S, a)                                  # sa = S_{t-1} a
    return sa, S * w[:, None, :] + sa[:, :, None] * b[:, None, :] + v[:, :, None] * k[:, None, :]


def wkv7_fw(T, N, H, chunk, r, w, k, v, a, b, mask, S, kept, y):
    """The forward (the reference of rwkv7.c's `wkv7_fw`, in place): r, w, k, v, a, b (T, N, H) in;
    mask (T, N) or None; S (N, H, H) in: the initial state, out: the final one; kept (ceil(T/chunk), N,
    H, H) or None out: the state before steps 0, chunk, 2 chunk, ...; y (T, N, H) out: S_t r_t, 0 at a
    padded step."""
    xp = get_array_module(r)
    for t in range(T):
        if kept is not None and t % chunk == 0:
            kept[t // chunk] = S
        _, Sn = _step(S, w[t], k[t], v[t], a[t], b[t], xp)
        yt = xp.einsum("nij,nj->ni", Sn, r[t])                          # y_t = S_t r_t
        if mask is not None:
            m = mask[t]
            Sn = xp.where(m[:, None, None], Sn, S)
            yt = xp.where(m[:, None], yt, 0)
        S[...] = Sn
        y[t] = yt


def wkv7_bw(T, N, H, chunk, r, w, k, v, a, b, mask, kept, dy, dS, dr, dw, dk, dv, da, db):
    """The backward (the reference of rwkv7.c's `wkv7_bw`, in place). In: the forward's inputs, kept as
    it left it (only kept[0], the initial state, is read here: the states are recomputed from it); dy
    (T, N, H) (not read at padded steps); dS (N, H, H) in: the final state's gradient, out: the initial
    state's. Out: dr, dw, dk, dv, da, db (T, N, H), 0 at padded steps. With L_t = dL/dS_t from the
    steps after t, G_t = L_t + dy_t r_t^T the whole gradient of S_t, and the forward's sa_t:
        dr_t = S_t^T dy_t            dw_t = sum_i G_t * S_{t-1}     (over the value index i)
        dk_t = G_t^T v_t             dv_t = G_t k_t
        db_t = G_t^T sa_t            dsa_t = G_t b_t                da_t = S_{t-1}^T dsa_t
        L_{t-1} = G_t diag(w_t) + dsa_t a_t^T
    """
    _wkv7_reverse(T, chunk, r, w, k, v, a, b, mask, kept, dy, dS, dr, dw, dk, dv, da, db)


def _wkv7_reverse(T, chunk, r, w, k, v, a, b, mask, kept, dy, dS, dr, dw, dk, dv, da, db, trace=None):
    """`wkv7_bw`'s loop; trace (T+1, N, H, H) or None: receives dL/dS_t at every step (trace[0] the
    initial state's), for diagnostics."""
    xp = get_array_module(dy)
    Ss = [kept[0].copy()]
    sas = []
    for t in range(T):
        sa, Sn = _step(Ss[-1], w[t], k[t], v[t], a[t], b[t], xp)
        if mask is not None:
            Sn = xp.where(mask[t][:, None, None], Sn, Ss[-1])
        Ss.append(Sn)
        sas.append(sa)
    L = dS.copy()
    for t in range(T - 1, -1, -1):
        Sp, Sc, sa = Ss[t], Ss[t + 1], sas[t]
        G = L + dy[t][:, :, None] * r[t][:, None, :]                   # dL/dS_t, every path
        dsa = xp.einsum("nij,nj->ni", G, b[t])
        grads = [(dr, xp.einsum("ni,nij->nj", dy[t], Sc)), (dw, (G * Sp).sum(axis=1)),
                 (dk, xp.einsum("nij,ni->nj", G, v[t])), (dv, xp.einsum("nij,nj->ni", G, k[t])),
                 (da, xp.einsum("nij,ni->nj", Sp, dsa)), (db, xp.einsum("nij,ni->nj", G, sa))]
        Lp = G * w[t][:, None, :] + dsa[:, :, None] * a[t][:, None, :]
        if mask is not None:
            m = mask[t]
            grads = [(out, xp.where(m[:, None], g, 0)) for out, g in grads]
            Lp = xp.where(m[:, None, None], Lp, L)
        for out, g in grads:
            out[t] = g
        if trace is not None:
            trace[t + 1] = G
        L = Lp
    dS[...] = L
    if trace is not None:
        trace[0] = L


# The compiled loops, each the entry point of the same name in rwkv7.c with the function above as its
# reference. blocks: a stream's step is about 3 (forward) and 10 (backward, the chunk's recompute
# included) multiply-adds per state entry, H x H of them; a stream is worth a thread of its own.
WKV7_FW = LoopKernel("wkv7_fw", SOURCE, wkv7_fw, blocks=3, min_rows=1)
WKV7_BW = LoopKernel("wkv7_bw", SOURCE, wkv7_bw, blocks=10, min_rows=1)


# --- the sequence API, (T, N, H*C) arrays --------------------------------------------------------------

def _streams(x, T, NH, C, xp):
    """(T, N, H*C) as (T, N*H, C): the same memory when x is C-contiguous."""
    return xp.ascontiguousarray(x).reshape(T, NH, C)


def wkv7(r, w, k, v, a, b, S0, mask=None, chunk=CHUNK):
    """The WKV recurrence over a sequence: r, w, k, v, a, b (T, N, H*C), S0 (N, H, C, C) (not
    modified), mask (T, N) or None. Returns y (T, N, H*C), the final state S_T (N, H, C, C) (the state
    after each sequence's last valid step) and the cache for `wkv7_backward`."""
    expect_shape("S0", S0, (None, None, None, None), ("N", "H", "C", "C"))
    N, H, C, C2 = S0.shape
    if C2 != C:
        raise ValueError(f"S0 has shape {tuple(S0.shape)}, expected (N, H, C, C): C x C per head")
    expect_shape("r", r, (None, N, H * C), ("T", f"N={N}", f"H*C={H * C}"))
    T = r.shape[0]
    if r.dtype.kind != "f":
        raise ValueError(f"r has dtype {r.dtype}, expected a floating dtype (float32 or float64)")
    for name, x in zip(INPUTS, (r, w, k, v, a, b)):
        expect_shape(name, x, (T, N, H * C), ("T", "N", "H*C"))
        expect_float(name, x, r.dtype)
        expect_finite(name, x)
    expect_float("S0", S0, r.dtype)
    expect_finite("S0", S0)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    mask = check_mask(mask, T, N)
    xp = get_array_module(r)
    NH = N * H
    ins = [_streams(x, T, NH, C, xp) for x in (r, w, k, v, a, b)]
    smask = None if mask is None else xp.ascontiguousarray(xp.repeat(mask, H, axis=1))
    S = xp.array(S0, dtype=r.dtype, order="C").reshape(NH, C, C)
    kept = xp.empty((-(-T // chunk), NH, C, C), dtype=r.dtype)
    y = xp.empty((T, NH, C), dtype=r.dtype)
    get_ops(*ins).run(WKV7_FW, T=T, N=NH, H=C, chunk=chunk, **dict(zip(INPUTS, ins)), mask=smask,
                      S=S, kept=kept, y=y)
    cache = Wkv7Cache(*ins, kept, smask, chunk, (T, N, H, C))
    return y.reshape(T, N, H * C), S.reshape(N, H, C, C), cache


def wkv7_backward(dy, dST, cache: Wkv7Cache):
    """BPTT through `wkv7`: dy (T, N, H*C) (ignored at padded steps), dST (N, H, C, C) the final
    state's gradient, or None. Returns dr, dw, dk, dv, da, db (T, N, H*C), each 0 at padded steps, and
    dS0 (N, H, C, C)."""
    T, N, H, C = cache.shape
    NH = N * H
    xp = get_array_module(dy)
    dtype = cache.r.dtype
    expect_shape("dy", dy, (T, N, H * C), ("T", "N", "H*C"))
    expect_float("dy", dy, dtype)
    dS = xp.zeros((NH, C, C), dtype=dtype)
    if dST is not None:
        expect_shape("dST", dST, (N, H, C, C), ("N", "H", "C", "C"))
        expect_float("dST", dST, dtype)
        dS += dST.reshape(NH, C, C)
    grads = {"d" + name: xp.empty((T, NH, C), dtype=dtype) for name in INPUTS}
    get_ops(dy, cache.r).run(WKV7_BW, T=T, N=NH, H=C, chunk=cache.chunk,
                             **{name: getattr(cache, name) for name in INPUTS}, mask=cache.mask,
                             kept=cache.kept, dy=_streams(dy, T, NH, C, xp), dS=dS, **grads)
    return (*(grads["d" + name].reshape(T, N, H * C) for name in INPUTS), dS.reshape(N, H, C, C))


def wkv7_trace(dy, dST, cache: Wkv7Cache):
    """dL/dS_t at every step (T+1, N, H, C, C), trace[0] the initial state's: the backward's loop in
    NumPy, for diagnostics (the compiled loop keeps none of them)."""
    T, N, H, C = cache.shape
    xp = get_array_module(dy)
    dS = xp.zeros((N * H, C, C), dtype=cache.r.dtype)
    if dST is not None:
        dS += dST.reshape(N * H, C, C)
    scratch = [xp.empty_like(cache.r) for _ in INPUTS]
    trace = xp.empty((T + 1, N * H, C, C), dtype=dS.dtype)
    _wkv7_reverse(T, cache.chunk, *(getattr(cache, n) for n in INPUTS), cache.mask, cache.kept,
                  _streams(dy, T, N * H, C, xp), dS, *scratch, trace=trace)
    return trace.reshape(T + 1, N, H, C, C)


# --- the block: time mixing and channel mixing around the WKV recurrence -----------------------------
#
# Shapes of the block (one layer), beside the letters above: D the layer's input size, M = H*C its
# width (d_model, the cell's hidden size), F = 4M the channel mix's width, R a LoRA rank.

EPS = 1e-5  # the LayerNorms'
GROUP_EPS = 64e-5  # the group norm's over each head's output (the reference's 1e-5 * head_size_divisor^2)
DECAY_SCALE = math.exp(-0.5)  # w = exp(-e^-0.5 sigmoid(.)): the decay in (exp(-e^-0.5), 1) = (0.545, 1)
NORM_EPS = 1e-12  # F.normalize's floor on the norm of each head's kk
MIXES = ("r", "w", "k", "v", "a", "g")  # the token-shift mixes of the time mix, in this order
PARAMS = ("W_in", "ln1_w", "ln1_b", *(f"mu_{m}" for m in MIXES), "Wr", "Wk", "Wv", "w0", "w1", "w2",
          "a0", "a1", "a2", "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k", "lnx_w", "lnx_b", "Wo",
          "ln2_w", "ln2_b", "mu_c", "Wck", "Wcv")  # one layer's, in the compiled step's order


class Rwkv7Cache(NamedTuple):
    x: object  # (T, N, D) the layer's input
    x0: object  # (T, N, M) the block's input (x, or x W_in where D != M)
    ln1: object  # LayerNormCache of u = LN1(x0)
    dd: object  # (T, N, M) u_{t-1} - u_t, the token shift's difference
    X: object  # (6, T, N, M) x_r, x_w, x_k, x_v, x_a, x_g = u + dd * mu_*
    r: object  # (T, N, M)
    k: object  # (T, N, M) the key x_k Wk before its modification
    v: object  # (T, N, M) x_v Wv, before the value residual
    hw: object  # (T, N, Rw) tanh(x_w w1)
    sw: object  # (T, N, M) sigmoid(w0 + hw w2)
    w: object  # (T, N, M) the decay
    vf: object  # (T, N, M) v_first: this layer's own v (layer 0) or the one passed in
    hv: object  # (T, N, Rv) x_v v1, or None (layer 0)
    vg: object  # (T, N, M) sigmoid(v0 + hv v2), or None
    vv: object  # (T, N, M) the value the WKV reads (after the value residual)
    ha: object  # (T, N, Ra) x_a a1
    a: object  # (T, N, M) the in-context learning rate sigmoid(a0 + ha a2)
    hg: object  # (T, N, Rg) sigmoid(x_g g1)
    g: object  # (T, N, M) the output gate hg g2
    kk: object  # (T, N, H, C) the normalised key
    knorm: object  # (T, N, H, 1) ||k * k_k|| per head, floored at NORM_EPS
    kt: object  # (T, N, M) the key written: k (1 + (a - 1) k_a)
    wkv: object  # Wkv7Cache
    gn: object  # LayerNormCache of the group norm
    rk: object  # (T, N, H) the bonus's per-head weight sum_c r kt r_k
    yb: object  # (T, N, M) GroupNorm(y) + rk v: what the gate multiplies
    o: object  # (T, N, M) yb * g
    x1: object  # (T, N, M) after the time mix's residual
    ln2: object  # LayerNormCache of u2 = LN2(x1)
    dd2: object  # (T, N, M) the channel mix's token-shift difference
    xc: object  # (T, N, M) u2 + dd2 mu_c
    hc: object  # (T, N, F) xc Wck, before the squared relu
    kc: object  # (T, N, F) relu(hc)^2
    lengths: object  # (N,) or None
    mask: object  # (T, N) bool or None
    p: dict
    heads: int


def _rows(a):
    """(T, N, X) as (T*N, X), for the products."""
    return a.reshape(-1, a.shape[-1])


def _mm(a, W):
    """a (T, N, X) @ W (X, Y) -> (T, N, Y)."""
    return (_rows(a) @ W).reshape(a.shape[:-1] + (W.shape[1],))


def _wgrad(a, d):
    """sum over (T, N) of a^T d: a (T, N, X), d (T, N, Y) -> (X, Y)."""
    return _rows(a).T @ _rows(d)


def _shifted(u, prev0):
    """u_{t-1} at every step (T, N, M): prev0 (N, M) before the first."""
    xp = get_array_module(u)
    prev = xp.empty_like(u)
    prev[0] = prev0
    prev[1:] = u[:-1]
    return prev


def _shift_final(u, prev0, lengths):
    """The token shift's state after u: each sequence's last valid u (prev0 where it has none)."""
    return final_state(u, prev0[:, None, :], lengths)[:, 0]


def _shift_backward(dprev, du, dfinal, lengths):
    """Adds the gradient of `_shifted`'s output dprev (and of the final shift state, or None) into du
    (T, N, M); returns the initial shift state's gradient (N, M)."""
    du[:-1] += dprev[1:]
    dprev0 = dprev[0].copy()
    if dfinal is not None:
        d0 = dprev0[:, None, :]
        final_state_backward(dfinal[:, None, :], lengths, du, d0)
    return dprev0


def _sizes7(p):
    """H heads, C head size, M width, D input size from the parameters."""
    H, C = p["r_k"].shape
    M = H * C
    D = p["W_in"].shape[0] if "W_in" in p else M
    return H, C, M, D


def param_shapes7(D, M, head_size, ranks):
    """The parameters of one layer by name; ranks (Rw, Ra, Rv, Rg) of the LoRAs."""
    H = M // head_size
    Rw, Ra, Rv, Rg = ranks
    shapes = {"W_in": (D, M)} if D != M else {}
    shapes.update({"ln1_w": (M,), "ln1_b": (M,)})
    shapes.update({f"mu_{m}": (M,) for m in MIXES})
    shapes.update({"Wr": (M, M), "Wk": (M, M), "Wv": (M, M),
                   "w0": (M,), "w1": (M, Rw), "w2": (Rw, M), "a0": (M,), "a1": (M, Ra), "a2": (Ra, M),
                   "v0": (M,), "v1": (M, Rv), "v2": (Rv, M), "g1": (M, Rg), "g2": (Rg, M),
                   "k_k": (M,), "k_a": (M,), "r_k": (H, head_size), "lnx_w": (M,), "lnx_b": (M,),
                   "Wo": (M, M), "ln2_w": (M,), "ln2_b": (M,), "mu_c": (M,), "Wck": (M, 4 * M),
                   "Wcv": (4 * M, M)})
    return shapes


def _check7(x, state, p, mask, v_first, scan_weights):
    expect_shape("x", x, (None, None, None), ("T", "N", "D"))
    T, N, D = x.shape
    if x.dtype.kind != "f":
        raise ValueError(f"x has dtype {x.dtype}, expected a floating dtype (float32 or float64)")
    expect_finite("x", x)
    H, C, M, Dp = _sizes7(p)
    if D != Dp:
        raise ValueError(f"x has {D} features, expected {Dp} (the layer's input size)")
    if scan_weights:
        for name, a in p.items():
            expect_float(name, a, x.dtype)
            expect_finite(name, a)
    for name, s, shape, letters in (("tshift0", state[0], (N, M), ("N", "M")),
                                    ("wkv0", state[1], (N, H, C, C), ("N", "H", "C", "C")),
                                    ("cshift0", state[2], (N, M), ("N", "M"))):
        expect_shape(name, s, shape, letters)
        expect_float(name, s, x.dtype)
        expect_finite(name, s)
    if v_first is not None:
        expect_shape("v_first", v_first, (T, N, M), ("T", "N", "M"))
        expect_float("v_first", v_first, x.dtype)
    return T, N, D, H, C, M, check_mask(mask, T, N)


def rwkv7_forward(x, state, p, mask=None, *, v_first=None, chunk=CHUNK, scan_weights=True):
    """One RWKV-7 block over x (T, N, D) from the state (tshift (N, M), wkv (N, H, C, C), cshift (N,
    M)): x0 = x (or x W_in), then x1 = x0 + TimeMix(LN1 x0), out = x1 + ChannelMix(LN2 x1).
    v_first: (T, N, M) the first layer's values, for a later layer's value residual; None in the
    first layer, whose own values become it (`cache.vf`). Returns out (T, N, M), the final state and
    the cache. The equations, in the order computed (per step t; the mixes read u_{t-1}):"""
    T, N, D, H, C, M, mask = _check7(x, state, p, mask, v_first, scan_weights)
    xp = get_array_module(x)
    lengths = None if mask is None else mask.sum(axis=0)
    x0 = _mm(x, p["W_in"]) if "W_in" in p else x
    # time mix
    u, ln1 = layer_norm_forward(x0, p["ln1_w"], p["ln1_b"], EPS)      # u = LN1(x0)
    dd = _shifted(u, state[0]) - u                                      # dd_t = u_{t-1} - u_t
    mu = xp.stack([p[f"mu_{m}"] for m in MIXES])                        # (6, M)
    X = u[None] + dd[None] * mu[:, None, None, :]                       # x_* = u + dd mu_*
    xr, xw, xk, xv, xa, xg = X
    r, k, v = _mm(xr, p["Wr"]), _mm(xk, p["Wk"]), _mm(xv, p["Wv"])     # r, k, v = x_* W_*
    hw = xp.tanh(_mm(xw, p["w1"]))
    sw = sigmoid_(p["w0"] + _mm(hw, p["w2"]), xp)
    w = xp.exp(-DECAY_SCALE * sw)                          # w = exp(-e^-0.5 sigmoid(w0 + tanh(x_w w1) w2))
    if v_first is None:                                    # the first layer: its values are v_first
        vf, hv, vg, vv = v, None, None, v
    else:                                                  # v <- v + (v_first - v) sigmoid(v0 + x_v v1 v2)
        vf = v_first
        hv = _mm(xv, p["v1"])
        vg = sigmoid_(p["v0"] + _mm(hv, p["v2"]), xp)
        vv = v + (vf - v) * vg
    ha = _mm(xa, p["a1"])
    a = sigmoid_(p["a0"] + _mm(ha, p["a2"]), xp)               # a = sigmoid(a0 + x_a a1 a2)
    hg = sigmoid_(_mm(xg, p["g1"]), xp)
    g = _mm(hg, p["g2"])                                   # g = sigmoid(x_g g1) g2
    kh = (k * p["k_k"]).reshape(T, N, H, C)
    knorm = xp.maximum(xp.sqrt((kh * kh).sum(axis=-1, keepdims=True)), NORM_EPS)
    kk = kh / knorm                                        # kk = normalize_head(k k_k)
    kt = k * (1 + (a - 1) * p["k_a"])                      # kt = k (1 + (a - 1) k_a)
    kkf = kk.reshape(T, N, M)
    y, S, wkv = wkv7(r, w, kt, vv, -kkf, kkf * a, state[1], mask, chunk)   # a = -kk, b = kk a
    yn, gn = group_norm_forward(y, H, p["lnx_w"], p["lnx_b"], GROUP_EPS)
    rk = (r * kt).reshape(T, N, H, C)
    rk = (rk * p["r_k"]).sum(axis=-1)                      # the bonus: (sum_c r kt r_k) v per head
    yb = yn + (rk[..., None] * vv.reshape(T, N, H, C)).reshape(T, N, M)
    o = yb * g
    x1 = x0 + _mm(o, p["Wo"])                              # x1 = x0 + (yb g) Wo
    # channel mix
    u2, ln2 = layer_norm_forward(x1, p["ln2_w"], p["ln2_b"], EPS)
    dd2 = _shifted(u2, state[2]) - u2
    xc = u2 + dd2 * p["mu_c"]
    hc = _mm(xc, p["Wck"])
    kc = xp.maximum(hc, 0) ** 2                            # relu(xc Wck)^2
    out = x1 + _mm(kc, p["Wcv"])                           # out = x1 + relu(xc Wck)^2 Wcv
    final = (_shift_final(u, state[0], lengths), S, _shift_final(u2, state[2], lengths))
    cache = Rwkv7Cache(x, x0, ln1, dd, X, r, k, v, hw, sw, w, vf, hv, vg, vv, ha, a, hg, g, kk, knorm,
                       kt, wkv, gn, rk, yb, o, x1, ln2, dd2, xc, hc, kc, lengths, mask, p, H)
    return out, final, cache


def rwkv7_backward(dout, cache: Rwkv7Cache, dstate=None, dv_first=None, trace=None):
    """BPTT through `rwkv7_forward`: dout (T, N, M) (ignored at padded steps); dstate: the final
    state's gradient (tshift, wkv, cshift; any part None) or None; dv_first: the first layer's only:
    the gradient of its v_first from the later layers (T, N, M), or None. Returns dx (T, N, D), the
    initial state's gradient, {parameter name: gradient} and the gradient of the v_first passed in (None
    in the first layer). trace: a dict to receive trace["dwkv"] (T+1, N, M*C), dL/dS_t at every step
    (from the NumPy loop, for diagnostics), or None. The forward read backwards."""
    c = cache
    p = c.p
    T, N, D = c.x.shape
    H, C, M, _ = _sizes7(p)
    xp = get_array_module(dout)
    expect_shape("dout", dout, (T, N, M), ("T", "N", "M"))
    expect_float("dout", dout, c.x.dtype)
    dT, dS, dC = (None, None, None) if dstate is None else dstate
    if c.mask is not None:
        dout = dout * c.mask[:, :, None]
    gr = {}
    # channel mix
    gr["Wcv"] = _wgrad(c.kc, dout)
    dhc = _mm(dout, p["Wcv"].T) * 2 * xp.maximum(c.hc, 0)
    gr["Wck"] = _wgrad(c.xc, dhc)
    dxc = _mm(dhc, p["Wck"].T)
    gr["mu_c"] = (dxc * c.dd2).reshape(-1, M).sum(axis=0)
    dprev2 = dxc * p["mu_c"]                               # xc = u2 (1 - mu_c) + u2_{t-1} mu_c
    du2 = dxc - dprev2
    dcs0 = _shift_backward(dprev2, du2, dC, c.lengths)
    dx1, gr["ln2_w"], gr["ln2_b"] = layer_norm_backward(du2, c.ln2)
    dx1 += dout
    # time mix
    gr["Wo"] = _wgrad(c.o, dx1)
    do = _mm(dx1, p["Wo"].T)
    dg = do * c.yb
    dyb = do * c.g
    dyb4 = dyb.reshape(T, N, H, C)
    drk = (dyb4 * c.vv.reshape(T, N, H, C)).sum(axis=-1)    # (T, N, H)
    dvv = (c.rk[..., None] * dyb4).reshape(T, N, M)
    r4, kt4 = c.r.reshape(T, N, H, C), c.kt.reshape(T, N, H, C)
    drk4 = drk[..., None] * p["r_k"]
    dr = (drk4 * kt4).reshape(T, N, M)
    dkt = (drk4 * r4).reshape(T, N, M)
    gr["r_k"] = (drk[..., None] * r4 * kt4).reshape(-1, H, C).sum(axis=0)
    dy, gr["lnx_w"], gr["lnx_b"] = group_norm_backward(dyb, c.gn)
    dr2, dw, dkt2, dvv2, dA, dB, dS0 = wkv7_backward(dy, dS, c.wkv)
    if trace is not None:
        trace["dwkv"] = wkv7_trace(dy, dS, c.wkv).reshape(T + 1, N, M * C)
    dr += dr2
    dkt += dkt2
    dvv += dvv2
    kkf = c.kk.reshape(T, N, M)
    dkk = dB * c.a - dA                                    # a_wkv = -kk, b_wkv = kk a
    da = dB * kkf
    ka = p["k_a"]
    dk = dkt * (1 + (c.a - 1) * ka)                        # kt = k (1 + (a - 1) k_a)
    da += dkt * c.k * ka
    gr["k_a"] = (dkt * c.k * (c.a - 1)).reshape(-1, M).sum(axis=0)
    dkk4 = dkk.reshape(T, N, H, C)                         # kk = kh / ||kh||
    dkh = (dkk4 - c.kk * (dkk4 * c.kk).sum(axis=-1, keepdims=True)) / c.knorm
    floor = c.knorm <= NORM_EPS                            # a norm at the floor: kk = kh / eps
    if bool(floor.any()):
        dkh = xp.where(floor, dkk4 / NORM_EPS, dkh)
    dkh = dkh.reshape(T, N, M)
    dk += dkh * p["k_k"]
    gr["k_k"] = (dkh * c.k).reshape(-1, M).sum(axis=0)
    dX = xp.empty_like(c.X)
    # g = sigmoid(x_g g1) g2
    gr["g2"] = _wgrad(c.hg, dg)
    dgl = _mm(dg, p["g2"].T) * c.hg * (1 - c.hg)
    gr["g1"] = _wgrad(c.X[5], dgl)
    dX[5] = _mm(dgl, p["g1"].T)
    # a = sigmoid(a0 + x_a a1 a2)
    dal = da * c.a * (1 - c.a)
    gr["a0"] = dal.reshape(-1, M).sum(axis=0)
    gr["a2"] = _wgrad(c.ha, dal)
    dha = _mm(dal, p["a2"].T)
    gr["a1"] = _wgrad(c.X[4], dha)
    dX[4] = _mm(dha, p["a1"].T)
    # the value residual
    dvf_in = None
    if c.vg is None:                                       # the first layer: vv = v = v_first
        dv = dvv if dv_first is None else dvv + dv_first
        for name in ("v0", "v1", "v2"):
            gr[name] = xp.zeros_like(p[name])
        dX[3] = 0
    else:
        dv = dvv * (1 - c.vg)
        dvf_in = dvv * c.vg
        dvl = dvv * (c.vf - c.v) * c.vg * (1 - c.vg)
        gr["v0"] = dvl.reshape(-1, M).sum(axis=0)
        gr["v2"] = _wgrad(c.hv, dvl)
        dhv = _mm(dvl, p["v2"].T)
        gr["v1"] = _wgrad(c.X[3], dhv)
        dX[3] = _mm(dhv, p["v1"].T)
    # w = exp(-e^-0.5 sigmoid(w0 + tanh(x_w w1) w2))
    dwl = dw * (-DECAY_SCALE * c.w) * c.sw * (1 - c.sw)
    gr["w0"] = dwl.reshape(-1, M).sum(axis=0)
    gr["w2"] = _wgrad(c.hw, dwl)
    dhw = _mm(dwl, p["w2"].T) * (1 - c.hw * c.hw)
    gr["w1"] = _wgrad(c.X[1], dhw)
    dX[1] = _mm(dhw, p["w1"].T)
    # r, k, v = x_* W_*
    gr["Wr"], dX[0] = _wgrad(c.X[0], dr), _mm(dr, p["Wr"].T)
    gr["Wk"], dX[2] = _wgrad(c.X[2], dk), _mm(dk, p["Wk"].T)
    gr["Wv"] = _wgrad(c.X[3], dv)
    dX[3] += _mm(dv, p["Wv"].T)                            # beside the value residual's share
    mu = xp.stack([p[f"mu_{m}"] for m in MIXES])
    for j, m in enumerate(MIXES):
        gr[f"mu_{m}"] = (dX[j] * c.dd).reshape(-1, M).sum(axis=0)
    dprev = (dX * mu[:, None, None, :]).sum(axis=0)        # x_* = u (1 - mu_*) + u_{t-1} mu_*
    du = dX.sum(axis=0) - dprev
    dts0 = _shift_backward(dprev, du, dT, c.lengths)
    dx0, gr["ln1_w"], gr["ln1_b"] = layer_norm_backward(du, c.ln1)
    dx0 += dx1
    if "W_in" in p:
        gr["W_in"] = _wgrad(c.x, dx0)
        dx = _mm(dx0, p["W_in"].T)
    else:
        dx = dx0
    return dx, (dts0, dS0, dcs0), {name: gr[name] for name in p}, dvf_in


def rwkv7_step_fw(T, N, H, D, NH, C, Rw, Ra, Rv, Rg, first, x, W_in, ln1_w, ln1_b, mu_r, mu_w, mu_k,
                  mu_v, mu_a, mu_g, Wr, Wk, Wv, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2, k_k, k_a,
                  r_k, lnx_w, lnx_b, Wo, ln2_w, ln2_b, mu_c, Wck, Wcv, tshift, wkv, cshift, vfirst,
                  out):
    """One token through the block (the reference of rwkv7.c's `rwkv7_step`, in place; T = 1): x (N,
    D) -> out (N, H); tshift, cshift (N, H) and wkv (N, NH, C, C) moved on one step; vfirst (N, H)
    written (first: the stack's first layer, its values) or read. W_in None where D = H. The block's
    forward over one step: the same arithmetic as the sequence mode's."""
    p = {name: value for name, value in locals().items() if name in PARAMS and value is not None}
    y, final, cache = rwkv7_forward(x[None], (tshift, wkv, cshift), p,
                                    v_first=None if first else vfirst[None], scan_weights=False)
    out[...] = y[0]
    tshift[...], wkv[...], cshift[...] = final
    if first:
        vfirst[...] = cache.vf[0]


RWKV7_STEP = LoopKernel("rwkv7_step", SOURCE, rwkv7_step_fw, blocks=12)


def rwkv7_step(x, state, p, *, v_first=None):
    """One token: x (N, D), the state (tshift, wkv, cshift), v_first (N, M) or None (the first layer)
    -> out (N, M), the new state, v_first (the given one, or this layer's values). The given state is
    not modified. One compiled call for the whole block (generation runs it per token, where each
    further NumPy call would cost more than its arithmetic)."""
    xp = get_array_module(x)
    H, C, M, D = _sizes7(p)
    expect_shape("x", x, (None, D), ("N", "D"))
    N = x.shape[0]
    for name, s, shape, letters in (("tshift", state[0], (N, M), ("N", "M")),
                                    ("wkv", state[1], (N, H, C, C), ("N", "H", "C", "C")),
                                    ("cshift", state[2], (N, M), ("N", "M"))):
        expect_shape(name, s, shape, letters)
    if not bool(xp.isfinite(x.sum() + sum(s.sum() for s in state))):  # one test per token; then which
        for name, a in (("x", x), ("tshift", state[0]), ("wkv", state[1]), ("cshift", state[2])):
            expect_finite(name, a)
    ts, S, cs = (xp.array(s, dtype=x.dtype, order="C") for s in state)
    first = v_first is None
    vf = xp.empty((N, M), dtype=x.dtype) if first else xp.ascontiguousarray(v_first, dtype=x.dtype)
    out = xp.empty((N, M), dtype=x.dtype)
    Rw, Ra, Rv, Rg = p["w1"].shape[1], p["a1"].shape[1], p["v1"].shape[1], p["g1"].shape[1]
    fixed = {name: p.get(name) for name in PARAMS}
    get_ops(x, ts).run_bound(RWKV7_STEP, fixed, T=1, N=N, H=M, D=D, NH=H, C=C, Rw=Rw, Ra=Ra, Rv=Rv,
                             Rg=Rg, first=int(first), x=xp.ascontiguousarray(x), tshift=ts, wkv=S,
                             cshift=cs, vfirst=vf, out=out)
    return out, (ts, S, cs), vf


def state_norms(cache: Rwkv7Cache):
    """||S_t|| of each row of every head's state (one value index: a channel), (T, N, M), from the
    states the WKV runs through (recomputed here, in NumPy; diagnostics keep every step)."""
    xp = get_array_module(cache.r)
    wk = cache.wkv
    T, N, H, C = wk.shape
    S = wk.kept[0].copy()
    out = xp.empty((T, N * H, C), dtype=S.dtype)
    for t in range(T):
        _, Sn = _step(S, wk.w[t], wk.k[t], wk.v[t], wk.a[t], wk.b[t], xp)
        if wk.mask is not None:
            Sn = xp.where(wk.mask[t][:, None, None], Sn, S)
        S = Sn
        out[t] = xp.sqrt((S * S).sum(axis=-1))
    return out.reshape(T, N, H * C)


# --- initialisation (RWKV-v7/train_temp/src/model.py) ------------------------------------------------

def lora_ranks(M):
    """(Rw, Ra, Rv, Rg): the reference's max(32, round(s sqrt(M) / 32) * 32) with s = 2.5, 2.5, 1.7, 5."""
    return tuple(max(32, int(round(s * math.sqrt(M) / 32)) * 32) for s in (2.5, 2.5, 1.7, 5.0))


def _orthogonal(rng, shape, gain):
    """torch.nn.init.orthogonal_: a (semi-)orthogonal matrix from the QR of a normal one, times gain."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return np.ascontiguousarray(gain * (q.T if rows < cols else q))


def init_params7(rng, D, M, head_size, ranks, layer, layers):
    """The reference's initial values for layer `layer` of `layers` (float64): token-shift mixes
    1 - (i/M)^(s r1) with r1 = 1 - layer/layers; the decay bias w0 from -6 to 0 along the channels
    (+0.5, +2.5 zigzag within each head); a0, v0, k_k, k_a, r_k constants with a small linear or zigzag
    ramp; LoRA first factors 0 and second ones orthogonal * 0.1; Wr, Wv U(+-0.5/sqrt M), Wk
    U(+-0.05/sqrt M); Wo and the channel mix's Wcv 0 (each block starts as the identity); Wck
    U(+-0.5/sqrt M); norms 1 and 0. W_in (an input projection where D != M): PyTorch's Linear default."""
    r01 = layer / (layers - 1) if layers > 1 else 0.0                  # 0 to 1 over the layers
    r1 = 1.0 - layer / layers                                           # 1 to almost 0
    i = np.arange(M)
    ddd = i / M
    n = i % head_size
    linear = i / (M - 1) - 0.5 if M > 1 else np.zeros(M)
    zigzag = (n - (head_size - 1) / 2) / ((head_size - 1) / 2) if head_size > 1 else np.zeros(M)
    zigzag = zigzag * np.abs(zigzag)
    www = -6 + 6 * (i / max(M - 1, 1)) ** (1 + r01 ** 0.3)
    Rw, Ra, Rv, Rg = ranks

    def uniform(bound, shape):
        return rng.uniform(-bound, bound, shape)

    s = 1 / math.sqrt(M)
    p = {}
    if D != M:
        p["W_in"] = uniform(1 / math.sqrt(D), (D, M))
    p.update({"ln1_w": np.ones(M), "ln1_b": np.zeros(M)})
    for m, e in zip(MIXES, (0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):
        p[f"mu_{m}"] = 1.0 - ddd ** (e * r1)
    p.update({"Wr": uniform(0.5 * s, (M, M)), "Wk": uniform(0.05 * s, (M, M)),
              "Wv": uniform(0.5 * s, (M, M)),
              "w0": www + 0.5 + zigzag * 2.5, "w1": np.zeros((M, Rw)),
              "w2": _orthogonal(rng, (Rw, M), 0.1),
              "a0": -0.19 + zigzag * 0.3 + linear * 0.4, "a1": np.zeros((M, Ra)),
              "a2": _orthogonal(rng, (Ra, M), 0.1),
              "v0": 0.73 - linear * 0.4, "v1": np.zeros((M, Rv)), "v2": _orthogonal(rng, (Rv, M), 0.1),
              "g1": np.zeros((M, Rg)), "g2": _orthogonal(rng, (Rg, M), 0.1),
              "k_k": 0.71 - linear * 0.1, "k_a": np.full(M, 1.02),
              "r_k": np.full((M // head_size, head_size), -0.04),
              "lnx_w": np.ones(M), "lnx_b": np.zeros(M), "Wo": np.zeros((M, M)),
              "ln2_w": np.ones(M), "ln2_b": np.zeros(M), "mu_c": 1.0 - ddd ** (r1 ** 4),
              "Wck": uniform(0.5 * s, (M, 4 * M)), "Wcv": np.zeros((4 * M, M))})
    return p


def _head_size(H, asked):
    if asked:
        if H % asked:
            raise ValueError(f"the hidden size {H} is not a multiple of RWKV's head size {asked} "
                             f"(--head-size)")
        return asked
    return max(c for c in range(1, min(64, H) + 1) if H % c == 0)


@dataclass
class RWKV7Cell(Cell):
    """RWKV-7 "Goose" (Peng et al. 2025): one block per layer, x + TimeMix(LN1 x), then + ChannelMix(LN2
    x). The time mix is a matrix-valued recurrence per head, the generalised delta rule
    S_t = S_{t-1} diag(w_t) - (S_{t-1} kk_t)(a_t kk_t)^T + v_t kt_t^T, y_t = S_t r_t, with the decay w,
    the in-context learning rate a and the keys read from the input and the previous token; later
    layers mix the first layer's values into their own (the value residual, passed up the stack as
    `shared`). The state: the two token shifts' last inputs and the (C, C) matrix of each head."""

    name = "rwkv"
    title = "RWKV7"
    summary = "RWKV-7 (Peng et al. 2025): a matrix state per head, the generalised delta rule"
    state = ("tshift", "wkv", "cshift")
    output_is_state = False
    flow_part = "wkv"
    shared = "v_first"
    # What diagnostics show beside the state: the decay each channel applies to its key columns, and
    # how much of the old value along kk each step replaces.
    gates = (Gate("w", "decay w = exp(-e^-0.5 sigmoid(.))", "sigmoid"),
             Gate("a", "in-context learning rate a", "sigmoid"))
    step_blocks = 12  # a row's step: the products (about 12 M x M) outweigh the recurrence

    head_size: int = field(default=0, metadata={"help": "RWKV's head size (0: 64, or the largest "
                                                        "divisor of the hidden size below it)"})
    chunk: int = field(default=CHUNK, metadata={"help": "RWKV's WKV loop keeps its state every this "
                                                        "many steps; backward recomputes each chunk"})

    def __post_init__(self):
        if not isinstance(self.head_size, int) or isinstance(self.head_size, bool) or self.head_size < 0:
            raise ValueError(f"head_size must be 0 (automatic) or a positive integer, got "
                             f"{self.head_size!r}")
        if not isinstance(self.chunk, int) or isinstance(self.chunk, bool) or self.chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {self.chunk!r}")

    def param_shapes(self, D, H):
        return param_shapes7(D, H, _head_size(H, self.head_size), lora_ranks(H))

    def init_params(self, rng, D, H, dtype):
        return self.init_layer_params(rng, D, H, dtype, 0, 2)

    def init_layer_params(self, rng, D, H, dtype, layer, layers):
        p = init_params7(rng, D, H, _head_size(H, self.head_size), lora_ranks(H), layer, layers)
        return {name: v.astype(dtype) for name, v in p.items()}

    def state_shape(self, N, H):
        C = _head_size(H, self.head_size)
        return {"tshift": (N, H), "wkv": (N, H // C, C, C), "cshift": (N, H)}

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True, shared=None):
        return rwkv7_forward(x, state, p, mask, v_first=shared, chunk=self.chunk,
                             scan_weights=scan_weights)

    def shared_of(self, cache):
        return cache.vf

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None, dshared=None):
        """-> dx, the initial state's gradient, the parameters' and the gradient of the v_first passed
        in (None in the first layer)."""
        return rwkv7_backward(dy, cache, dstate, dshared, trace)

    def step(self, x, state, p, *, x_gates=None, shared=None):
        if x_gates is not None:
            raise ValueError("an RWKV layer normalises its input first: it takes x, not x_gates")
        return rwkv7_step(x, state, p, v_first=shared)

    def views(self, cache):
        """wkv: the norm of each channel's row of its head's state; tshift: the time mix's input after
        LN1 (what the next token's shift reads); the decay w; the in-context learning rate a."""
        return {"tshift": cache.X[0] - cache.dd * cache.p["mu_r"], "wkv": state_norms(cache),
                "cshift": cache.xc - cache.dd2 * cache.p["mu_c"], "w": cache.w, "a": cache.a}

    def input_gates(self, E, p):
        raise ValueError("an RWKV layer normalises its input first: there is no input projection to "
                         "read from a table")
