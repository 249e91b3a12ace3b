"""Numerical gradient checks (float64, random upstream gradient) for every function and layer."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import GRU, LSTM, RNN, Embedding, Linear, MinGRU
from rnnkit.cells.gru import gru_backward, gru_forward
from rnnkit.cells.lstm import lstm_backward, lstm_forward
from rnnkit.cells.mingru import mingru_backward, mingru_forward
from rnnkit.cells.rnn import rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward
from rnnkit.functional import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_backward_into,
    embedding_forward,
    softmax_cross_entropy,
)

T, N, D, H = 5, 3, 4, 6
TOL = 1e-6


def _mask():
    lengths = np.array([5, 3, 1])
    return np.arange(T)[:, None] < lengths[None, :]


def _check(f, backward_grads, arrays, dout):
    """Compare each analytic gradient with the numerical one of sum(f() * dout)."""
    for name, x in arrays.items():
        num = numerical_grad(f, x, dout)
        err = rel_error(num, backward_grads[name])
        assert err < TOL, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_forward_backward(rng, masked, nonlinearity):
    x, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, H)) * 0.5, rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    mask = _mask() if masked else None
    dh, dhT = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    if masked:
        dh = dh * mask[:, :, None]  # the loss never reads padded outputs

    def f():
        h, _ = rnn_forward(x, h0, Wx, Wh, b, mask, nonlinearity)
        return np.concatenate([h[1:].ravel(), h[-1].ravel()])

    h, cache = rnn_forward(x, h0, Wx, Wh, b, mask, nonlinearity)
    dx, dh0, dWx, dWh, db = rnn_backward(dh, cache, dhT)
    dout = np.concatenate([dh.ravel(), dhT.ravel()])
    _check(f, dict(x=dx, h0=dh0, Wx=dWx, Wh=dWh, b=db), dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b), dout)


def test_rnn_step(rng):
    x, h0 = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)
    dh = rng.standard_normal((N, H))
    _, cache = rnn_step_forward(x, h0, Wx, Wh, b)
    dx, dh0, dWx, dWh, db = rnn_step_backward(dh, cache)
    f = lambda: rnn_step_forward(x, h0, Wx, Wh, b)[0]  # noqa: E731
    _check(f, dict(x=dx, h0=dh0, Wx=dWx, Wh=dWh, b=db), dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b), dh)


@pytest.mark.parametrize("masked", [False, True])
def test_lstm_forward_backward(rng, masked):
    x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    mask = _mask() if masked else None
    dh, dhT, dcT = (rng.standard_normal(s) for s in [(T, N, H), (N, H), (N, H)])
    if masked:
        dh = dh * mask[:, :, None]

    def f():
        h, c, _ = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
        return np.concatenate([h[1:].ravel(), h[-1].ravel(), c[-1].ravel()])

    _, _, cache = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
    dx, dh0, dc0, dWx, dWh, db = lstm_backward(dh, cache, dhT, dcT)
    dout = np.concatenate([dh.ravel(), dhT.ravel(), dcT.ravel()])
    _check(f, dict(x=dx, h0=dh0, c0=dc0, Wx=dWx, Wh=dWh, b=db),
           dict(x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b), dout)


@pytest.mark.parametrize("masked", [False, True])
def test_gru_forward_backward(rng, masked):
    x, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    Wx, Wh = rng.standard_normal((D, 3 * H)), rng.standard_normal((H, 3 * H))
    b, bhn = rng.standard_normal(3 * H), rng.standard_normal(H)
    mask = _mask() if masked else None
    dh, dhT = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    if masked:
        dh = dh * mask[:, :, None]

    def f():
        h, _ = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
        return np.concatenate([h[1:].ravel(), h[-1].ravel()])

    _, cache = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
    dx, dh0, dWx, dWh, db, dbhn = gru_backward(dh, cache, dhT)
    dout = np.concatenate([dh.ravel(), dhT.ravel()])
    _check(f, dict(x=dx, h0=dh0, Wx=dWx, Wh=dWh, b=db, bhn=dbhn),
           dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b, bhn=bhn), dout)


def test_masked_padded_steps_get_no_gradient(rng):
    """A padded step neither changes the state nor lets gradient into its input."""
    x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    mask = _mask()
    h, c, cache = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
    assert np.array_equal(h[2:, 2], np.broadcast_to(h[1, 2], (T - 1, H)))  # length 1: frozen after step 0
    dx = lstm_backward(rng.standard_normal((T, N, H)), cache)[0]
    assert np.all(dx[1:, 2] == 0) and np.all(dx[3:, 1] == 0)
    assert np.any(dx[0, 2] != 0)


def test_embedding(rng):
    V = 7
    W = rng.standard_normal((V, D))
    idx = rng.integers(0, V, (T, N))
    dout = rng.standard_normal((T, N, D))
    _, cache = embedding_forward(idx, W)
    dW = embedding_backward(dout, cache)
    _check(lambda: embedding_forward(idx, W)[0], dict(W=dW), dict(W=W), dout)
    # the in-place version adds the same rows into an existing gradient (repeated indices included)
    assert len(np.unique(idx)) < idx.size
    g0 = rng.standard_normal((V, D))
    g = embedding_backward_into(g0.copy(), dout, cache)
    np.testing.assert_allclose(g, g0 + dW, rtol=1e-13, atol=1e-13)
    assert embedding_backward_into(g0.copy(), dout[:0], (idx[:0], V)).tolist() == g0.tolist()


def test_affine(rng):
    x, W, b = rng.standard_normal((T, N, D)), rng.standard_normal((D, H)), rng.standard_normal(H)
    dout = rng.standard_normal((T, N, H))
    _, cache = affine_forward(x, W, b)
    dx, dW, db = affine_backward(dout, cache)
    _check(lambda: affine_forward(x, W, b)[0], dict(x=dx, W=dW, b=db), dict(x=x, W=W, b=b), dout)


@pytest.mark.parametrize("masked", [False, True])
def test_softmax_cross_entropy(rng, masked):
    V = 5
    logits = rng.standard_normal((T, N, V))
    y = rng.integers(0, V, (T, N))
    mask = _mask() if masked else None
    loss, dlogits = softmax_cross_entropy(logits, y, mask)
    num = numerical_grad(lambda: np.array(softmax_cross_entropy(logits, y, mask)[0]), logits, 1.0)
    assert rel_error(num, dlogits) < TOL
    # mean over valid tokens only: a padded token's logits do not move the loss
    if masked:
        assert np.all(dlogits[~mask] == 0)
    assert loss > 0


@pytest.mark.parametrize("masked", [False, True])
def test_label_smoothing_gradient_and_torch(rng, masked):
    """Label smoothing 0.1: the gradient against central differences, the loss against torch's
    `cross_entropy(..., label_smoothing=0.1)` over the valid tokens."""
    torch = pytest.importorskip("torch")
    V = 6
    logits = rng.standard_normal((T, N, V))
    y = rng.integers(0, V, (T, N))
    mask = _mask() if masked else None
    loss, dlogits = softmax_cross_entropy(logits, y, mask, smoothing=0.1)
    f = lambda: np.array(softmax_cross_entropy(logits, y, mask, smoothing=0.1)[0])  # noqa: E731
    assert rel_error(numerical_grad(f, logits, 1.0), dlogits) < TOL
    keep = np.ones((T, N), bool) if mask is None else mask
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits[keep]), torch.from_numpy(y[keep]),
                                            label_smoothing=0.1)
    assert loss == pytest.approx(float(ref), rel=1e-12)
    with pytest.raises(ValueError, match="smoothing"):
        softmax_cross_entropy(logits, y, mask, smoothing=1.0)


def test_softmax_cross_entropy_value(rng):
    logits = np.log(np.array([[[0.25, 0.75]]]))
    loss, _ = softmax_cross_entropy(logits, np.array([[1]]))
    assert loss == pytest.approx(-np.log(0.75))


def test_dropout(rng):
    x = rng.standard_normal((T, N, D))
    dout = rng.standard_normal((T, N, D))
    out, cache = dropout_forward(x, 0.5, np.random.default_rng(0))
    assert np.all((out == 0) | np.isclose(out, 2 * x))
    dx = dropout_backward(dout, cache)
    num = numerical_grad(lambda: dropout_forward(x, 0.5, np.random.default_rng(0))[0], x, dout)
    assert rel_error(num, dx) < TOL
    same, _ = dropout_forward(x, 0.5, np.random.default_rng(0), training=False)
    assert same is x


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU, MinGRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_stack_gradients(rng, cls, bidirectional):
    """Two layers, dropout between them, variable lengths, a given initial state and final-state gradient."""
    layer = cls(D, H, num_layers=2, bidirectional=bidirectional, dropout=0.3, dtype=np.float64, seed=3)
    K = 2 if bidirectional else 1
    x = rng.standard_normal((T, N, D))
    mask = _mask()
    state = layer.init_state(N)
    state = tuple(rng.standard_normal(s.shape) for s in state) if isinstance(state, tuple) else \
        rng.standard_normal(state.shape)
    dout = rng.standard_normal((T, N, K * H)) * mask[:, :, None]
    dstate = tuple(rng.standard_normal(s.shape) for s in state) if isinstance(state, tuple) else \
        rng.standard_normal(state.shape)

    def run():
        layer.rng = np.random.default_rng(99)  # the same dropout mask at every call
        out, fin = layer.forward(x, state, mask)
        fins = fin if isinstance(fin, tuple) else (fin,)
        return np.concatenate([out.ravel()] + [s.ravel() for s in fins])

    run()
    layer.zero_grad()
    dx, dstate0 = layer.backward(dout, dstate)
    upstream = np.concatenate([dout.ravel()] + [s.ravel() for s in (dstate if isinstance(dstate, tuple)
                                                                      else (dstate,))])
    for name, p, g in layer.named_parameters():
        assert rel_error(numerical_grad(run, p, upstream), g) < TOL, name
    assert rel_error(numerical_grad(run, x, upstream), dx) < TOL
    s0 = state if isinstance(state, tuple) else (state,)
    d0 = dstate0 if isinstance(dstate0, tuple) else (dstate0,)
    for s, d in zip(s0, d0):
        assert rel_error(numerical_grad(run, s, upstream), d) < TOL


def test_embedding_linear_layers(rng):
    emb, lin = Embedding(7, D, dtype=np.float64), Linear(D, H, dtype=np.float64)
    idx = rng.integers(0, 7, (T, N))
    dout = rng.standard_normal((T, N, H))
    run = lambda: lin.forward(emb.forward(idx))  # noqa: E731
    run()
    emb.backward(lin.backward(dout))
    for layer in (emb, lin):
        for name, p, g in layer.named_parameters():
            assert rel_error(numerical_grad(run, p, dout), g) < TOL, name


def test_backward_accumulates(rng):
    """Backward adds into the gradients; zero_grad clears them."""
    layer = LSTM(D, H, dtype=np.float64)
    x = rng.standard_normal((T, N, D))
    dout = rng.standard_normal((T, N, H))
    layer.forward(x)
    layer.backward(dout)
    once = layer.grads["l0.Wx"].copy()
    layer.backward(dout)
    assert np.allclose(layer.grads["l0.Wx"], 2 * once)
    layer.zero_grad()
    assert not layer.grads["l0.Wx"].any()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru"])
def test_trace_records_every_state_gradient(rng, cell):
    """trace["dh"][t] is dL/dh_t: with a loss on the last output only, trace["dh"][0] is dh0 and
    trace["dh"][T] the upstream gradient; checked numerically at a middle step via h0 of a suffix run."""
    x, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    dh = np.zeros((T, N, H))
    dh[-1] = rng.standard_normal((N, H))
    trace = {}
    if cell == "rnn":
        Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
        h, cache = rnn_forward(x, h0, Wx, Wh, b)
        dh0 = rnn_backward(dh, cache, trace=trace)[1]
        suffix = lambda: rnn_forward(x[2:], hmid, Wx, Wh, b)[0][-1]  # noqa: E731
    elif cell == "lstm":
        c0 = rng.standard_normal((N, H))
        Wx, Wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
        h, c, cache = lstm_forward(x, h0, c0, Wx, Wh, b)
        dh0 = lstm_backward(dh, cache, trace=trace)[1]
        cmid = c[2].copy()
        suffix = lambda: lstm_forward(x[2:], hmid, cmid, Wx, Wh, b)[0][-1]  # noqa: E731
    elif cell == "mingru":
        Wx, b = rng.standard_normal((D, 2 * H)), rng.standard_normal(2 * H)
        h, cache = mingru_forward(x, h0, Wx, b)
        dh0 = mingru_backward(dh, cache, trace=trace)[1]
        suffix = lambda: mingru_forward(x[2:], hmid, Wx, b)[0][-1]  # noqa: E731
    else:
        Wx, Wh = rng.standard_normal((D, 3 * H)), rng.standard_normal((H, 3 * H))
        b, bhn = rng.standard_normal(3 * H), rng.standard_normal(H)
        h, cache = gru_forward(x, h0, Wx, Wh, b, bhn)
        dh0 = gru_backward(dh, cache, trace=trace)[1]
        suffix = lambda: gru_forward(x[2:], hmid, Wx, Wh, b, bhn)[0][-1]  # noqa: E731
    assert trace["dh"].shape == (T + 1, N, H)
    assert np.allclose(trace["dh"][0], dh0) and np.allclose(trace["dh"][T], dh[-1])
    hmid = h[2].copy()
    assert rel_error(numerical_grad(suffix, hmid, dh[-1]), trace["dh"][2]) < TOL
