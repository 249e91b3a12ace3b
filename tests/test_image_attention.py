"""Attention over an image's feature map (the captioner's): Luong on the decoder output and
show-attend-tell's one-step context, numerical gradients in float64 with a random upstream gradient."""

import numpy as np

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import (
    image_attention_backward,
    image_attention_forward,
    sat_context_backward,
    sat_context_forward,
)


def test_image_attention_gradients(rng):
    T, N, H, L, C = 3, 2, 4, 5, 3
    q, A = rng.standard_normal((T, N, H)), rng.standard_normal((N, L, C))
    Wa, Wc, bc = rng.standard_normal((C, H)), rng.standard_normal((H + C, H)) * 0.5, rng.standard_normal(H)
    z, alpha, cache = image_attention_forward(q, A, Wa, Wc, bc)
    assert np.allclose(alpha.sum(-1), 1.0)
    dz = rng.standard_normal(z.shape)
    grads = dict(zip(("q", "A", "Wa", "Wc", "bc"), image_attention_backward(dz, cache)))
    f = lambda: image_attention_forward(q, A, Wa, Wc, bc)[0]  # noqa: E731
    for name, arr in (("q", q), ("A", A), ("Wa", Wa), ("Wc", Wc), ("bc", bc)):
        err = rel_error(numerical_grad(f, arr, dz), grads[name])
        assert err < 1e-7, f"d{name}: relative error {err:.2e}"


def test_sat_context_gradients(rng):
    N, H, L, C = 3, 4, 5, 2
    h, A, K = rng.standard_normal((N, H)), rng.standard_normal((N, L, C)), rng.standard_normal((N, L, H))
    ctx, cache = sat_context_forward(h, A, K)
    assert ctx.shape == (N, C)
    np.testing.assert_allclose(cache.alpha.sum(-1), 1.0)
    # the context is the weighted mean of the locations: inside their range per channel
    assert np.all(ctx <= A.max(axis=1) + 1e-12) and np.all(ctx >= A.min(axis=1) - 1e-12)
    dctx = rng.standard_normal(ctx.shape)
    grads = dict(zip(("h", "A", "K"), sat_context_backward(dctx, cache)))
    f = lambda: sat_context_forward(h, A, K)[0]  # noqa: E731
    for name, arr in (("h", h), ("A", A), ("K", K)):
        err = rel_error(numerical_grad(f, arr, dctx), grads[name])
        assert err < 1e-7, f"d{name}: relative error {err:.2e}"


def test_sat_context_is_one_step_of_image_attention(rng):
    """The two read the map with the same scaled bilinear score: one step's weights agree."""
    N, H, L, C = 2, 4, 5, 3
    h, A, Wa = rng.standard_normal((N, H)), rng.standard_normal((N, L, C)), rng.standard_normal((C, H))
    _, alpha, _ = image_attention_forward(h[None], A, Wa, rng.standard_normal((H + C, H)),
                                          rng.standard_normal(H))
    _, cache = sat_context_forward(h, A, A @ Wa)
    np.testing.assert_allclose(cache.alpha, alpha[0], rtol=1e-12)
