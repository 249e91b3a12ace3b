"""A PyTorch reference of one RWKV-7 "Goose" block: what rnnkit's RWKV-7 cell is tested and
benchmarked against.

Transcribed from BlinkDL/RWKV-LM (Apache-2.0, Copyright (c) BlinkDL), read at commit 524481d:
    RWKV-v7/train_temp/src/model.py
        RWKV_Tmix_x070.__init__      lines 497-581  the time mix's initialisation (`init_params`)
        RWKV_Tmix_x070.forward       lines 584-673  the "slow pytorch version" comments of each
                                                    fused CUDA call (589-596, 617-619, 626-628,
                                                    636-641, 653-657) are what `time_mix` computes
        RWKV_CMix_x070               lines 677-726  the commented slow version (697-704) and the
                                                    initialisation (712-723)
        Block                        lines 732-755  x + att(ln1 x), then + ffn(ln2 x)
        RWKV.generate_init_weight    lines 892-975  what train.py (line 210) does to a fresh model
                                                    after the modules' own init (`scheme="train"`)
    RWKV-v7/rwkv_v7_demo.py
        RWKV7_OP, USE_CUDA_KERNEL=False  lines 170-203  the WKV loop (`wkv`)
        RWKV_Tmix_x070.forward           lines 257-289  the decay's soft clamp (line 270)
    RWKV-v7/train_temp/cuda/rwkv7_clampw.cu  the kernel model.py calls: w = exp(-exp(-0.5) *
        sigmoid(w_raw)), the same number as the demo's exp(-exp(-softplus(-w_raw) - 0.5))

Changes from the reference, none of them in the arithmetic:
  - an initial state in and the final state out: state = (tshift (B, C) the previous token's LN1
    output, wkv (B, H, hs, hs) value x key, cshift (B, C) the previous LN2 output); the reference's
    zero-padded time shift (nn.ZeroPad2d((0, 0, 1, -1))) is the case of zero tshift and cshift;
  - an optional input projection W_in (D, C) applied first, x = x @ W_in, for a layer whose input
    size D is not C (the reference's blocks all take C);
  - the block has no ln0: model.py's Block applies it to the embedding at layer 0 only, and it is
    the model's norm, not the layer's;
  - the WKV loop keeps its input dtype (the demo casts to float32; float64 here, for 1e-10 checks)
    and collects the steps' outputs in a list, with the inputs split by `unbind`: the demo's
    `r[:, t]` slicing and `out[:, t] =` assignment give each step's backward a gradient the size of
    the whole sequence, quadratic in T; the arithmetic of a step is the demo's;
  - matrices in rnnkit's x @ W orientation (torch Linear weight transposed), named as rnnkit names
    them (below).

Shapes: B batch, T time, C channels, H = C / hs heads of head size hs, D an input size, R* LoRA ranks.
Parameters of one layer, by rnnkit's names, with the reference's beside them:
    ln1_w, ln1_b (C,)          ln1.weight, ln1.bias
    mu_r ... mu_g (C,)         att.x_r, x_w, x_k, x_v, x_a, x_g
    Wr, Wk, Wv, Wo (C, C)      att.receptance/key/value/output.weight, transposed
    w0 (C,), w1 (C, Rw), w2 (Rw, C)      att.w0, w1, w2 (the decay's LoRA)
    a0 (C,), a1 (C, Ra), a2 (Ra, C)      att.a0, a1, a2 (the in-context learning rate)
    v0 (C,), v1 (C, Rv), v2 (Rv, C)      att.v0, v1, v2 (the value residual; unread in layer 0)
    g1 (C, Rg), g2 (Rg, C)               att.g1, g2 (the output gate)
    k_k (C,), k_a (C,), r_k (H, hs)      att.k_k, k_a, r_k
    lnx_w, lnx_b (C,)          att.ln_x (GroupNorm(H, C, eps=64e-5))
    ln2_w, ln2_b (C,)          ln2.weight, ln2.bias
    mu_c (C,)                  ffn.x_k
    Wck (C, 4C), Wcv (4C, C)   ffn.key.weight, ffn.value.weight, transposed
    W_in (D, C)                optional, not in the reference
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LN_EPS = 1e-5     # nn.LayerNorm's default, model.py's ln1 and ln2
LNX_EPS = 64e-5   # model.py line 576: "notice eps value"
TMIX = ("mu_r", "mu_w", "mu_k", "mu_v", "mu_a", "mu_g", "Wr", "Wk", "Wv", "Wo", "w0", "w1", "w2",
        "a0", "a1", "a2", "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k", "lnx_w", "lnx_b")
NAMES = ("ln1_w", "ln1_b") + TMIX + ("ln2_w", "ln2_b", "mu_c", "Wck", "Wcv")


def lora_rank(C, factor):
    """model.py lines 547, 552, 557, 563: max(32, round(factor sqrt(C) / 32) * 32)."""
    return max(32, int(round((factor * (C ** 0.5)) / 32) * 32))


def lora_ranks(C):
    """The four LoRA ranks of a C-channel layer: decay (w), learning rate (a), value (v), gate (g)."""
    return {"w": lora_rank(C, 2.5), "a": lora_rank(C, 2.5), "v": lora_rank(C, 1.7),
            "g": lora_rank(C, 5)}


def torch_params(p, requires_grad=True, dtype=torch.float64):
    """rnnkit's parameter dict (NumPy arrays) as torch leaf tensors of the same names."""
    return {k: torch.tensor(np.asarray(v), dtype=dtype, requires_grad=requires_grad)
            for k, v in p.items()}


def zero_state(B, C, head_size, dtype=torch.float64):
    H = C // head_size
    return (torch.zeros(B, C, dtype=dtype), torch.zeros(B, H, head_size, head_size, dtype=dtype),
            torch.zeros(B, C, dtype=dtype))


# --- rwkv_v7_demo.py lines 170-203: the WKV recurrence, RWKV7_OP without the CUDA kernel ----------

def wkv(r, w, k, v, a, b, S, head_size):
    """r, w, k, v, a, b (B, T, C) with w the decay's log-log (the decay is exp(-exp(w))); S (B, H, hs,
    hs) the initial state (value x key). Returns y (B, T, C) and the final state. Per head, step t:
        S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T,   y_t = S_t r_t"""
    B, T, C = r.size()
    H = C // head_size
    N = head_size
    r, k, v, a, b = (z.view(B, T, H, N) for z in (r, k, v, a, b))
    w = torch.exp(-torch.exp(w.view(B, T, H, N)))
    steps = zip(*(z.unbind(1) for z in (r, w, k, v, a, b)))
    out = []
    state = S
    for rt, wt, kt, vt, at, bt in steps:
        kk = kt.view(B, H, 1, N)
        rr = rt.view(B, H, N, 1)
        vv = vt.view(B, H, N, 1)
        aa = at.view(B, H, N, 1)
        bb = bt.view(B, H, 1, N)
        state = state * wt[:, :, None, :] + state @ aa @ bb + vv @ kk
        out.append((state @ rr).view(B, H, N))
    return torch.stack(out, dim=1).view(B, T, C), state


# --- model.py: RWKV_Tmix_x070.forward (slow versions), RWKV_CMix_x070.forward, Block.forward ------

def _shift(x, prev):
    """The token shift with a carried previous token: model.py's time_shift(x) when prev = 0."""
    return torch.cat((prev[:, None, :], x[:, :-1, :]), dim=1)


def time_mix(x, tshift, S, v_first, p, layer, head_size):
    """x (B, T, C) the LN1 output; returns (out (B, T, C), v_first, final wkv state)."""
    B, T, C = x.size()
    H = C // head_size
    xx = _shift(x, tshift) - x
    xr = x + xx * p["mu_r"]
    xw = x + xx * p["mu_w"]
    xk = x + xx * p["mu_k"]
    xv = x + xx * p["mu_v"]
    xa = x + xx * p["mu_a"]
    xg = x + xx * p["mu_g"]

    r = xr @ p["Wr"]
    w = -F.softplus(-(p["w0"] + torch.tanh(xw @ p["w1"]) @ p["w2"])) - 0.5  # soft clamp (demo 270)
    k = xk @ p["Wk"]
    v = xv @ p["Wv"]
    if layer == 0:
        v_first = v  # store the v of the first layer
    else:
        v = v + (v_first - v) * torch.sigmoid(p["v0"] + (xv @ p["v1"]) @ p["v2"])  # value residual
    a = torch.sigmoid(p["a0"] + (xa @ p["a1"]) @ p["a2"])  # "in-context learning rate"
    g = torch.sigmoid(xg @ p["g1"]) @ p["g2"]

    kk = k * p["k_k"]
    kk = F.normalize(kk.view(B, T, H, -1), dim=-1, p=2.0).view(B, T, C)
    k = k * (1 + (a - 1) * p["k_a"])

    x, S = wkv(r, w, k, v, -kk, kk * a, S, head_size)
    x = F.group_norm(x.reshape(B * T, C), H, p["lnx_w"], p["lnx_b"], eps=LNX_EPS).view(B, T, C)
    x = x + ((r.view(B, T, H, -1) * k.view(B, T, H, -1) * p["r_k"]).sum(dim=-1, keepdim=True)
             * v.view(B, T, H, -1)).view(B, T, C)
    return (x * g) @ p["Wo"], v_first, S


def channel_mix(x, cshift, p):
    """x (B, T, C) the LN2 output: relu(x_k Wck)^2 Wcv, x_k the shifted mix."""
    xx = _shift(x, cshift) - x
    k = x + xx * p["mu_c"]
    k = torch.relu(k @ p["Wck"]) ** 2
    return k @ p["Wcv"]


def block(x, p, v_first, layer, head_size, state=None):
    """One layer: x (B, T, D) (D = C, or W_in's rows); v_first (B, T, C) layer 0's v (None, or
    anything, at layer 0); state (tshift, wkv, cshift) or None for zeros. Returns (out (B, T, C),
    v_first, final state)."""
    if "W_in" in p:
        x = x @ p["W_in"]
    B, T, C = x.size()
    if state is None:
        state = zero_state(B, C, head_size, x.dtype)
    tshift, S, cshift = state
    xa = F.layer_norm(x, (C,), p["ln1_w"], p["ln1_b"], eps=LN_EPS)
    att, v_first, S = time_mix(xa, tshift, S, v_first, p, layer, head_size)
    x = x + att
    xc = F.layer_norm(x, (C,), p["ln2_w"], p["ln2_b"], eps=LN_EPS)
    x = x + channel_mix(xc, cshift, p)
    return x, v_first, (xa[:, -1], S, xc[:, -1])


def stack(x, ps, head_size, states=None):
    """Layers in turn, layer 0's v passed to the others: x (B, T, D); ps a list of parameter dicts;
    states a list of per-layer states or None. Returns (out, final states)."""
    v_first = None
    finals = []
    for layer, p in enumerate(ps):
        x, v_first, st = block(x, p, v_first, layer, head_size,
                               None if states is None else states[layer])
        finals.append(st)
    return x, finals


@torch.no_grad()
def step(x, p, v_first, layer, head_size, state):
    """One token through one layer: x (B, D), state as `block`'s; returns (out (B, C), v_first (B, C),
    new state). The generation peer: `block` at T = 1."""
    out, v_first, state = block(x[:, None, :], p, None if v_first is None else v_first[:, None, :],
                                layer, head_size, state)
    return out[:, 0], v_first[:, 0], state


# --- initialisation ---------------------------------------------------------------------------------

def _ortho(shape, gain, gen):
    """nn.init.orthogonal_ on a new (rows, cols) tensor, float64."""
    t = torch.empty(shape, dtype=torch.float64)
    return torch.nn.init.orthogonal_(t, gain=gain, generator=gen)


def _ortho_init(shape, scale, gen):
    """model.py lines 524-536 (the 2-D case): orthogonal with gain sqrt(rows/cols) when rows > cols."""
    gain = math.sqrt(shape[0] / shape[1]) if shape[0] > shape[1] else 1
    return _ortho(shape, gain * scale, gen)


def _uniform(shape, bound, gen):
    return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)


def init_params(C, head_size, layer, n_layer, D=None, seed=0, scheme="module"):
    """One layer's parameters as model.py initialises them, NumPy float64 by rnnkit's names.

    scheme "module": the modules' own __init__ (RWKV_Tmix_x070 lines 510-581, RWKV_CMix_x070 lines
    712-723, nn.LayerNorm / nn.GroupNorm's ones and zeros). scheme "train": then what train.py does
    to a fresh model, RWKV.generate_init_weight (lines 892-975): every `.weight` matrix re-drawn
    orthogonal (gain 1; att.key 0.1; att.output and ffn.value zero) and ln_x.weight set to
    ((layer + 1) / n_layer) ** 0.7; the other parameters kept.

    The formulas are the reference's, evaluated in float64; the random draws have the reference's
    distributions from a torch generator seeded with `seed`, not its stream of draws. With n_layer 1,
    model.py's ratio_0_to_1 = layer / (n_layer - 1) divides by zero; it is taken as 0 here. W_in
    (when D is given) is not in the reference: U(+-1/sqrt(D)), nn.Linear's bound."""
    if scheme not in ("module", "train"):
        raise ValueError(f"scheme must be 'module' or 'train', got {scheme!r}")
    if C % head_size:
        raise ValueError(f"C={C} is not a multiple of head_size={head_size}")
    gen = torch.Generator().manual_seed(seed)
    H, N = C // head_size, head_size
    ratio_0_to_1 = layer / (n_layer - 1) if n_layer > 1 else 0.0  # 0 to 1
    ratio_1_to_almost0 = 1.0 - (layer / n_layer)  # 1 to ~0
    ddd = torch.arange(C, dtype=torch.float64) / C
    p = {"ln1_w": torch.ones(C, dtype=torch.float64), "ln1_b": torch.zeros(C, dtype=torch.float64)}
    for name, e in (("r", 0.2), ("w", 0.9), ("k", 0.7), ("v", 0.7), ("a", 0.9), ("g", 0.2)):
        p["mu_" + name] = 1.0 - torch.pow(ddd, e * ratio_1_to_almost0)

    n = torch.arange(C, dtype=torch.float64)
    linear = n / (C - 1) - 0.5
    zigzag = ((n % N) - ((N - 1) / 2)) / ((N - 1) / 2)
    zigzag = zigzag * zigzag.abs()
    www = -6 + 6 * (n / (C - 1)) ** (1 + 1 * ratio_0_to_1 ** 0.3)
    ranks = lora_ranks(C)

    p["w0"] = www + 0.5 + zigzag * 2.5
    p["w1"] = torch.zeros(C, ranks["w"], dtype=torch.float64)
    p["w2"] = _ortho_init((ranks["w"], C), 0.1, gen)
    p["a0"] = torch.zeros(C, dtype=torch.float64) - 0.19 + zigzag * 0.3 + linear * 0.4
    p["a1"] = torch.zeros(C, ranks["a"], dtype=torch.float64)
    p["a2"] = _ortho_init((ranks["a"], C), 0.1, gen)
    p["v0"] = torch.zeros(C, dtype=torch.float64) + 0.73 - linear * 0.4
    p["v1"] = torch.zeros(C, ranks["v"], dtype=torch.float64)
    p["v2"] = _ortho_init((ranks["v"], C), 0.1, gen)
    p["g1"] = torch.zeros(C, ranks["g"], dtype=torch.float64)
    p["g2"] = _ortho_init((ranks["g"], C), 0.1, gen)
    p["k_k"] = torch.zeros(C, dtype=torch.float64) + 0.71 - linear * 0.1
    p["k_a"] = torch.zeros(C, dtype=torch.float64) + 1.02
    p["r_k"] = torch.zeros(H, N, dtype=torch.float64) - 0.04
    p["lnx_w"] = torch.ones(C, dtype=torch.float64)
    p["lnx_b"] = torch.zeros(C, dtype=torch.float64)
    bound = C ** 0.5
    # torch Linear weights are (out, in); rnnkit's are their transposes
    p["Wr"] = _uniform((C, C), 0.5 / bound, gen).T
    p["Wk"] = _uniform((C, C), 0.05 / bound, gen).T
    p["Wv"] = _uniform((C, C), 0.5 / bound, gen).T
    p["Wo"] = torch.zeros(C, C, dtype=torch.float64)

    p["ln2_w"] = torch.ones(C, dtype=torch.float64)
    p["ln2_b"] = torch.zeros(C, dtype=torch.float64)
    p["mu_c"] = 1.0 - torch.pow(ddd, ratio_1_to_almost0 ** 4)
    p["Wck"] = _uniform((4 * C, C), 0.5 / bound, gen).T
    p["Wcv"] = torch.zeros(C, 4 * C, dtype=torch.float64).T

    if scheme == "train":
        p["lnx_w"] = torch.zeros(C, dtype=torch.float64) + ((1 + layer) / n_layer) ** 0.7
        p["Wr"] = _ortho((C, C), 1.0, gen).T
        p["Wk"] = _ortho((C, C), 0.1, gen).T
        p["Wv"] = _ortho((C, C), 1.0, gen).T
        p["Wck"] = _ortho((4 * C, C), 1.0, gen).T
    if D is not None:
        p["W_in"] = _uniform((C, D), 1 / D ** 0.5, gen).T
    return {k: np.ascontiguousarray(v.numpy()) for k, v in p.items()}


def random_params(C, head_size, D=None, seed=0, ranks=None):
    """Every parameter random at about its trained scale, NumPy float64 by rnnkit's names: for checks,
    where the reference's zero LoRA factors, zero W_o and unit norms would hide a wrong path. ranks:
    {"w", "a", "v", "g"} -> rank (default `lora_ranks(C)`). The decay stays in its working range (w0
    near model.py's values); the mixes in (0, 1)."""
    rng = np.random.default_rng(seed)
    H = C // head_size
    ranks = lora_ranks(C) if ranks is None else ranks

    def n(*shape, scale=1.0):
        return scale * rng.standard_normal(shape)

    def mat(rows, cols):
        return n(rows, cols, scale=1 / math.sqrt(rows))

    p = {"ln1_w": 1 + n(C, scale=0.2), "ln1_b": n(C, scale=0.2)}
    for name in ("r", "w", "k", "v", "a", "g"):
        p["mu_" + name] = rng.uniform(0, 1, C)
    for name in ("Wr", "Wk", "Wv", "Wo"):
        p[name] = mat(C, C)
    for name, r in ranks.items():
        p[name + "1"] = mat(C, r)
        p[name + "2"] = n(r, C, scale=0.3 / math.sqrt(r))
    p["w0"] = rng.uniform(-5, 1, C)
    p["a0"] = n(C, scale=0.5)
    p["v0"] = 0.5 + n(C, scale=0.5)
    p["k_k"] = 0.7 + n(C, scale=0.2)
    p["k_a"] = 1 + n(C, scale=0.2)
    p["r_k"] = n(H, head_size, scale=0.3)
    p["lnx_w"] = 1 + n(C, scale=0.2)
    p["lnx_b"] = n(C, scale=0.2)
    p["ln2_w"] = 1 + n(C, scale=0.2)
    p["ln2_b"] = n(C, scale=0.2)
    p["mu_c"] = rng.uniform(0, 1, C)
    p["Wck"] = mat(C, 4 * C)
    p["Wcv"] = mat(4 * C, C)
    if D is not None:
        p["W_in"] = mat(D, C)
    return p


# --- the reference's checkpoint layout -------------------------------------------------------------

_REF_KEYS = {"mu_r": "att.x_r", "mu_w": "att.x_w", "mu_k": "att.x_k", "mu_v": "att.x_v",
             "mu_a": "att.x_a", "mu_g": "att.x_g", "Wr": "att.receptance.weight",
             "Wk": "att.key.weight", "Wv": "att.value.weight", "Wo": "att.output.weight",
             "lnx_w": "att.ln_x.weight", "lnx_b": "att.ln_x.bias", "ln1_w": "ln1.weight",
             "ln1_b": "ln1.bias", "ln2_w": "ln2.weight", "ln2_b": "ln2.bias", "mu_c": "ffn.x_k",
             "Wck": "ffn.key.weight", "Wcv": "ffn.value.weight"}
_TRANSPOSED = ("Wr", "Wk", "Wv", "Wo", "Wck", "Wcv")
_VECTORS = ("mu_r", "mu_w", "mu_k", "mu_v", "mu_a", "mu_g", "w0", "a0", "v0", "k_k", "k_a", "mu_c")


def reference_state_dict(m):
    """A model of rwkv7_rnn_numpy.random_model's layout as model.py's state dict (float32 tensors):
    blocks.{i}.att.x_r (1, 1, C), ...receptance.weight (out, in), emb.weight, head.weight (V, C).
    The layers take C inputs (the reference has no W_in)."""
    sd = {"emb.weight": m["emb"], "blocks.0.ln0.weight": m["ln0_w"],
          "blocks.0.ln0.bias": m["ln0_b"], "ln_out.weight": m["ln_out_w"],
          "ln_out.bias": m["ln_out_b"], "head.weight": m["head"].T}
    for i, p in enumerate(m["layers"]):
        if "W_in" in p:
            raise ValueError(f"layer {i} has W_in, which the reference's checkpoint cannot hold")
        for name, value in p.items():
            key = f"blocks.{i}." + _REF_KEYS.get(name, "att." + name)
            value = value.T if name in _TRANSPOSED else value
            sd[key] = value.reshape(1, 1, -1) if name in _VECTORS else value
    return {k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float32) for k, v in sd.items()}


def save_reference_checkpoint(m, stem):
    """Write `reference_state_dict(m)` to stem + ".pth" (the `rwkv` package's RWKV(model=stem) reads
    it); returns stem as a string."""
    torch.save(reference_state_dict(m), str(stem) + ".pth")
    return str(stem)
