"""Exact BPTT in bounded memory (recompute=k) gives the gradients of plain BPTT; the buffer pool and the
one-step inference path give the same numbers as the plain full-sequence code."""

import numpy as np
import pytest

from gradcheck import rel_error
from rnnkit import GRU, LSTM, RNN

T, N, D, H = 13, 3, 4, 5


def _train_step(layer, x, dout, mask=None, state=None, dstate=None):
    layer.zero_grad()
    out, final = layer.forward(x, state, mask=mask)
    dx, dstate0 = layer.backward(dout, dstate)
    return out, final, dx, dstate0, {k: g.copy() for k, g in layer.grads.items()}


def _flat(*items):
    out = []
    for it in items:
        if isinstance(it, dict):
            out += [it[k] for k in sorted(it)]
        elif isinstance(it, tuple):
            out += list(it)
        else:
            out.append(it)
    return out


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("k", [1, 4, 5, "sqrt", 12])
def test_recompute_gradients_equal_plain_bptt(cls, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D))
    mask = np.arange(T)[:, None] < np.array([13, 6, 1])[None, :]
    dout = rng.standard_normal((T, N, 2 * H)) * mask[:, :, None]
    plain = cls(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    ckpt = cls(D, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=3, recompute=k)
    state = plain.init_state(N)
    state = tuple(s + rng.standard_normal(s.shape) for s in state) if isinstance(state, tuple) else \
        state + rng.standard_normal(state.shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in state) if isinstance(state, tuple) else \
        rng.standard_normal(state.shape)
    a = _flat(*_train_step(plain, x, dout, mask, state, dstate))
    b = _flat(*_train_step(ckpt, x, dout, mask, state, dstate))
    assert len(a) == len(b) > 5
    for i, (u, v) in enumerate(zip(a, b)):
        assert rel_error(u, v) < 1e-12, i


def test_recompute_keeps_only_segment_states():
    layer = LSTM(D, H, dtype=np.float64, recompute=4)
    layer.forward(np.ones((T, N, D)))
    ck = layer._caches[1][0]
    assert ck.starts == [0, 4, 8, 12]
    assert len(ck.states) == 4 and all(s[0].shape == (N, H) for s in ck.states)


def test_bad_recompute_value():
    layer = LSTM(D, H, recompute=0)
    with pytest.raises(ValueError, match="recompute"):
        layer.forward(np.ones((T, N, D), np.float32))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_repeated_steps_with_pooled_buffers_equal_a_fresh_layer(cls):
    """Buffers reused from the previous step's pool must not leak old values into the new step."""
    rng = np.random.default_rng(1)
    layer = cls(D, H, num_layers=2, dtype=np.float64, seed=4)
    batches = [(rng.standard_normal((T, N, D)), rng.standard_normal((T, N, H))) for _ in range(3)]
    results = [_flat(*_train_step(layer, x, d)) for x, d in batches]
    for (x, d), got in zip(batches, results):
        fresh = cls(D, H, num_layers=2, dtype=np.float64, seed=4)
        want = _flat(*_train_step(fresh, x, d))
        for u, v in zip(got, want):
            assert np.array_equal(u, v)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_equals_forward(cls, dtype):
    rng = np.random.default_rng(2)
    layer = cls(D, H, num_layers=2, dtype=dtype, seed=5)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    out, final = layer.forward(x)
    state = None
    for t in range(T):
        h, state = layer.step(x[t], state)
        assert rel_error(h, out[t]) < (1e-6 if dtype == np.float32 else 1e-13)
    for s, f in zip(_flat(state), _flat(final)):
        assert rel_error(s, f) < (1e-6 if dtype == np.float32 else 1e-13)


def test_step_checks_its_input():
    layer = LSTM(D, H, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x has shape \(3,\)"):
        layer.step(np.ones(3))
    with pytest.raises(ValueError, match="x contains NaN"):
        layer.step(np.full((1, D), np.nan))
    with pytest.raises(ValueError, match="bidirectional"):
        LSTM(D, H, bidirectional=True).step(np.ones((1, D), np.float32))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_step_from_precomputed_input_gates(cls):
    rng = np.random.default_rng(3)
    layer = cls(D, H, num_layers=2, dtype=np.float64, seed=6)
    E = rng.standard_normal((7, D))
    table = layer.input_gates(E)
    tokens = [3, 0, 6, 6]
    s1 = s2 = None
    for tok in tokens:
        h1, s1 = layer.step(E[tok:tok + 1], s1)
        h2, s2 = layer.step(None, s2, x_gates=table[tok:tok + 1])
        assert rel_error(h1, h2) < 1e-13
