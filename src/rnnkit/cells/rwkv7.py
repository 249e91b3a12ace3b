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

from pathlib import Path
from typing import NamedTuple

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.common import check_mask, expect_finite, expect_float, expect_shape
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
        L = Lp
    dS[...] = L


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
