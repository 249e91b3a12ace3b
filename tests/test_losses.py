"""Softmax, log-softmax, logsumexp and the losses on them: values against the plain formulas, masked
(-inf) classes, no overflow for large scores, the loss-only cross-entropy against the full one, and the
squared error's gradient (numerical, float64)."""

import math

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import (
    log_softmax,
    logsumexp,
    mse_backward,
    mse_forward,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_loss_only,
)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family_matches_the_formulas(rng, axis):
    x = rng.standard_normal((3, 4, 5)) * 3
    e = np.exp(x)
    np.testing.assert_allclose(softmax(x, axis), e / e.sum(axis, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(log_softmax(x, axis), np.log(e / e.sum(axis, keepdims=True)), atol=1e-12)
    np.testing.assert_allclose(logsumexp(x, axis), np.log(e.sum(axis)), rtol=1e-12)


def test_large_and_masked_scores(rng):
    x = rng.standard_normal((4, 6)) + 1000.0  # exp(1000) overflows: only the shifted forms survive
    assert np.all(np.isfinite(log_softmax(x))) and np.all(np.isfinite(logsumexp(x)))
    np.testing.assert_allclose(log_softmax(x), log_softmax(x - 1000.0), atol=1e-9)
    np.testing.assert_allclose(softmax(x).sum(-1), 1.0)
    x[:, [0, 2]] = -np.inf  # masked classes: probability 0, the others still sum to 1
    lp = log_softmax(x)
    assert np.all(lp[:, [0, 2]] == -np.inf) and np.all(np.isfinite(lp[:, [1, 3, 4, 5]]))
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_only_equals_the_full_cross_entropy(rng, dtype):
    logits = (rng.standard_normal((5, 3, 7)) * 4).astype(dtype)
    y = rng.integers(0, 7, (5, 3))
    loss, grad = softmax_cross_entropy_loss_only(logits, y)
    assert grad is None and isinstance(loss, float)
    assert math.isclose(loss, softmax_cross_entropy(logits, y)[0], rel_tol=1e-5 if dtype == np.float32
                        else 1e-12)
    lp = log_softmax(logits.astype(np.float64))
    assert math.isclose(loss, -float(np.take_along_axis(lp, y[..., None], -1).mean()), rel_tol=1e-12)


def test_mse_gradient(rng):
    pred, y = rng.standard_normal(7), rng.standard_normal(7)
    loss, cache = mse_forward(pred, y)
    assert math.isclose(loss, float(((pred - y) ** 2).mean()))
    num = numerical_grad(lambda: np.array(mse_forward(pred, y)[0]), pred, np.array(1.0))
    assert rel_error(num, mse_backward(cache)) < 1e-8
    assert rel_error(2.5 * num, mse_backward(cache, 2.5)) < 1e-8
    with pytest.raises(ValueError, match="y has shape"):
        mse_forward(pred, y[:3])
