"""Exact BPTT in bounded memory (recompute=k) gives the gradients of plain BPTT; the buffer pool and the
one-step inference path give the same numbers as the plain full-sequence code."""

import numpy as np
import pytest

from gradcheck import rel_error
from rnnkit import GRU, LSTM, RNN, MinGRU, kernels
from rnnkit.cells.gru import gru_forward, gru_recompute
from rnnkit.cells.lstm import lstm_forward, lstm_recompute

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


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN, MinGRU])
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
    # the cell state only: each segment's starting h is in the hidden states kept anyway
    assert len(ck.states) == 4 and all(len(s) == 1 and s[0].shape == (N, H) for s in ck.states)
    gru = GRU(D, H, dtype=np.float64, recompute=4)
    gru.forward(np.ones((T, N, D)))
    assert gru._caches[1][0].states == [(), (), (), ()]


def test_bad_recompute_value():
    layer = LSTM(D, H, recompute=0)
    with pytest.raises(ValueError, match="recompute"):
        layer.forward(np.ones((T, N, D), np.float32))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN, MinGRU])
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


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN, MinGRU])
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


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN, MinGRU])
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


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN, MinGRU])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_recompute_rows_split_across_threads_equal_plain_bptt(cls, dtype, tol, monkeypatch):
    """With several threads, recompute runs each part of the batch rows through all its segments on
    one thread (kernels.pool.split_rows): here three uneven parts of 19 rows, whatever this machine has."""
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_ROWS", 1)
    old = kernels.threads()
    kernels.set_threads(3)
    parts, split_rows = [], kernels.pool.split_rows
    monkeypatch.setattr(kernels.pool, "split_rows", lambda fn, p: (parts.append(len(p)), split_rows(fn, p))[1])
    try:
        rng = np.random.default_rng(5)
        T, N = 11, 19
        x = rng.standard_normal((T, N, D)).astype(dtype)
        mask = np.arange(T)[:, None] < (np.arange(N) * 7 % (T + 1))[None, :]
        dout = (rng.standard_normal((T, N, 2 * H)) * mask[:, :, None]).astype(dtype)
        plain = cls(D, H, num_layers=2, bidirectional=True, dtype=dtype, seed=3)
        ckpt = cls(D, H, num_layers=2, bidirectional=True, dtype=dtype, seed=3, recompute=4)
        a = _flat(*_train_step(plain, x, dout, mask))
        b = _flat(*_train_step(ckpt, x, dout, mask))
    finally:
        kernels.set_threads(old)
    assert parts == [3] * 8  # 2 layers x 2 directions, forward and backward: each as three row parts
    for i, (u, v) in enumerate(zip(a, b)):
        assert rel_error(u, v) < tol, i


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_lstm_and_gru_recompute_equal_the_forward_cache(fast, masked, dtype, tol):
    """The cache rebuilt from the hidden states (products over all steps at once, then the cells) is
    the one the forward built step by step; on the compiled path and on the NumPy reference."""
    rng = np.random.default_rng(6)
    T, N, D, H = 7, 11, 5, 36
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, h0, c0 = r(T, N, D), r(N, H), r(N, H)
    mask = (np.arange(T)[:, None] < (np.arange(N) % (T + 1))[None, :]) if masked else None
    kernels.set_enabled(fast)
    try:
        Wx, Wh, b = r(D, 4 * H), r(H, 4 * H) * 0.3, r(4 * H)
        h, c, cache = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
        re = lstm_recompute(x, h, c0, Wx, Wh, b, mask)
        pairs = [(cache.gates, re.gates), (c, re.c), (cache.tanh_c, re.tanh_c)]
        Wx, Wh, b, bhn = r(D, 3 * H), r(H, 3 * H) * 0.3, r(3 * H), r(H)
        h, cache = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
        re = gru_recompute(x, h, Wx, Wh, b, bhn, mask)
        pairs += [(cache.gates, re.gates), (cache.hn, re.hn)]
    finally:
        kernels.set_enabled(True)
    assert re.h is h
    for i, (u, v) in enumerate(pairs):
        assert u.shape == v.shape and rel_error(u, v) < tol, (i, rel_error(u, v))


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_recompute_keeps_a_fraction_of_plain_bptts_memory(cls):
    """What a layer holds between forward and backward beyond its output (tracemalloc sees NumPy's
    buffers): plain BPTT keeps the gates of every step, recompute only every k-th state."""
    import tracemalloc

    T, N, D, H = 120, 8, 16, 32
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(np.float32)
    kept = {}
    for k in (None, 10):
        layer = cls(D, H, recompute=k)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out, _ = layer.forward(x)
        kept[k] = tracemalloc.get_traced_memory()[0] - base - out.nbytes
        tracemalloc.stop()
        layer.backward(np.ones_like(out))  # and backward still runs from what was kept
    G = 4 if cls is LSTM else 3
    assert kept[None] > T * N * G * H * 4  # at least the gates of every step
    assert kept[10] < 0.2 * kept[None]


def test_recompute_bad_input_is_one_clear_error_with_rows_split(monkeypatch):
    """A NaN in the input is reported as the layer's usual ValueError even when the batch rows run on
    separate threads, and the layer still works afterwards."""
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_ROWS", 1)
    old = kernels.threads()
    kernels.set_threads(2)
    try:
        layer = LSTM(D, H, recompute=4)
        x = np.random.default_rng(0).standard_normal((T, 16, D)).astype(np.float32)
        bad = x.copy()
        bad[5, 3, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            layer.forward(bad)
        out, _ = layer.forward(x)
        dx, _ = layer.backward(np.ones_like(out))
    finally:
        kernels.set_threads(old)
    assert np.isfinite(dx).all()
