"""Standardisation over the channels of each location (channel norm) and over the batch for each feature
(feature norm): their values, and their backward against numerical gradients (float64, random upstream
gradient)."""

import numpy as np

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import (
    channel_norm_backward,
    channel_norm_forward,
    feature_norm_backward,
    feature_norm_forward,
)


def test_channel_norm_values_and_gradient(rng):
    A = rng.standard_normal((2, 3, 5)) * 4 + 2
    Ahat, cache = channel_norm_forward(A)
    np.testing.assert_allclose(Ahat.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(Ahat.std(-1), 1, atol=1e-5)
    dout = rng.standard_normal(Ahat.shape)
    num = numerical_grad(lambda: channel_norm_forward(A)[0], A, dout)
    assert rel_error(num, channel_norm_backward(dout, cache)) < 1e-7


def test_feature_norm_batch_and_fixed_statistics(rng):
    v = rng.standard_normal((5, 4)) * 3 + 7
    vhat, cache = feature_norm_forward(v)
    np.testing.assert_allclose(vhat.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(vhat.std(0), 1, atol=1e-5)
    dout = rng.standard_normal(vhat.shape)
    assert rel_error(numerical_grad(lambda: feature_norm_forward(v)[0], v, dout),
                     feature_norm_backward(dout, cache)) < 1e-7
    mean, var = rng.standard_normal(4), rng.uniform(1, 2, 4)
    out, cache = feature_norm_forward(v, mean, var)
    np.testing.assert_allclose(out, (v - mean) / np.sqrt(var + 1e-5))
    assert rel_error(numerical_grad(lambda: feature_norm_forward(v, mean, var)[0], v, dout),
                     feature_norm_backward(dout, cache)) < 1e-7
