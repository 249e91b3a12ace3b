"""Mamba (Gu and Dao 2023): the selective state-space recurrence, one pre-norm residual block per layer,
as `mamba_ssm/modules/mamba_simple.py` computes it. Its transition depends on the input (a *selective*
scan), yet the state enters each step only linearly, so the whole sequence trains at once and one token
at a time generates from a fixed-size state: (the last K-1 inputs of the convolution, the SSM state).

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  output size (d_model)
    E  inner channels (expand * H)    S  state size per channel (d_state)
    R  rank of the step-size projection (dt_rank)    K  convolution width (d_conv)

    u          = x / rms(x) * norm                      RMSNorm (eps 1e-5)           (T, N, D)
    [xi | z]   = u W_in                                 W_in (D, 2E), no bias        (T, N, 2E)
    xs         = silu(causal_conv(xi; conv_w, conv_b))  depthwise, K taps over time  (T, N, E)
    [dtl|B|C]  = xs W_x                                 W_x (E, R + 2S), no bias     B, C (T, N, S)
    dt         = softplus(dtl W_dt + b_dt)              step sizes, per channel      (T, N, E)
    A          = -exp(A_log)                            (E, S), real and negative
    h_t        = exp(dt_t A) * h_{t-1} + dt_t B_t xs_t  per channel e and state n: Abar = exp(dt A) is
                                                        the zero-order hold of A, dt B the Euler step of B
    y_t        = C_t . h_t + skip * xs_t                the paper's D is `skip` (E,)
    out        = (y * silu(z)) W_out  (+ x when D = H)  W_out (E, H); the residual of a pre-norm block

State: conv (N, K-1, E), the K-1 values of xi before the sequence, oldest first (zeros are PyTorch's
zero padding); ssm (N, E, S) as PyTorch's `ssm_state`. At a padded step (mask 0) the state is carried:
dt = 0 there (Abar = 1, no input), and the conv state is each sequence's own last K-1 inputs.

The selective scan (the loop over time) is written twice: here in NumPy, the reference, on whole (T, N,
S, E) arrays through `linear_scan` (sequential, or the parallel prefix form), and in mamba.c, compiled,
which never holds more than one chunk of states: forward keeps the state every `chunk` steps (as the CUDA
kernel keeps one per chunk) and backward recomputes each chunk from it before its reverse scan, so the
scan's memory is O(T/chunk + chunk) states rather than O(T). Both fuse the softplus of dt, the skip term
and the gate silu(z), as `selective_scan_fn` does. Inside the scan the state is laid out (N, S, E), so
that the step runs along the E channels (one vector of them per state entry) with no cross-lane sums in
the forward. Derivation in docs/derivations/mamba.md; the cell's declaration is `MambaCell`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Cell, Gate
from rnnkit.cells.common import check_mask, expect_finite, expect_float, expect_shape
from rnnkit.functional.causal_conv import (causal_conv_backward, causal_conv_forward, final_state,
                                           final_state_backward)
from rnnkit.functional.norms import rms_norm_backward, rms_norm_forward
from rnnkit.functional.scan import linear_scan
from rnnkit.kernels import LoopKernel

SOURCE = Path(__file__).with_name("mamba.c")
EPS = 1e-5  # RMSNorm's
SOFTPLUS_LINEAR = 20.0  # softplus(x) = x above this, as PyTorch's and the CUDA kernel's threshold


class MambaCache(NamedTuple):
    x: object  # (T, N, D)
    norm: object  # RMSNormCache
    xz: object  # (T, N, 2E): [xi | z]
    conv0: object  # (N, K-1, E) the conv state before the sequence
    lengths: object  # (N,) each sequence's length, or None (all T)
    xs: object  # (T, N, E) silu(xc): the scan's input
    dbc: object  # (T, N, R+2S): [dt_low | B | C]
    pre: object  # (T, N, E) dt_low W_dt + b_dt, before the softplus
    At: object  # (S, E) A transposed
    y: object  # (T, N, E) the scan's output before the gate
    o: object  # (T, N, E) y * silu(z)
    kept: object  # (ceil(T/chunk), N, S, E) the scan's state at each chunk's start
    mask: object  # (T, N) bool or None
    p: dict  # the parameters
    chunk: int


# --- small element-wise pieces, NumPy ----------------------------------------------------------------

def _sigmoid(x, xp):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x, xp):
    """log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), x itself above the threshold (as PyTorch's)."""
    return xp.where(x > SOFTPLUS_LINEAR, x, xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x))))


def _dsoftplus(x, xp):
    return xp.where(x > SOFTPLUS_LINEAR, 1.0, _sigmoid(x, xp))


def _silu(x, xp):
    return x * _sigmoid(x, xp)


def _dsilu(x, xp):
    """d silu/dx = s (1 + x (1 - s)), s = sigmoid(x)."""
    s = _sigmoid(x, xp)
    return s * (1 + x * (1 - s))


# --- the selective scan: the reference of mamba.c's loops --------------------------------------------

def _scan_terms(S, rank, pre, At, dbc, mask, xp):
    """dt (T, N, E) (0 at padded steps), Abar = exp(dt A) (T, N, S, E), B, C (T, N, S)."""
    dt = _softplus(pre, xp)
    if mask is not None:
        dt = xp.where(mask[:, :, None], dt, 0)
    B, C = dbc[..., rank:rank + S], dbc[..., rank + S:]
    a = xp.exp(dt[:, :, None, :] * At)
    return dt, a, B, C


def _states(dt, a, B, xs, h0, parallel=False):
    """Every step's state h (T+1, N, S, E) from h0 (N, S, E): h_t = Abar_t h_{t-1} + dt_t B_t xs_t."""
    return linear_scan(a, (dt * xs)[:, :, None, :] * B[..., None], h0.copy(), parallel)


def mamba_scan_fw(T, N, H, S, rank, k, xs, pre, At, dbc, skip, xz, mask, h, kept, y, out,
                  parallel=False):
    """The scan's forward (the reference of mamba.c's `mamba_scan_fw`, in place): xs, pre (T, N, E);
    At (S, E); dbc (T, N, R+2S); skip (E,); xz (T, N, 2E), z its second half; h (N, S, E) in: the initial
    state, out: the final one; kept (ceil(T/k), N, S, E) or None out: the state at steps 0, k, 2k, ...;
    y (T, N, E) out: C . h + skip xs; out (T, N, E) out: y silu(z). Both 0 at padded steps.
    parallel: the recurrence by the parallel prefix scan (`linear_scan`)."""
    xp = get_array_module(xs)
    dt, a, B, C = _scan_terms(S, rank, pre, At, dbc, mask, xp)
    hs = _states(dt, a, B, xs, h, parallel)                      # (T+1, N, S, E)
    yv = xp.einsum("tnse,tns->tne", hs[1:], C) + skip * xs       # C_t . h_t + skip xs_t
    z = xz[..., H:]
    o = yv * _silu(z, xp)
    if mask is not None:
        yv = xp.where(mask[:, :, None], yv, 0)
        o = xp.where(mask[:, :, None], o, 0)
    y[...], out[...] = yv, o
    if kept is not None:
        kept[...] = hs[0:T:k]
    h[...] = hs[T]


def mamba_scan_bw(T, N, H, S, rank, k, xs, pre, At, dbc, skip, xz, y, mask, kept, dout, dh, dxs,
                  dpre, ddbc, dxz, dA, dskip, trace):
    """The scan's backward (the reference of mamba.c's `mamba_scan_bw`, in place). In: the forward's
    arrays, kept as it left them; dout (T, N, E) the gradient of out; dh (N, S, E) in: the final state's
    gradient, out: the initial state's. Out: dxs, dpre (T, N, E) (the scan's share of dxs, and the
    pre-softplus step sizes' gradient); ddbc[..., R:] (dB | dC, the first R columns untouched); dxz[...,
    E:] (dz); dA (N, S, E), dskip (N, E) per batch row (summed by the caller); trace (T+1, N, S, E) or
    None: dL/dh_t (trace[0] the initial state's). With lambda_t = dL/dh_t:
        g_t      = dout_t silu(z_t)                           dL/dy_t
        lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1}          (from the final state's gradient)
        dxs_t    = skip g_t + sum_n lambda_t dt_t B_t
        ddt_t    = sum_n lambda_t (B_t xs_t + A Abar_t h_{t-1})
        dA       = sum_t lambda_t dt_t Abar_t h_{t-1}
        dB_t     = sum_e lambda_t dt_t xs_t;   dC_t = sum_e g_t h_t;   dskip = sum_t g_t xs_t
    """
    xp = get_array_module(dout)
    dt, a, B, C = _scan_terms(S, rank, pre, At, dbc, mask, xp)
    hs = _states(dt, a, B, xs, kept[0])
    z = xz[..., H:]
    g = dout * _silu(z, xp)
    dz = dout * y * _dsilu(z, xp)
    if mask is not None:
        g = xp.where(mask[:, :, None], g, 0)
        dz = xp.where(mask[:, :, None], dz, 0)
    a_next = xp.concatenate([a[1:], xp.ones_like(a[:1])])  # Abar_{t+1}; none after the last step
    lam = linear_scan(a_next[::-1], (C[..., None] * g[:, :, None, :])[::-1], dh.copy())[1:][::-1]
    ld = lam * dt[:, :, None, :]
    ah = a * hs[:-1]                                             # Abar_t h_{t-1}
    dxs[...] = skip * g + (ld * B[..., None]).sum(axis=2)
    ddt = (lam * (B[..., None] * xs[:, :, None, :] + At * ah)).sum(axis=2)
    dp = ddt * _dsoftplus(pre, xp)
    dpre[...] = dp if mask is None else xp.where(mask[:, :, None], dp, 0)
    ddbc[..., rank:rank + S] = (ld * xs[:, :, None, :]).sum(axis=-1)
    ddbc[..., rank + S:] = (g[:, :, None, :] * hs[1:]).sum(axis=-1)
    dxz[..., H:] = dz
    dA[...] = (ld * ah).sum(axis=0)
    dskip[...] = (g * xs).sum(axis=0)
    dh[...] = a[0] * lam[0]
    if trace is not None:
        trace[0] = dh
        trace[1:] = lam


def mamba_conv_fw(T, N, H, K, xz, conv0, w, b, xs):
    """The convolution and its SiLU (the reference of mamba.c's `mamba_conv_fw`): xs = silu(causal
    conv of xz's first half), H the channels (E)."""
    xc, _, _ = causal_conv_forward(xz[..., :H], conv0, w, b)
    xs[...] = _silu(xc, get_array_module(xc))


def mamba_conv_bw(T, N, H, K, xz, conv0, w, b, dxs, dxz, dconv0, dw, db):
    """Its backward (the reference of mamba.c's `mamba_conv_bw`): dxs in: xs's gradient, out: the
    convolution output's; dxz[..., :H], dconv0 out; dw (N, K, H), db (N, H) per batch row."""
    xp = get_array_module(dxs)
    xc, _, cache = causal_conv_forward(xz[..., :H], conv0, w, b)
    dxs *= _dsilu(xc, xp)
    dxz[..., :H], dconv0[...], dw[...], db[...] = causal_conv_backward(dxs, cache, per_row=True)


# The compiled loops: each the entry point of the same name in mamba.c, with the function above as its
# reference. A row's step is S passes along E channels, about an H x H block's work at H = E, and
# worth a thread of its own: the rows are cut down to one per thread.
MAMBA_SCAN_FW = LoopKernel("mamba_scan_fw", SOURCE, mamba_scan_fw, blocks=1, min_rows=1)
MAMBA_SCAN_BW = LoopKernel("mamba_scan_bw", SOURCE, mamba_scan_bw, blocks=3, min_rows=1)
MAMBA_CONV_FW = LoopKernel("mamba_conv_fw", SOURCE, mamba_conv_fw, blocks=1, min_rows=1)
MAMBA_CONV_BW = LoopKernel("mamba_conv_bw", SOURCE, mamba_conv_bw, blocks=1, min_rows=1)


def selective_scan(xs, pre, At, dbc, skip, xz, h0, mask=None, *, chunk=32, parallel=False):
    """The fused selective scan over a sequence: -> y, out (T, N, E), the final state (N, S, E), kept.
    Shapes as in `mamba_scan_fw`; h0 (N, S, E) is not modified. parallel=True runs the NumPy reference
    with the parallel prefix scan (the form a GPU runs; tested equal)."""
    xp = get_array_module(xs)
    T, N, E = xs.shape
    S = At.shape[0]
    rank = dbc.shape[-1] - 2 * S
    y, out = xp.empty_like(xs), xp.empty_like(xs)
    h = xp.array(h0, dtype=xs.dtype, order="C")
    kept = xp.empty((-(-T // chunk), N, S, E), dtype=xs.dtype)
    args = dict(T=T, N=N, H=E, S=S, rank=rank, k=chunk, xs=xs, pre=pre, At=At, dbc=dbc, skip=skip,
                xz=xz, mask=mask, h=h, kept=kept, y=y, out=out)
    if parallel:
        mamba_scan_fw(**args, parallel=True)
    else:
        get_ops(xs, pre).run(MAMBA_SCAN_FW, **args)
    return y, out, h, kept


# --- the block ---------------------------------------------------------------------------------------

def _sizes(p):
    E, S = p["A_log"].shape
    return E, S, p["W_dt"].shape[0], p["conv_w"].shape[0], p["W_out"].shape[1]


def _check(x, conv0, ssm0, p, mask, scan_weights):
    expect_shape("x", x, (None, None, None), ("T", "N", "D"))
    T, N, D = x.shape
    if x.dtype.kind != "f":
        raise ValueError(f"x has dtype {x.dtype}, expected a floating dtype (float32 or float64)")
    expect_finite("x", x)
    E, S, R, K, H = _sizes(p)
    shapes = {"norm": ((D,), ("D",)), "W_in": ((D, 2 * E), ("D", "2E")), "conv_w": ((K, E), ("K", "E")),
              "conv_b": ((E,), ("E",)), "W_x": ((E, R + 2 * S), ("E", "R+2S")),
              "W_dt": ((R, E), ("R", "E")), "b_dt": ((E,), ("E",)), "A_log": ((E, S), ("E", "S")),
              "skip": ((E,), ("E",)), "W_out": ((E, H), ("E", "H"))}
    for name, (shape, letters) in shapes.items():
        expect_shape(name, p[name], shape, letters)
        expect_float(name, p[name], x.dtype)
        if scan_weights:
            expect_finite(name, p[name])
    for name, s, shape, letters in (("conv0", conv0, (N, K - 1, E), ("N", "K-1", "E")),
                                    ("ssm0", ssm0, (N, E, S), ("N", "E", "S"))):
        expect_shape(name, s, shape, letters)
        expect_float(name, s, x.dtype)
        expect_finite(name, s)
    return T, N, D, E, S, R, K, H, check_mask(mask, T, N)


def mamba_forward(x, conv0, ssm0, p, mask=None, *, chunk=32, scan_weights=True, parallel=False):
    """One Mamba block over x (T, N, D) from the state (conv0 (N, K-1, E), ssm0 (N, E, S)).
    Returns out (T, N, H), the final state (conv, ssm) and the cache. parallel: see `selective_scan`."""
    T, N, D, E, S, R, K, H, mask = _check(x, conv0, ssm0, p, mask, scan_weights)
    xp = get_array_module(x)
    u, norm = rms_norm_forward(x, p["norm"], EPS)
    xz = (u.reshape(T * N, D) @ p["W_in"]).reshape(T, N, 2 * E)
    lengths = None if mask is None else mask.sum(axis=0)
    conv0 = xp.ascontiguousarray(conv0)
    xs = xp.empty((T, N, E), dtype=x.dtype)
    get_ops(xz, conv0).run(MAMBA_CONV_FW, T=T, N=N, H=E, K=K, xz=xz, conv0=conv0, w=p["conv_w"],
                           b=p["conv_b"], xs=xs)
    conv_final = final_state(xz[..., :E], conv0, lengths)
    dbc = (xs.reshape(T * N, E) @ p["W_x"]).reshape(T, N, R + 2 * S)
    pre = (dbc[..., :R].reshape(T * N, R) @ p["W_dt"]).reshape(T, N, E)
    pre += p["b_dt"]
    At = xp.ascontiguousarray(-xp.exp(p["A_log"]).T)
    h0 = xp.ascontiguousarray(ssm0.transpose(0, 2, 1))
    y, o, h, kept = selective_scan(xs, pre, At, dbc, p["skip"], xz, h0, mask, chunk=chunk,
                                   parallel=parallel)
    out = (o.reshape(T * N, E) @ p["W_out"]).reshape(T, N, H)
    if D == H:  # the pre-norm block's residual
        out += x
    cache = MambaCache(x, norm, xz, conv0, lengths, xs, dbc, pre, At, y, o, kept, mask, p, chunk)
    return out, (conv_final, xp.ascontiguousarray(h.transpose(0, 2, 1))), cache


def mamba_backward(dout, cache: MambaCache, dconv=None, dssm=None, trace=None):
    """BPTT through `mamba_forward`: dout (T, N, H); dconv (N, K-1, E), dssm (N, E, S): the final
    state's gradient, or None. Gradients at padded steps are ignored. trace: a dict to receive
    trace["dssm"] (T+1, N, E*S), dL/dh_t of the SSM state at every step; None to skip.
    Returns dx (T, N, D), (dconv0, dssm0), {parameter name: gradient}.
    The block's forward read backwards: the output projection, the fused scan (mamba.c), the step-size
    and x projections, the convolution, the input projection, the norm and the residual."""
    x, norm, xz, conv0, lengths, xs, dbc, pre, At, y, o, kept, mask, p, chunk = cache
    T, N, D = x.shape
    E, S, R, K, H = _sizes(p)
    xp = get_array_module(dout)
    expect_shape("dout", dout, (T, N, H), ("T", "N", "H"))
    expect_float("dout", dout, x.dtype)
    if mask is not None:  # the loss never reads a padded output
        dout = dout * mask[:, :, None]
    d2 = dout.reshape(T * N, H)
    grads = {"W_out": o.reshape(T * N, E).T @ d2}
    do = (d2 @ p["W_out"].T).reshape(T, N, E)
    dh = xp.zeros((N, S, E), dtype=x.dtype)
    if dssm is not None:
        expect_shape("dssm", dssm, (N, E, S), ("N", "E", "S"))
        dh += dssm.transpose(0, 2, 1)
    dxs, dpre = xp.empty_like(xs), xp.empty_like(xs)
    ddbc = xp.empty_like(dbc)
    dxz = xp.empty_like(xz)
    dA = xp.empty((N, S, E), dtype=x.dtype)
    dskip = xp.empty((N, E), dtype=x.dtype)
    tr = None if trace is None else xp.empty((T + 1, N, S, E), dtype=x.dtype)
    get_ops(do, xs).run(MAMBA_SCAN_BW, T=T, N=N, H=E, S=S, rank=R, k=chunk, xs=xs, pre=pre, At=At,
                        dbc=dbc, skip=p["skip"], xz=xz, y=y, mask=mask, kept=kept, dout=do, dh=dh,
                        dxs=dxs, dpre=dpre, ddbc=ddbc, dxz=dxz, dA=dA, dskip=dskip, trace=tr)
    if trace is not None:
        trace["dssm"] = tr.transpose(0, 1, 3, 2).reshape(T + 1, N, E * S)
    dp2 = dpre.reshape(T * N, E)
    grads["b_dt"] = dp2.sum(axis=0)
    grads["W_dt"] = dbc[..., :R].reshape(T * N, R).T @ dp2
    ddbc[..., :R] = (dp2 @ p["W_dt"].T).reshape(T, N, R)
    db2 = ddbc.reshape(T * N, R + 2 * S)
    grads["W_x"] = xs.reshape(T * N, E).T @ db2
    dxs += (db2 @ p["W_x"].T).reshape(T, N, E)
    dconv0 = xp.empty_like(conv0)
    dw, db = xp.empty((N, K, E), dtype=x.dtype), xp.empty((N, E), dtype=x.dtype)
    get_ops(dxs, xz).run(MAMBA_CONV_BW, T=T, N=N, H=E, K=K, xz=xz, conv0=conv0, w=p["conv_w"],
                         b=p["conv_b"], dxs=dxs, dxz=dxz, dconv0=dconv0, dw=dw, db=db)
    grads["conv_w"], grads["conv_b"] = dw.sum(axis=0), db.sum(axis=0)
    if dconv is not None:
        expect_shape("dconv", dconv, (N, K - 1, E), ("N", "K-1", "E"))
        final_state_backward(dconv, lengths, dxz[..., :E], dconv0)
    dz2 = dxz.reshape(T * N, 2 * E)
    u = norm.xhat * p["norm"]
    grads["W_in"] = u.reshape(T * N, D).T @ dz2
    du = (dz2 @ p["W_in"].T).reshape(T, N, D)
    dx, grads["norm"] = rms_norm_backward(du, norm)
    if D == H:  # the residual
        dx += dout
    grads["A_log"] = dA.sum(axis=0).T * -xp.exp(p["A_log"])  # dA/dA_log = A
    grads["skip"] = dskip.sum(axis=0)
    dssm0 = xp.ascontiguousarray(dh.transpose(0, 2, 1))
    return dx, (dconv0, dssm0), {name: grads[name] for name in p}


def mamba_step_fw(T, N, H, D, E, S, rank, K, x, norm, W_in, conv_w, conv_b, W_x, W_dt, b_dt, A_log,
                  skip, W_out, conv, ssm, out):
    """One token through the block (the reference of mamba.c's `mamba_step`, in place; T = 1): x (N, D)
    -> out (N, H); conv (N, K-1, E) and ssm (N, E, S) moved on one step. As Mamba.step: the
    convolution over the window [conv | xi], then one step of the scan."""
    xp = get_array_module(x)
    u, _ = rms_norm_forward(x, norm, EPS)
    xz = u @ W_in                                               # (N, 2E)
    window = xp.concatenate([conv, xz[:, None, :E]], axis=1)    # (N, K, E), oldest first
    xs = _silu(conv_b + xp.einsum("nke,ke->ne", window, conv_w), xp)
    dbc = xs @ W_x
    dt = _softplus(dbc[:, :rank] @ W_dt + b_dt, xp)             # (N, E)
    B, C = dbc[:, rank:rank + S], dbc[:, rank + S:]
    ssm[...] = xp.exp(dt[..., None] * -xp.exp(A_log)) * ssm + (dt * xs)[..., None] * B[:, None, :]
    y = xp.einsum("nes,ns->ne", ssm, C) + skip * xs
    out[...] = (y * _silu(xz[:, E:], xp)) @ W_out + (x if D == H else 0)
    conv[...] = window[:, 1:]


MAMBA_STEP = LoopKernel("mamba_step", SOURCE, mamba_step_fw, blocks=1)


def mamba_step(x, conv, ssm, p):
    """One token: x (N, D), conv (N, K-1, E), ssm (N, E, S) -> out (N, H), new conv, new ssm (the
    given state is not modified). One compiled call for the whole block (generation runs it per
    token, where every further NumPy call would cost more than its arithmetic)."""
    xp = get_array_module(x)
    E, S, R, K, H = _sizes(p)
    expect_shape("x", x, (None, None), ("N", "D"))
    N, D = x.shape
    expect_shape("conv", conv, (N, K - 1, E), ("N", "K-1", "E"))
    expect_shape("ssm", ssm, (N, E, S), ("N", "E", "S"))
    if not bool(xp.isfinite(x.sum() + conv.sum() + ssm.sum())):  # one test per token; then which
        for name, a in (("x", x), ("conv", conv), ("ssm", ssm)):
            expect_finite(name, a)
    conv, ssm = xp.array(conv, order="C"), xp.array(ssm, order="C")
    out = xp.empty((N, H), dtype=x.dtype)
    get_ops(x, ssm).run_bound(MAMBA_STEP, p, T=1, N=N, H=H, D=D, E=E, S=S, rank=R, K=K, x=x,
                              conv=conv, ssm=ssm, out=out)
    return out, conv, ssm


def _positive(value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


@dataclass
class MambaCell(Cell):
    """Mamba (Gu and Dao 2023): one pre-norm residual block per layer, out = x + Mixer(RMSNorm(x)) (no
    residual where the input size differs from the output's), the mixer a gated selective state-space
    scan h_t = exp(dt_t A) h_{t-1} + dt_t B_t xs_t with dt, B and C read from the input; the state is the
    convolution's last K-1 inputs and an (E, S) matrix per stream."""

    name = "mamba"
    title = "Mamba"
    summary = "Mamba (Gu and Dao 2023): the selective state-space scan, dt, B, C read from the input"
    state = ("conv", "ssm")
    output_is_state = False
    flow_part = "ssm"
    # What diagnostics show beside the state: the step sizes (how far each channel moves at each token:
    # large dt forgets and writes, small dt keeps) and the output gate.
    gates = (Gate("dt", "step size dt = softplus(dt_low W_dt + b_dt)", "linear"),
             Gate("gate", "output gate silu(z)", "linear"))
    # a row's step: S passes along E = expand H channels (an exp and a few multiply-adds each)
    step_blocks = 2

    state_size: int = field(default=16, metadata={"help": "Mamba's state size per channel (d_state)"})
    expand: int = field(default=2, metadata={"help": "Mamba's inner channels per output (E = expand H)"})
    conv_width: int = field(default=4, metadata={"help": "Mamba's causal convolution width (d_conv)"})
    dt_rank: int = field(default=0, metadata={"help": "rank of Mamba's step-size projection (0: "
                                                      "ceil(H / 16))"})
    chunk: int = field(default=32, metadata={"help": "Mamba's scan keeps its state every this many "
                                                     "steps; backward recomputes each chunk"})

    def __post_init__(self):
        for name in ("state_size", "expand", "conv_width", "chunk"):
            _positive(getattr(self, name), name)
        if not isinstance(self.dt_rank, int) or self.dt_rank < 0:
            raise ValueError(f"dt_rank must be 0 (automatic) or a positive integer, got {self.dt_rank!r}")

    def _sizes(self, H):
        return self.expand * H, self.state_size, self.dt_rank or math.ceil(H / 16), self.conv_width

    def param_shapes(self, D, H):
        E, S, R, K = self._sizes(H)
        return {"norm": (D,), "W_in": (D, 2 * E), "conv_w": (K, E), "conv_b": (E,),
                "W_x": (E, R + 2 * S), "W_dt": (R, E), "b_dt": (E,), "A_log": (E, S), "skip": (E,),
                "W_out": (E, H)}

    def init_params(self, rng, D, H, dtype):
        """As mamba_simple.py: PyTorch's Linear and Conv1d defaults (U(+-1/sqrt(fan_in))); W_dt
        U(+-R^-1/2); b_dt the inverse softplus of dt0 = exp(U[log 1e-3, log 1e-1]) (>= 1e-4), so that
        dt starts in [0.001, 0.1]; A_log = log(1..S) per channel (S4D-real); skip 1; norm 1."""
        E, S, R, K = self._sizes(H)

        def uniform(bound, shape):
            return rng.uniform(-bound, bound, shape)

        dt0 = np.maximum(np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), E)), 1e-4)
        p = {"norm": np.ones(D), "W_in": uniform(1 / math.sqrt(D), (D, 2 * E)),
             "conv_w": uniform(1 / math.sqrt(K), (K, E)), "conv_b": uniform(1 / math.sqrt(K), (E,)),
             "W_x": uniform(1 / math.sqrt(E), (E, R + 2 * S)), "W_dt": uniform(R ** -0.5, (R, E)),
             "b_dt": dt0 + np.log(-np.expm1(-dt0)),
             "A_log": np.tile(np.log(np.arange(1, S + 1, dtype=np.float64)), (E, 1)),
             "skip": np.ones(E), "W_out": uniform(1 / math.sqrt(E), (E, H))}
        return {name: v.astype(dtype) for name, v in p.items()}

    def state_shape(self, N, H):
        E, S, _, K = self._sizes(H)
        return {"conv": (N, K - 1, E), "ssm": (N, E, S)}

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        out, final, cache = mamba_forward(x, state[0], state[1], p, mask, chunk=self.chunk,
                                          scan_weights=scan_weights)
        return out, final, cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        return mamba_backward(dy, cache, dstate[0], dstate[1], trace)

    def step(self, x, state, p, *, x_gates=None):
        if x_gates is not None:
            raise ValueError("a Mamba layer normalises its input first: it takes x, not x_gates")
        out, conv, ssm = mamba_step(x, state[0], state[1], p)
        return out, (conv, ssm)

    def views(self, cache):
        """conv: the scan's input xs (after the convolution and SiLU); ssm: the norm of each channel's
        state over its S entries (from the reference scan: diagnostics keep every step); dt; the gate."""
        xp = get_array_module(cache.xs)
        E, S = cache.xs.shape[-1], cache.At.shape[0]
        rank = cache.dbc.shape[-1] - 2 * S
        dt, a, B, _ = _scan_terms(S, rank, cache.pre, cache.At, cache.dbc, cache.mask, xp)
        hs = _states(dt, a, B, cache.xs, cache.kept[0])
        return {"conv": cache.xs, "ssm": xp.sqrt((hs[1:] ** 2).sum(axis=2)), "dt": dt,
                "gate": _silu(cache.xz[..., E:], xp)}

    def input_gates(self, E, p):
        raise ValueError("a Mamba layer normalises its input first: there is no input projection to "
                         "read from a table")

