"""The RWKV-7 cell in a stack (rnnkit.RWKV7, `--cell rwkv`): gradients through two layers (the first
layer's values reaching the second through the value residual) against central differences; one-step
mode against the whole sequence; a padded batch against its sequences one by one; the compiled WKV loop
on threads; chunk sizes; the reference's initial values; what the stack refuses."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import cells
from rnnkit.cells import rwkv7 as R
from rnnkit.layers.recurrent import make_recurrent

T, N, D, H = 6, 3, 5, 8  # H channels: two heads of 4


def _stack(layers=2, dtype=np.float64, seed=0, **options):
    rnn = make_recurrent("rwkv", D, H, num_layers=layers, dtype=dtype, seed=seed,
                         head_size=4, **options)
    rng = np.random.default_rng(seed + 1)
    for name, v in rnn.params.items():  # the reference's zeros (Wo, Wcv, LoRAs) would hide paths
        v[...] = rng.normal(0, 0.4, v.shape)
    return rnn


def test_stack_gradients():
    """Both layers, every parameter, the input and every part of the initial state, with a gradient on
    the final state: the value residual's path from layer 0's Wv into layer 1 included."""
    rnn = _stack()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(T, N, D))
    state0 = tuple(rng.normal(0, 0.5, s.shape) for s in rnn.init_state(N))
    dout = rng.normal(size=(T, N, H))
    dfinal = tuple(rng.normal(size=s.shape) for s in state0)

    def f():
        y, st = rnn.forward(x, state0)
        return np.array(np.sum(y * dout) + sum(np.sum(a * b) for a, b in zip(st, dfinal)))

    f()
    for g in rnn.grads.values():
        g[...] = 0
    dx, dstate = rnn.backward(dout, dfinal)
    one = np.array(1.0)
    assert rel_error(numerical_grad(f, x, one), dx) < 1e-6
    for s, ds in zip(state0, dstate):
        assert rel_error(numerical_grad(f, s, one), ds) < 1e-6
    for name in ("l0.Wv", "l0.W_in", "l0.mu_v", "l1.v1", "l1.v0", "l1.w1", "l0.a2", "l1.Wck", "l0.r_k",
                 "l1.lnx_w", "l0.k_k"):
        num = numerical_grad(f, rnn.params[name], one)
        assert rel_error(num, rnn.grads[name]) < 1e-6, name


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_step_equals_forward(dtype, tol):
    rnn = _stack(dtype=dtype)
    x = np.random.default_rng(3).normal(size=(T, N, D)).astype(dtype)
    y, final = rnn.forward(x)
    s, ys = rnn.init_state(N), []
    for t in range(T):
        yt, s = rnn.step(x[t], s)
        ys.append(yt)
    assert np.abs(np.stack(ys) - y).max() < tol * max(1, np.abs(y).max())
    for a, b in zip(s, final):
        assert np.abs(a - b).max() < tol * max(1, np.abs(b).max())


def test_padded_batch_equals_each_sequence():
    """A mask of variable lengths: each sequence's outputs and final state as if run alone, and no
    gradient from past its end."""
    rnn = _stack()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(T, N, D))
    lengths = [T, 2, 4]
    mask = np.arange(T)[:, None] < np.array(lengths)[None, :]
    y, final = rnn.forward(x, mask=mask)
    for n, L in enumerate(lengths):
        yn, fn = rnn.forward(x[:L, n:n + 1])
        assert np.allclose(y[:L, n:n + 1], yn, atol=1e-12)
        for a, b in zip(final, fn):
            assert np.allclose(a[:, n:n + 1], b, atol=1e-12)
    dout = rng.normal(size=y.shape)
    rnn.forward(x, mask=mask)
    dx, _ = rnn.backward(dout)
    dx_clean = dx.copy()
    noisy = dout.copy()
    noisy[~mask] = 1e3  # a loss never reads a padded output: its gradient there is ignored
    rnn.forward(x, mask=mask)
    dx2, _ = rnn.backward(noisy)
    assert np.allclose(dx2, dx_clean, atol=1e-12)
    assert not np.any(dx_clean[~mask])


def test_threads_and_chunks_agree(three_threads):
    """The WKV loop's streams cut across three threads, and kept states every 1, 4 or 16 steps: the
    same outputs and gradients."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(T, N, D))
    dout = rng.normal(size=(T, N, H))
    results = []
    for chunk in (1, 4, 16):
        rnn = _stack(chunk=chunk)
        y, _ = rnn.forward(x)
        dx, _ = rnn.backward(dout)
        results.append((y, dx, rnn.grads["l0.Wk"].copy()))
    assert three_threads and max(three_threads) == 3
    for y, dx, g in results[1:]:
        assert np.allclose(y, results[0][0], atol=1e-12)
        assert np.allclose(dx, results[0][1], atol=1e-12)
        assert np.allclose(g, results[0][2], atol=1e-12)


def test_reference_initialisation():
    """The reference's values: each block starts as the identity (Wo = Wcv = 0), decays in (0.545, 1),
    token-shift mixes in [0, 1], LoRA ranks max(32, round(s sqrt(M) / 32) * 32)."""
    rnn = make_recurrent("rwkv", 64, 64, num_layers=3, seed=0)
    assert R.lora_ranks(64) == (32, 32, 32, 32) and R.lora_ranks(1024) == (64, 64, 64, 160)  # round(2.5): 2
    for k in range(3):
        p = rnn.layer_params(k)
        assert not np.any(p["Wo"]) and not np.any(p["Wcv"]) and not np.any(p["w1"])
        for m in R.MIXES:
            assert np.all((p[f"mu_{m}"] >= 0) & (p[f"mu_{m}"] <= 1))
        assert np.allclose(p["w2"] @ p["w2"].T, 0.01 * np.eye(32), atol=1e-6)  # orthogonal * 0.1
    x = np.random.default_rng(0).normal(size=(4, 2, 64)).astype(np.float32)
    rnn.forward(x)
    w = rnn._caches[1][0].w
    assert w.min() > np.exp(-np.exp(-0.5)) and w.max() < 1
    y, _ = rnn.forward(x)
    assert np.allclose(y, x)  # the identity at initialisation


def test_bidirectional_gradients():
    """Two directions, each with its own first layer's values passed up: the reverse direction's in
    its own (reversed) time order."""
    rnn = make_recurrent("rwkv", D, H, num_layers=2, bidirectional=True, dtype=np.float64,
                         head_size=4)
    rng = np.random.default_rng(6)
    for v in rnn.params.values():
        v[...] = rng.normal(0, 0.4, v.shape)
    x = rng.normal(size=(4, 2, D))
    mask = np.arange(4)[:, None] < np.array([4, 3])[None, :]
    dout = rng.normal(size=(4, 2, 2 * H)) * mask[:, :, None]

    def f():
        return np.array(np.sum(rnn.forward(x, mask=mask)[0] * dout))

    f()
    dx, _ = rnn.backward(dout)
    one = np.array(1.0)
    assert rel_error(numerical_grad(f, x, one), dx) < 1e-6
    for name in ("l0_reverse.Wv", "l1_reverse.v1", "l0.Wv"):
        assert rel_error(numerical_grad(f, rnn.params[name], one), rnn.grads[name]) < 1e-6, name


def test_refusals():
    rnn = make_recurrent("rwkv", D, H)
    with pytest.raises(ValueError, match="head size 3"):
        make_recurrent("rwkv", D, H, head_size=3)
    with pytest.raises(ValueError, match="x_gates"):
        rnn.step(None, x_gates=np.zeros((1, H), dtype=np.float32))
    assert "rwkv" in cells.names()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_compiled_step_gives_the_reference(dtype, tol, three_threads):
    """rwkv7.c's one-token block (the rows on three threads) against its NumPy reference, through
    both layers (an input projection in the first, the value residual in the second)."""
    from rnnkit import kernels

    rnn = _stack(dtype=dtype)
    rng = np.random.default_rng(7)
    state = tuple(rng.normal(0, 0.5, s.shape).astype(dtype) for s in rnn.init_state(N))
    x = rng.normal(size=(N, D)).astype(dtype)
    before = [a.copy() for a in state]
    y, s = rnn.step(x, state)
    assert all(np.array_equal(a, b) for a, b in zip(state, before))  # the given state is not modified
    assert three_threads and max(three_threads) == 3
    with kernels.reference():
        y_ref, s_ref = rnn.step(x, state)
    assert rel_error(y, y_ref) < tol
    for a, b in zip(s, s_ref):
        assert rel_error(a, b) < tol
