"""RWKV-7 against its references on identical float64 weights: outputs, final states and every
gradient of a two-layer stack (an input projection, the value residual, a non-zero initial state)
against the PyTorch re-implementation of the reference model (tests/torch_rwkv7.py, autograd); the
one-step mode against the NumPy re-implementation of rwkv_v7_numpy.py's RNN mode
(tests/rwkv7_rnn_numpy.py); the initial values against model.py's formulas."""

from __future__ import annotations

import numpy as np
import pytest

import rwkv7_rnn_numpy as rnn_ref
from gradcheck import rel_error
from rnnkit.cells import rwkv7 as R
from rnnkit.layers.recurrent import make_recurrent

torch = pytest.importorskip("torch")
import torch_rwkv7 as ref  # noqa: E402  (needs torch)

B, T, D, C, HS, L = 2, 7, 6, 16, 8, 2  # batch, steps, input size, channels, head size, layers


def _setup(seed=0):
    ps = [ref.random_params(C, HS, D=D if k == 0 else None, seed=seed + k) for k in range(L)]
    rnn = make_recurrent("rwkv", D, C, num_layers=L, dtype=np.float64, head_size=HS)
    for k, p in enumerate(ps):
        assert set(p) == set(rnn.layer_params(k)), "one parameter set, one naming"
        for name, v in p.items():
            rnn.params[f"l{k}.{name}"][...] = v
    rng = np.random.default_rng(seed + 10)
    x = rng.normal(size=(B, T, D))
    states = [tuple(rng.normal(0, 0.5, s.shape) for s in rnn_ref.zero_state(B, C, HS)) for _ in ps]
    return ps, rnn, x, states, rng


def _stacked(states):
    """Per-layer (tshift, wkv, cshift) as rnnkit's (L, ...) parts."""
    return tuple(np.stack([s[j] for s in states]) for j in range(3))


def test_stack_matches_pytorch_autograd():
    ps, rnn, x, states, rng = _setup()
    dout = rng.normal(size=(B, T, C))
    dfinal = [tuple(rng.normal(size=s.shape) for s in st) for st in states]

    tp = [ref.torch_params(p) for p in ps]
    tx = torch.tensor(x, requires_grad=True)
    tst = [tuple(torch.tensor(s, requires_grad=True) for s in st) for st in states]
    h, v_first, finals = tx, None, []
    for k in range(L):
        h, v_first, fin = ref.block(h, tp[k], v_first, k, HS, tst[k])
        finals.append(fin)
    loss = (h * torch.tensor(dout)).sum() + sum(
        (f * torch.tensor(d)).sum() for fin, dfin in zip(finals, dfinal) for f, d in zip(fin, dfin))
    loss.backward()

    y, final = rnn.forward(x.transpose(1, 0, 2).copy(), _stacked(states))
    rnn.zero_grad()
    dx, dstate = rnn.backward(dout.transpose(1, 0, 2).copy(), _stacked(dfinal))

    assert rel_error(y.transpose(1, 0, 2), h.detach().numpy()) < 1e-12
    for j in range(3):
        assert rel_error(final[j], np.stack([f[j].detach().numpy() for f in finals])) < 1e-12
    assert rel_error(dx.transpose(1, 0, 2), tx.grad.numpy()) < 1e-10
    for j in range(3):
        assert rel_error(dstate[j], np.stack([s[j].grad.numpy() for s in tst])) < 1e-10, j
    for k in range(L):
        for name, t in tp[k].items():
            g = rnn.grads[f"l{k}.{name}"]
            if t.grad is None:  # layer 0's value-residual LoRA: not on any path
                assert k == 0 and name in ("v0", "v1", "v2") and not np.any(g)
                continue
            assert rel_error(g, t.grad.numpy()) < 1e-10, f"l{k}.{name}"


def test_padded_batch_matches_pytorch_on_each_sequence():
    """A mask of variable lengths: each sequence's outputs and final state are PyTorch's on that
    sequence alone."""
    ps, rnn, x, states, _ = _setup(seed=3)
    lengths = [T, 4]
    mask = np.arange(T)[:, None] < np.array(lengths)[None, :]
    y, final = rnn.forward(x.transpose(1, 0, 2).copy(), _stacked(states), mask)
    tp = [ref.torch_params(p, requires_grad=False) for p in ps]
    for n, Ln in enumerate(lengths):
        h, v_first = torch.tensor(x[n:n + 1, :Ln]), None
        for k in range(L):
            st = tuple(torch.tensor(s[n:n + 1]) for s in states[k])
            h, v_first, fin = ref.block(h, tp[k], v_first, k, HS, st)
            for j in range(3):
                assert rel_error(final[j][k, n:n + 1], fin[j].numpy()) < 1e-12
        assert rel_error(y[:Ln, n], h[0].numpy()) < 1e-12


def test_step_matches_the_numpy_rnn_mode():
    """rnnkit's compiled one-token block through both layers against rwkv_v7_numpy.py's RNN mode."""
    ps, rnn, x, states, _ = _setup(seed=5)
    ref_out, ref_states = rnn_ref.run(x.transpose(1, 0, 2), ps, HS, [tuple(s) for s in states])
    s = _stacked(states)
    for t in range(T):
        yt, s = rnn.step(x[:, t], s)
        assert rel_error(yt, ref_out[t]) < 1e-12
    for j in range(3):
        assert rel_error(s[j], np.stack([st[j] for st in ref_states])) < 1e-12


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_initial_values_are_model_py_formulas(layer):
    """The deterministic initial values (mixes, decay and rate biases, k_k, k_a, r_k, norms and the
    zero matrices) as model.py computes them; the random ones at the reference's scales."""
    M, hs, layers = 64, 16, 4
    mine = R.init_params7(np.random.default_rng(0), M, M, hs, R.lora_ranks(M), layer, layers)
    theirs = ref.init_params(M, hs, layer, layers, seed=0)
    assert set(mine) == set(theirs)
    for name, v in theirs.items():
        assert mine[name].shape == v.shape, name
        if name in ("Wr", "Wk", "Wv", "Wck", "w2", "a2", "v2", "g2"):
            assert np.isclose(np.abs(mine[name]).max(), np.abs(v).max(), rtol=0.5), name
        else:
            np.testing.assert_allclose(mine[name], v, rtol=1e-12, atol=1e-15, err_msg=name)
