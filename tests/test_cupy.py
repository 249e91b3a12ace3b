"""The math runs on CuPy arrays unchanged: each `*_forward` / `*_backward` pair, given CuPy inputs,
returns CuPy arrays equal to what NumPy gives for the same float64 inputs. Runs only where CuPy and a GPU are
present (skipped elsewhere, CI included); the device check of docs/DEVELOPING.md runs it on a GPU."""

import numpy as np
import pytest

from rnnkit.cells.gru import gru_backward, gru_forward, gru_recompute
from rnnkit.cells.lstm import lstm_backward, lstm_forward, lstm_recompute
from rnnkit.cells.rnn import rnn_backward, rnn_forward
from rnnkit.functional import (
    affine_backward,
    affine_forward,
    bag_mean_backward_into,
    bag_mean_forward,
    channel_norm_backward,
    channel_norm_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_backward_into,
    embedding_forward,
    feature_norm_backward,
    feature_norm_forward,
    image_attention_backward,
    image_attention_forward,
    log_softmax,
    logsumexp,
    mse_backward,
    mse_forward,
    pool_backward,
    pool_forward,
    sat_context_backward,
    sat_context_forward,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_loss_only,
)
from rnnkit.functional.attention import attention_backward, attention_forward, attention_params
from rnnkit.functional.conv import conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward

cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("CuPy finds no GPU", allow_module_level=True)
except cp.cuda.runtime.CUDARuntimeError:  # no driver
    pytest.skip("CuPy finds no GPU driver", allow_module_level=True)

T, N, D, H, V = 6, 3, 4, 5, 7
LENGTHS = np.array([6, 4, 1])


def _flat(out):
    """Every array in a (nested) result, in order."""
    if isinstance(out, dict):
        return [a for k in sorted(out) for a in _flat(out[k])]
    if isinstance(out, (tuple, list)):
        return [a for x in out for a in _flat(x)]
    return [out] if hasattr(out, "shape") else []


def on_both(run, *arrays):
    """run(xp, *arrays) with NumPy arrays and with their CuPy copies: every CuPy result is a CuPy array
    (nothing fell back to the host) and equals the NumPy one."""
    ref = _flat(run(np, *arrays))
    got = _flat(run(cp, *[cp.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays]))
    assert len(got) == len(ref) and ref
    for r, g in zip(ref, got):
        assert isinstance(g, cp.ndarray), type(g)
        np.testing.assert_allclose(cp.asnumpy(g), r, rtol=1e-10, atol=1e-12)


def _mask():
    return np.arange(T)[:, None] < LENGTHS[None, :]


def _cell_arrays(rng, cell):
    """x, h0, c0, Wx, Wh, b, bhn, dh, mask for one cell kind (float64)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    Wx, Wh = 0.5 * rng.standard_normal((D, G * H)), 0.5 * rng.standard_normal((H, G * H))
    b, bhn, dh = rng.standard_normal(G * H), rng.standard_normal(H), rng.standard_normal((T, N, H))
    return x, h0, c0, Wx, Wh, b, bhn, dh, _mask()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_forward_backward(rng, cell):
    arrays = _cell_arrays(rng, cell)

    def run(xp, x, h0, c0, Wx, Wh, b, bhn, dh, mask):
        dh = dh * mask[:, :, None]
        if cell == "rnn":
            h, cache = rnn_forward(x, h0, Wx, Wh, b, mask)
            return h, rnn_backward(dh, cache)
        if cell == "lstm":
            h, c, cache = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
            return h, c, lstm_backward(dh, cache)
        h, cache = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
        return h, gru_backward(dh, cache)

    on_both(run, *arrays)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recompute_segments(rng, cell):
    """Exact BPTT in bounded memory as a layer runs it: each segment's cache rebuilt from the hidden
    states (products accumulated by `kernels.matmul(accumulate=True)`), then back-propagated with the
    weight gradients summed across segments (`into=`)."""
    arrays = _cell_arrays(rng, cell)

    def run(xp, x, h0, c0, Wx, Wh, b, bhn, dh, mask):
        dh = dh * mask[:, :, None]
        if cell == "lstm":
            h, c, _ = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
        else:
            h, _ = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
        dx, acc, dstate, out = xp.empty_like(x), {}, (None, None), []
        for t0, t1 in ((3, T), (0, 3)):  # the last segment first
            m, dy = mask[t0:t1], xp.ascontiguousarray(dh[t0:t1])
            if cell == "lstm":
                seg = lstm_recompute(x[t0:t1], h[t0:t1 + 1], c[t0], Wx, Wh, b, m)
                res = lstm_backward(dy, seg, *dstate, into=(dx[t0:t1], acc))
                dstate = res[1:3]
            else:
                seg = gru_recompute(x[t0:t1], h[t0:t1 + 1], Wx, Wh, b, bhn, m)
                res = gru_backward(dy, seg, dstate[0], into=(dx[t0:t1], acc))
                dstate = (res[1], None)
            out.append(seg.gates)
        return out, dx, res[1:]

    on_both(run, *arrays)


def test_embedding_affine_softmax_dropout(rng):
    idx = rng.integers(0, V, (T, N))
    W, A, bias = rng.standard_normal((V, D)), rng.standard_normal((D, V)), rng.standard_normal(V)
    dout, y, mask = rng.standard_normal((T, N, D)), rng.integers(0, V, (T, N)), _mask()

    def run(xp, idx, W, A, bias, dout, y, mask):
        e, cache = embedding_forward(idx, W)
        dW = embedding_backward(dout, cache)
        dW2 = embedding_backward_into(xp.ones_like(W), dout, cache)
        logits, acache = affine_forward(e, A, bias)
        loss, dlogits = softmax_cross_entropy(logits, y, mask)
        smoothed, dsmoothed = softmax_cross_entropy(logits, y, mask, smoothing=0.1)
        dropped, dcache = dropout_forward(e, 0.3, np.random.default_rng(1))
        return e, dW, dW2, logits, xp.asarray(loss), dlogits, xp.asarray(smoothed), dsmoothed, \
            affine_backward(dlogits, acache), dropped, dropout_backward(dout, dcache)

    on_both(run, idx, W, A, bias, dout, y, mask)


def test_bag_mean(rng):
    W = rng.standard_normal((20, D))
    grams, offsets = rng.integers(0, 20, 17), np.array([0, 3, 4, 9, 16])
    dout = rng.standard_normal((5, D))

    def run(xp, W, grams, offsets, dout):
        out, cache = bag_mean_forward(grams, offsets, W)
        return out, bag_mean_backward_into(xp.zeros_like(W), dout, cache)

    on_both(run, W, grams, offsets, dout)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention(rng, kind):
    S = 5
    q, keys = rng.standard_normal((T, N, H)), rng.standard_normal((S, N, H))
    mask = np.arange(S)[:, None] < np.array([5, 2, 4])[None, :]
    p = attention_params(kind, H, H, A=4, rng=rng, dtype=np.float64)
    dctx, dalpha = rng.standard_normal((T, N, H)), rng.standard_normal((T, N, S))

    def run(xp, q, keys, mask, dctx, dalpha, *weights):
        params = dict(zip(sorted(p), weights))
        ctx, alpha, cache = attention_forward(q, keys, mask, kind, params)
        return ctx, alpha, attention_backward(dctx, cache, dalpha)

    on_both(run, q, keys, mask, dctx, dalpha, *[p[k] for k in sorted(p)])


def test_losses_and_softmax(rng):
    logits, y = rng.standard_normal((T, N, V)), rng.integers(0, V, (T, N))
    pred, target = rng.standard_normal(N), rng.standard_normal(N)

    def run(xp, logits, y, pred, target):
        loss, cache = mse_forward(pred, target)
        only, _ = softmax_cross_entropy_loss_only(logits, y)
        return softmax(logits), log_softmax(logits, axis=0), logsumexp(logits), xp.asarray(only), \
            xp.asarray(loss), mse_backward(cache, 0.5)

    on_both(run, logits, y, pred, target)


def test_image_attention_and_norms(rng):
    L, C = 4, 3
    q, A = rng.standard_normal((T, N, H)), rng.standard_normal((N, L, C))
    Wa, Wc, bc = rng.standard_normal((C, H)), rng.standard_normal((H + C, H)), rng.standard_normal(H)
    dz, dctx, v = rng.standard_normal((T, N, H)), rng.standard_normal((N, C)), rng.standard_normal((N, D))

    def run(xp, q, A, Wa, Wc, bc, dz, dctx, v):
        z, alpha, cache = image_attention_forward(q, A, Wa, Wc, bc)
        ctx, scache = sat_context_forward(q[0], A, A @ Wa)
        An, ncache = channel_norm_forward(A)
        vn, fcache = feature_norm_forward(v)
        return z, alpha, image_attention_backward(dz, cache), ctx, sat_context_backward(dctx, scache), \
            An, channel_norm_backward(A, ncache), vn, feature_norm_backward(v, fcache)

    on_both(run, q, A, Wa, Wc, bc, dz, dctx, v)


@pytest.mark.parametrize("mode", ["last", "mean", "max"])
def test_pooling(rng, mode):
    out, dfeat = rng.standard_normal((T, N, 2 * H)), rng.standard_normal((N, 2 * H))

    def run(xp, out, mask, dfeat):
        feat, cache = pool_forward(out, mask, mode, 2)
        return feat, pool_backward(dfeat, cache)

    on_both(run, out, _mask(), dfeat)


def test_conv_and_pool(rng):
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    dout = rng.standard_normal((2, 4, 4, 4))

    def run(xp, x, w, b, dout):
        y, cache = conv2d_forward(x, w, b, stride=1, pad=1)
        p, pcache = maxpool2d_forward(y, 2)
        return y, p, conv2d_backward(maxpool2d_backward(dout, pcache), cache)

    on_both(run, x, w, b, dout)
