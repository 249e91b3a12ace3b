"""Pooling a recurrent layer's outputs over valid steps (last, mean, max): the hand-written backward
against numerical gradients (float64, random upstream gradient), and padding that never counts."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import lengths_to_mask, pool_backward, pool_forward

LENGTHS = np.array([5, 1, 3, 5])  # a one-token sentence and padded ones


@pytest.mark.parametrize("mode", ["last", "mean", "max"])
@pytest.mark.parametrize("K", [1, 2])
def test_pool_gradient(rng, mode, K):
    T, N, H = 5, len(LENGTHS), 3
    out = rng.standard_normal((T, N, K * H))
    mask = lengths_to_mask(LENGTHS, T)
    feat, cache = pool_forward(out, mask, mode, K)
    dfeat = rng.standard_normal(feat.shape)
    dout = pool_backward(dfeat, cache)
    num = numerical_grad(lambda: pool_forward(out, mask, mode, K)[0], out, dfeat)
    assert rel_error(dout, num) < 1e-8
    assert np.all(dout[~mask] == 0)  # no gradient reaches padding


def test_pool_values_ignore_padding(rng):
    T, N, H = 5, len(LENGTHS), 2
    out = rng.standard_normal((T, N, 2 * H))
    mask = lengths_to_mask(LENGTHS, T)
    poisoned = out.copy()
    poisoned[~mask] = 1e6  # padding must never win a max or enter a mean
    for mode in ("last", "mean", "max"):
        a, _ = pool_forward(out, mask, mode, 2)
        b, _ = pool_forward(poisoned, mask, mode, 2)
        np.testing.assert_array_equal(a, b)
    n = 2  # length 3
    mean, _ = pool_forward(out, mask, "mean", 2)
    np.testing.assert_allclose(mean[n], out[:3, n].mean(axis=0))
    mx, _ = pool_forward(out, mask, "max", 2)
    np.testing.assert_allclose(mx[n], out[:3, n].max(axis=0))
    last, _ = pool_forward(out, mask, "last", 2)
    np.testing.assert_array_equal(last[n, :H], out[2, n, :H])  # forward: true last token
    np.testing.assert_array_equal(last[n, H:], out[0, n, H:])  # reverse: after the first token
