"""Attention of a caption decoder over an image's feature map, stateless forward / backward pairs: on the
decoder's output for a whole caption at once (Luong et al. 2015, "general" score), and one step's
context read with the previous state (show-attend-tell, Xu et al. 2015).

Dimensions, declared once for this module:
    T  decoder steps    N  batch size (images)    H  decoder hidden size
    L  feature-map locations (h * w)              C  feature channels

    q      (T, N, H)   decoder outputs (Luong); h (N, H) the previous state (show-attend-tell)
    A      (N, L, C)   the feature map, one C-vector a_l per location
    K      (N, L, H)   keys, the projected map A Wa;   Wa (C, H)
    alpha  (T, N, L)   attention weights over the locations (N, L for one step)

Luong, on the decoder output (`image_attention_*`), Wc (H + C, H), bc (H,):
    alpha_t = softmax_l( q_t . (a_l Wa) / sqrt(H) ),   ctx_t = sum_l alpha_tl a_l
    z_t = tanh([q_t; ctx_t] Wc + bc)
Show-attend-tell, before the cell (`sat_context_*`), the keys K given (projected once per caption):
    alpha = softmax_l( h . K_l / sqrt(H) ),   ctx = sum_l alpha_l a_l
Inside, the batch leads so that each product is one batched matrix product.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from rnnkit.backend import get_array_module
from rnnkit.functional.losses import softmax


class ImageAttentionCache(NamedTuple):
    qn: object  # (N, T, H) decoder outputs, batch-major
    A: object  # (N, L, C) feature map
    K: object  # (N, L, H) projected keys A Wa
    alpha: object  # (N, T, L)
    cat: object  # (N, T, H + C) [q; ctx]
    z: object  # (N, T, H)
    Wa: object
    Wc: object
    scale: float


def image_attention_forward(q, A, Wa, Wc, bc):
    """q (T, N, H) decoder outputs; A (N, L, C) feature map; Wa (C, H); Wc (H + C, H); bc (H,).

    Returns z (T, N, H), alpha (T, N, L) and the cache.
    """
    xp = get_array_module(q, A)
    T, N, H = q.shape
    scale = 1.0 / math.sqrt(H)
    qn = q.transpose(1, 0, 2)  # (N, T, H): batch leads so each product is one batched matmul
    K = A @ Wa  # (N, L, H)
    s = (qn @ K.transpose(0, 2, 1)) * scale  # (N, T, L)
    alpha = softmax(s)  # over locations
    ctx = alpha @ A  # (N, T, C)
    cat = xp.concatenate([qn, ctx], axis=-1)
    z = xp.tanh(cat @ Wc + bc)
    cache = ImageAttentionCache(qn, A, K, alpha, cat, z, Wa, Wc, scale)
    return z.transpose(1, 0, 2), alpha.transpose(1, 0, 2), cache


def image_attention_backward(dz, cache: ImageAttentionCache):
    """dz (T, N, H) -> dq (T, N, H), dA (N, L, C), dWa, dWc, dbc."""
    qn, A, K, alpha, cat, z, Wa, Wc, scale = cache
    H = qn.shape[-1]
    dpre = dz.transpose(1, 0, 2) * (1 - z * z)  # through tanh
    dWc = cat.reshape(-1, cat.shape[-1]).T @ dpre.reshape(-1, H)
    dbc = dpre.sum(axis=(0, 1))
    dcat = dpre @ Wc.T
    dqn, dctx = dcat[..., :H].copy(), dcat[..., H:]
    # ctx = alpha A
    dalpha = dctx @ A.transpose(0, 2, 1)  # (N, T, L)
    dA = alpha.transpose(0, 2, 1) @ dctx  # (N, L, C)
    # softmax: ds = alpha * (dalpha - sum_l alpha dalpha)
    ds = alpha * (dalpha - (alpha * dalpha).sum(axis=-1, keepdims=True))
    ds *= scale
    # s = q K^T
    dqn += ds @ K
    dK = ds.transpose(0, 2, 1) @ qn  # (N, L, H)
    # K = A Wa
    dWa = A.reshape(-1, A.shape[-1]).T @ dK.reshape(-1, H)
    dA += dK @ Wa.T
    return dqn.transpose(1, 0, 2), dA, dWa, dWc, dbc


class SatContextCache(NamedTuple):
    h: object  # (N, H) the previous state that asked
    A: object  # (N, L, C)
    K: object  # (N, L, H)
    alpha: object  # (N, L)
    scale: float


def sat_context_forward(h, A, K):
    """One step's context: h (N, H) previous state, A (N, L, C) map, K = A Wa (N, L, H) keys.

    alpha = softmax_l(h . K_l / sqrt(H)) (N, L); ctx = sum_l alpha_l A_l (N, C). Returns ctx, cache."""
    scale = 1.0 / math.sqrt(h.shape[-1])
    s = (K @ h[:, :, None])[..., 0] * scale  # (N, L)
    alpha = softmax(s, axis=1)
    ctx = (alpha[:, None, :] @ A)[:, 0]  # (N, C)
    return ctx, SatContextCache(h, A, K, alpha, scale)


def sat_context_backward(dctx, cache: SatContextCache):
    """dctx (N, C) -> dh (N, H), dA (N, L, C), dK (N, L, H)."""
    h, A, K, alpha, scale = cache
    dalpha = (A @ dctx[:, :, None])[..., 0]  # (N, L)
    dA = alpha[:, :, None] * dctx[:, None, :]
    ds = alpha * (dalpha - (alpha * dalpha).sum(axis=1, keepdims=True)) * scale
    dh = (ds[:, None, :] @ K)[:, 0]
    dK = ds[:, :, None] * h[:, None, :]
    return dh, dA, dK
