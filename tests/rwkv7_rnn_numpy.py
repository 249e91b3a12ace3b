"""RWKV-7's RNN mode in NumPy: one token at a time through each layer's time mixing and channel
mixing with its state, for a stack of layers with layer 0's v passed up.

Transcribed from BlinkDL/RWKV-LM (Apache-2.0) RWKV-v7/rwkv_v7_numpy.py (by johanwind), read at
commit 524481d: layer_norm, group_norm, sigmoid (lines 9-11), time_mixing (13-44), channel_mixing
(46-49), the per-layer loop of RWKV7 (57-64). Changes, none in the arithmetic: parameters by
rnnkit's names (tests/torch_rwkv7.py lists them) instead of the checkpoint's key order; matrices in
x @ W orientation (the file's `Wr @ xr` with torch's (out, in) weights is `xr @ Wr` here; its LoRA
factors were already x @ W); a batch of B independent rows, x (B, C), where the file takes one
(C,); the optional input projection W_in (D, C) first; the layer index decides the value residual
(the file uses `v0 is None`); the dtype is the inputs' (float64 for checks).

Shapes: B batch, C channels, H heads of head size hs. One layer's state, as torch_rwkv7's:
(tshift (B, C) the previous LN1 output, S (B, H, hs, hs) value x key, cshift (B, C) the previous LN2
output). `run` takes and returns rnnkit's time-major (T, B, D) sequences.
"""

from __future__ import annotations

import numpy as np


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + eps) * w + b


def group_norm(y, w, b, eps=64e-5):
    """y (B, H, hs): each head normalised over its hs channels, then (B, H*hs) * w + b."""
    B = y.shape[0]
    y = (y - y.mean(axis=-1, keepdims=True)) / np.sqrt(y.var(axis=-1, keepdims=True) + eps)
    return y.reshape(B, -1) * w + b


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def time_mixing(x, v_first, last_x, S, p, layer, head_size):
    """x (B, C) this token's LN1 output, last_x the previous one's, S (B, H, hs, hs). Returns
    (out (B, C), v_first (B, C), x as the next last_x, new S)."""
    B, C = x.shape
    H, N = C // head_size, head_size
    xr, xw, xk, xv, xa, xg = (x + p["mu_" + m] * (last_x - x) for m in "rwkvag")

    r = xr @ p["Wr"]
    w = np.exp(-sigmoid(np.tanh(xw @ p["w1"]) @ p["w2"] + p["w0"]) / np.e ** 0.5)
    k = xk @ p["Wk"]
    v = xv @ p["Wv"]
    if layer == 0:
        v_first = v
    else:
        v = v + (v_first - v) * sigmoid(xv @ p["v1"] @ p["v2"] + p["v0"])
    a = sigmoid(xa @ p["a1"] @ p["a2"] + p["a0"])
    g = sigmoid(xg @ p["g1"]) @ p["g2"]
    kk = k * p["k_k"]
    k = k + k * (a - 1) * p["k_a"]

    # (B, H, hs, 1) columns, as the file's reshape(N_HEAD, HEAD_SIZE, 1) per row
    r, w, k, v, kk, a = (z.reshape(B, H, N, 1) for z in (r, w, k, v, kk, a))
    r_k = p["r_k"].reshape(1, H, N, 1)
    kk = kk / np.maximum(np.linalg.norm(kk, axis=2, keepdims=True), 1e-12)

    mT = lambda z: np.swapaxes(z, -1, -2)  # noqa: E731 (the file's .mT)
    S = S * mT(w) - S @ kk * mT(kk * a) + v * mT(k)
    y = S @ r

    y = group_norm(y[..., 0], p["lnx_w"], p["lnx_b"])
    y = y + ((r * k * r_k).sum(axis=2, keepdims=True) * v).reshape(B, C)
    return (y * g) @ p["Wo"], v_first.reshape(B, C), x, S


def channel_mixing(x, last_x, p):
    """x (B, C) this token's LN2 output; returns (out (B, C), x as the next last_x)."""
    k = (x + p["mu_c"] * (last_x - x)) @ p["Wck"]
    v = np.maximum(k, 0) ** 2 @ p["Wcv"]
    return v, x


def layer_step(x, p, v_first, layer, head_size, state):
    """One token through one layer (the body of the file's RWKV7 loop, lines 58-64): x (B, D).
    Returns (out (B, C), v_first, new state)."""
    if "W_in" in p:
        x = x @ p["W_in"]
    tshift, S, cshift = state
    x_ = layer_norm(x, p["ln1_w"], p["ln1_b"])
    dx, v_first, tshift, S = time_mixing(x_, v_first, tshift, S, p, layer, head_size)
    x = x + dx
    x_ = layer_norm(x, p["ln2_w"], p["ln2_b"])
    dx, cshift = channel_mixing(x_, cshift, p)
    return x + dx, v_first, (tshift, S, cshift)


def stack_step(x, ps, head_size, states):
    """One token through every layer in turn, layer 0's v passed up. Returns (out, new states)."""
    v_first = None
    new = []
    for layer, p in enumerate(ps):
        x, v_first, st = layer_step(x, p, v_first, layer, head_size, states[layer])
        new.append(st)
    return x, new


def zero_state(B, C, head_size, dtype=np.float64):
    H = C // head_size
    return (np.zeros((B, C), dtype), np.zeros((B, H, head_size, head_size), dtype),
            np.zeros((B, C), dtype))


def run(x, ps, head_size, states=None):
    """x (T, B, D) time-major through the stack, a token at a time. Returns (out (T, B, C), final
    states)."""
    T, B, _ = x.shape
    if states is None:
        states = [zero_state(B, p["Wr"].shape[0], head_size, x.dtype) for p in ps]
    outs = []
    for t in range(T):
        y, states = stack_step(x[t], ps, head_size, states)
        outs.append(y)
    return np.stack(outs), states


# --- a whole model, as the file's RWKV7 (lines 52-69): embedding, ln0, the layers, ln_out, head -----

def random_model(V, C, L, head_size, seed=0, dtype=np.float64):
    """A random L-layer language model of vocabulary V: {"emb" (V, C), "ln0_w", "ln0_b",
    "ln_out_w", "ln_out_b" (C,), "head" (C, V), "layers": a list of torch_rwkv7.random_params}."""
    from torch_rwkv7 import random_params

    rng = np.random.default_rng(seed)
    m = {"emb": rng.standard_normal((V, C)), "ln0_w": 1 + 0.2 * rng.standard_normal(C),
         "ln0_b": 0.2 * rng.standard_normal(C), "ln_out_w": 1 + 0.2 * rng.standard_normal(C),
         "ln_out_b": 0.2 * rng.standard_normal(C), "head": rng.standard_normal((C, V)) / C ** 0.5}
    m = {k: v.astype(dtype) for k, v in m.items()}
    m["layers"] = [{k: v.astype(dtype) for k, v in random_params(C, head_size, seed=seed + 1 + i)
                    .items()} for i in range(L)]
    return m


def model_step(m, tokens, head_size, states):
    """tokens (B,) ints -> (logits (B, V), new states): the file's RWKV7 for a batch."""
    x = layer_norm(m["emb"][tokens], m["ln0_w"], m["ln0_b"])
    x, states = stack_step(x, m["layers"], head_size, states)
    return layer_norm(x, m["ln_out_w"], m["ln_out_b"]) @ m["head"], states
