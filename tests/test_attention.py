"""Attention (Luong dot / general, Bahdanau additive): numerical gradients in float64 with a random
upstream gradient on both outputs (context and weights), padded source positions, and parity with a
PyTorch re-implementation on identical weights."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional.attention import KINDS, attention_backward, attention_forward, attention_params

T, N, S, H, E = 3, 3, 5, 4, 6


def _case(kind, rng, dtype=np.float64):
    E_ = H if kind == "dot" else E
    q = rng.standard_normal((T, N, H)).astype(dtype)
    keys = rng.standard_normal((S, N, E_)).astype(dtype)
    lengths = np.array([5, 2, 1])
    mask = np.arange(S)[:, None] < lengths[None, :]
    p = {k: v.astype(dtype) for k, v in attention_params(kind, H, E_, rng=rng).items()}
    return q, keys, mask, p


@pytest.mark.parametrize("kind", KINDS)
def test_attention_gradients(kind, rng):
    q, keys, mask, p = _case(kind, rng)
    ctx, alpha, cache = attention_forward(q, keys, mask, kind, p)
    dctx = rng.standard_normal(ctx.shape)
    dalpha = rng.standard_normal(alpha.shape)
    dq, dkeys, grads = attention_backward(dctx, cache, dalpha)
    up = np.concatenate([dctx.ravel(), dalpha.ravel()])

    def f():
        c, a, _ = attention_forward(q, keys, mask, kind, p)
        return np.concatenate([c.ravel(), a.ravel()])

    assert rel_error(dq, numerical_grad(f, q, up)) < 1e-7
    assert rel_error(dkeys, numerical_grad(f, keys, up)) < 1e-7
    assert set(grads) == set(p)
    for name in p:
        assert rel_error(grads[name], numerical_grad(f, p[name], up)) < 1e-7, name


@pytest.mark.parametrize("kind", KINDS)
def test_attention_mask_and_normalisation(kind, rng):
    q, keys, mask, p = _case(kind, rng)
    ctx, alpha, cache = attention_forward(q, keys, mask, kind, p)
    assert alpha.shape == (T, N, S)
    np.testing.assert_allclose(alpha.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(alpha[:, ~mask.T] == 0)  # padded positions get exactly zero weight
    # the single valid position of sequence 2 takes all the weight; its context is that key
    np.testing.assert_allclose(ctx[:, 2], np.broadcast_to(keys[0, 2], ctx[:, 2].shape))
    # whatever sits in padded keys changes nothing, and receives no gradient
    keys2 = keys.copy()
    keys2[~mask] = 1e3
    ctx2, _, cache2 = attention_forward(q, keys2, mask, kind, p)
    np.testing.assert_allclose(ctx2, ctx, rtol=1e-12)
    _, dkeys, _ = attention_backward(rng.standard_normal(ctx.shape), cache2)
    assert np.all(dkeys[~mask] == 0)


def test_attention_rejects_bad_shapes(rng):
    q, keys, mask, p = _case("dot", rng)
    with pytest.raises(ValueError, match="H == E"):
        attention_forward(q, rng.standard_normal((S, N, H + 1)), mask, "dot", p)
    with pytest.raises(ValueError, match="mask"):
        attention_forward(q, keys, mask[:-1], "dot", p)
    with pytest.raises(ValueError, match="attention kind"):
        attention_forward(q, keys, mask, "cosine", p)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_matches_torch(kind, rng):
    torch = pytest.importorskip("torch")
    q, keys, mask, p = _case(kind, rng, np.float32)
    ctx, alpha, cache = attention_forward(q, keys, mask, kind, p)
    dctx = rng.standard_normal(ctx.shape).astype(np.float32)
    dq, dkeys, grads = attention_backward(dctx, cache)

    tq = torch.tensor(q, requires_grad=True)
    tk = torch.tensor(keys, requires_grad=True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    qn, kn = tq.transpose(0, 1), tk.transpose(0, 1)  # (N, T, H), (N, S, E)
    if kind == "dot":
        e = qn @ kn.transpose(1, 2)
    elif kind == "general":
        e = qn @ (kn @ tp["Wa"]).transpose(1, 2)
    else:
        z = torch.tanh((qn @ tp["Wq"])[:, :, None] + (kn @ tp["Wk"] + tp["b"])[:, None])
        e = z @ tp["v"]
    e = e.masked_fill(~torch.tensor(mask).T[:, None, :], float("-inf"))
    a = torch.softmax(e, -1)
    tctx = (a @ kn).transpose(0, 1)
    (tctx * torch.tensor(dctx)).sum().backward()
    np.testing.assert_allclose(ctx, tctx.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(alpha, a.transpose(0, 1).detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(dq, tq.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(dkeys, tk.grad.numpy(), atol=1e-4)
    for name in p:
        np.testing.assert_allclose(grads[name], tp[name].grad.numpy(), atol=1e-4)
