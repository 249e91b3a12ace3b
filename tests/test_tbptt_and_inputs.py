"""Truncated BPTT consistency, and the ValueErrors promised for bad input."""

import numpy as np
import pytest

from gradcheck import rel_error
from rnnkit import GRU, LSTM, RNN
from rnnkit.cells.lstm import lstm_forward
from rnnkit.cells.rnn import rnn_forward
from rnnkit.functional import reverse_padded

T, N, D, H = 12, 3, 4, 5


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_two_chunks_equal_one_pass(rng, cls):
    """Chunk 1 then chunk 2 with the state carried forward and its gradient passed back = one full pass."""
    layer = cls(D, H, num_layers=2, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, N, D))
    dout = rng.standard_normal((T, N, H))
    out, _ = layer.forward(x)
    layer.zero_grad()
    dx, _ = layer.backward(dout)
    full = {k: g.copy() for k, g in layer.grads.items()}

    layer.zero_grad()
    a, b = x[:7], x[7:]
    out1, s1 = layer.forward(a)
    caches1 = layer._caches
    out2, _ = layer.forward(b, s1)
    dx2, ds1 = layer.backward(dout[7:])
    layer._caches = caches1
    dx1, _ = layer.backward(dout[:7], ds1)
    assert rel_error(np.concatenate([out1, out2]), out) < 1e-12
    assert rel_error(np.concatenate([dx1, dx2]), dx) < 1e-12
    for k in full:
        assert rel_error(layer.grads[k], full[k]) < 1e-12, k


def test_reverse_padded_is_its_own_inverse(rng):
    x = rng.standard_normal((T, N, D))
    mask = np.arange(T)[:, None] < np.array([12, 5, 0])[None, :]
    r = reverse_padded(x, mask)
    assert np.array_equal(r[:5, 1], x[4::-1, 1])
    assert np.array_equal(r[5:, 1], x[5:, 1])
    assert np.array_equal(reverse_padded(r, mask), x)


def _args(rng, dtype=np.float64):
    return (rng.standard_normal((T, N, D)).astype(dtype), np.zeros((N, H), dtype),
            rng.standard_normal((D, H)).astype(dtype), rng.standard_normal((H, H)).astype(dtype),
            np.zeros(H, dtype))


@pytest.mark.parametrize("which,value,message", [
    ("x", np.zeros((T, N)), r"x has shape \(12, 3\), expected \(T, N, D\)"),
    ("h0", np.zeros((N + 1, H)), r"h0 has shape \(4, 5\), expected \(N=3, H=5\)"),
    ("Wx", np.zeros((D + 1, H)), r"Wx has shape \(5, 5\), expected \(D=4, H=5\)"),
    ("b", np.zeros(H + 1), r"b has shape \(6,\), expected \(H=5\)"),
])
def test_wrong_shapes_name_the_argument(rng, which, value, message):
    args = dict(zip(["x", "h0", "Wx", "Wh", "b"], _args(rng)))
    args[which] = value
    with pytest.raises(ValueError, match=message):
        rnn_forward(**args)


def test_mismatched_dtype(rng):
    x, h0, Wx, Wh, b = _args(rng)
    with pytest.raises(ValueError, match="Wx has dtype float32, expected float64"):
        rnn_forward(x, h0, Wx.astype(np.float32), Wh, b)


@pytest.mark.parametrize("which", ["x", "Wh", "h0"])
def test_nan_and_inf_are_refused(rng, which):
    args = dict(zip(["x", "h0", "Wx", "Wh", "b"], _args(rng)))
    args[which] = args[which].copy()
    args[which].flat[1] = np.nan
    with pytest.raises(ValueError, match=f"{which} contains NaN or inf"):
        rnn_forward(**args)
    args[which].flat[1] = np.inf
    with pytest.raises(ValueError, match=f"{which} contains NaN or inf"):
        rnn_forward(**args)


def test_mask_must_be_a_prefix(rng):
    x, h0, Wx, Wh, b = _args(rng)
    mask = np.ones((T, N), bool)
    mask[3, 0] = False  # a hole: valid, padded, valid
    with pytest.raises(ValueError, match="prefix"):
        rnn_forward(x, h0, Wx, Wh, b, mask)
    with pytest.raises(ValueError, match=r"mask has shape \(12, 4\)"):
        rnn_forward(x, h0, Wx, Wh, b, np.ones((T, N + 1), bool))


def test_lstm_layer_checks_input_size(rng):
    layer = LSTM(D, H)
    with pytest.raises(ValueError, match=r"x has shape \(12, 3, 7\), expected \(T, N, D=4\)"):
        layer.forward(np.zeros((T, N, 7), np.float32))
    with pytest.raises(ValueError, match="h0 has shape"):
        layer.forward(np.zeros((T, N, D), np.float32), (np.zeros((2, N, H), np.float32),) * 2)


def test_float32_default_and_float64_works(rng):
    assert LSTM(D, H).params["l0.Wx"].dtype == np.float32
    layer = LSTM(D, H, dtype=np.float64)
    out, (h, c) = layer.forward(rng.standard_normal((T, N, D)))
    assert out.dtype == np.float64 and c.dtype == np.float64


def test_lstm_forget_bias(rng):
    layer = LSTM(D, H, num_layers=2, forget_bias=1.0)
    for k in range(2):
        assert np.all(layer.params[f"l{k}.b"][H:2 * H] == 1.0)


def test_forward_does_not_broadcast_state(rng):
    x = rng.standard_normal((T, N, D))
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), np.zeros(4 * H)
    with pytest.raises(ValueError, match="h0 has shape"):
        lstm_forward(x, np.zeros((1, H)), np.zeros((N, H)), Wx, Wh, b)
