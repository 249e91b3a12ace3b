"""A cell added from outside the package (examples/indrnn/indrnn.py, docs/ADDING_A_CELL.md): IndRNN's
hand-written BPTT checked numerically and against PyTorch autograd, its compiled loops against their
NumPy references, and everything the registry gives it without a line of its own: the stacked
bidirectional layer with dropout and masks, recompute, one-step inference, diagnostics, the character
LM trained and sampled, and the command line finding it through RNNKIT_CELLS.

The example is imported as a user's plugin is, through RNNKIT_CELLS, once per process: a later plugin
load in this process finds it imported and does not register a second class as "indrnn".
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from gradcheck import numerical_grad, rel_error
from rnnkit import cells, kernels
from rnnkit.diagnostics import activations, gate_stats, gradient_flow, run_layers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "indrnn" / "indrnn.py"


def _import_example():
    """The example imported as a user's plugin is: through RNNKIT_CELLS (registers "indrnn")."""
    old = os.environ.get("RNNKIT_CELLS")
    os.environ["RNNKIT_CELLS"] = str(EXAMPLE)
    try:
        cells.load_plugins()
    finally:
        if old is None:
            del os.environ["RNNKIT_CELLS"]
        else:
            os.environ["RNNKIT_CELLS"] = old
    return sys.modules[cells.plugin_module_name(EXAMPLE)]


indrnn = _import_example()
compiled_only = pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")

T, N, D, H = 6, 3, 4, 5


def _mask(T=T, lengths=(6, 3, 1)):
    return np.arange(T)[:, None] < np.array(lengths)[None, :]


def _arrays(rng, dtype=np.float64, shape=(T, N, D, H)):
    T_, N_, D_, H_ = shape
    x = rng.standard_normal((T_, N_, D_))
    h0 = rng.standard_normal((N_, H_))
    Wx = rng.standard_normal((D_, H_)) * 0.5
    u = rng.uniform(-1.2, 1.2, H_)  # both signs, some beyond 1: the math must not rely on the init
    b = rng.standard_normal(H_) * 0.3
    return tuple(a.astype(dtype) for a in (x, h0, Wx, u, b))


def test_registered_and_built_by_name():
    assert "indrnn" in cells.names()
    cell = cells.create("indrnn")
    assert isinstance(cell, indrnn.IndRNNCell) and cell.u_max == 1.0
    layer = rnnkit.make_recurrent("indrnn", D, H, num_layers=2, bidirectional=True, seed=1)
    assert type(layer) is rnnkit.layer_class("indrnn") and type(layer).__name__ == "IndRNN"
    assert sorted(layer.params) == sorted(f"{pre}.{p}" for pre in ("l0", "l0_reverse", "l1", "l1_reverse")
                                          for p in ("Wx", "u", "b"))
    assert layer.params["l1.Wx"].shape == (2 * H, H) and layer.params["l1.u"].shape == (H,)
    u = layer.params["l0.u"]
    assert np.all((u > 0) & (u < 1)) and np.all(layer.params["l0.b"] == 0)  # the paper's init
    with pytest.raises(ValueError, match="u_max must be positive"):
        cells.create("indrnn", u_max=0)
    with pytest.raises(ValueError, match="cell 'indrnn' has no option forget_bias"):
        cells.create("indrnn", forget_bias=1.0)


@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_match_numerical(rng, masked):
    x, h0, Wx, u, b = _arrays(rng)
    mask = _mask() if masked else None
    dh, dhT = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    if masked:
        dh = dh * mask[:, :, None]  # the loss never reads padded outputs

    def f():
        h, _ = indrnn.indrnn_forward(x, h0, Wx, u, b, mask)
        return np.concatenate([h[1:].ravel(), h[-1].ravel()])

    h, cache = indrnn.indrnn_forward(x, h0, Wx, u, b, mask)
    trace = {}
    dx, dh0, dWx, du, db = indrnn.indrnn_backward(dh, cache, dhT, trace)
    dout = np.concatenate([dh.ravel(), dhT.ravel()])
    for name, arr, grad in (("x", x, dx), ("h0", h0, dh0), ("Wx", Wx, dWx), ("u", u, du), ("b", b, db)):
        assert rel_error(numerical_grad(f, arr, dout), grad) < 1e-6, name
    assert trace["dh"].shape == (T + 1, N, H)
    np.testing.assert_array_equal(trace["dh"][0], dh0)
    np.testing.assert_array_equal(trace["dh"][T], dh[T - 1] + dhT)


def test_padded_steps_carry_the_state_and_get_no_gradient(rng):
    x, h0, Wx, u, b = _arrays(rng)
    mask = _mask()
    h, cache = indrnn.indrnn_forward(x, h0, Wx, u, b, mask)
    assert np.array_equal(h[2:, 2], np.broadcast_to(h[1, 2], (T - 1, H)))  # one valid step, then carried
    assert np.array_equal(h[4:, 1], np.broadcast_to(h[3, 1], (T - 3, H)))
    dh = rng.standard_normal((T, N, H))  # nonzero at padded steps too: they must be ignored
    dx, dh0, *_ = indrnn.indrnn_backward(dh, cache)
    assert np.all(dx[~mask] == 0)
    dx2, dh02, *_ = indrnn.indrnn_backward(dh * mask[:, :, None], cache)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dh0, dh02)


def test_bad_arguments_name_what_was_expected(rng):
    x, h0, Wx, u, b = _arrays(rng)
    with pytest.raises(ValueError, match=r"Wx has shape \(4, 5\), expected \(D=4, H=3\)"):
        indrnn.indrnn_forward(x, h0[:, :3], Wx, u[:3], b[:3])
    with pytest.raises(ValueError, match=r"b has shape \(4,\), expected \(H=5\)"):
        indrnn.indrnn_forward(x, h0, Wx, u, b[:4])
    with pytest.raises(ValueError, match="x contains NaN"):
        indrnn.indrnn_forward(np.full_like(x, np.nan), h0, Wx, u, b)


def test_matches_torch_autograd(rng):
    """IndRNN written in a few lines of PyTorch, autograd for its gradients, the same float64 weights."""
    torch = pytest.importorskip("torch")
    x, h0, Wx, u, b = _arrays(rng)
    mask = _mask()
    dh, dhT = rng.standard_normal((T, N, H)) * mask[:, :, None], rng.standard_normal((N, H))
    h, cache = indrnn.indrnn_forward(x, h0, Wx, u, b, mask)
    dx, dh0, dWx, du, db = indrnn.indrnn_backward(dh, cache, dhT)

    tx, th0, tW, tu, tb = (torch.tensor(a, requires_grad=True) for a in (x, h0, Wx, u, b))
    tm = torch.tensor(mask)
    ht, outs = th0, []
    for t in range(T):
        new = torch.relu(tx[t] @ tW + tu * ht + tb)
        ht = torch.where(tm[t][:, None], new, ht)
        outs.append(ht)
    out = torch.stack(outs)
    ((out * torch.tensor(dh)).sum() + (ht * torch.tensor(dhT)).sum()).backward()
    assert rel_error(h[1:], out.detach().numpy()) < 1e-13
    for name, ours, theirs in (("x", dx, tx), ("h0", dh0, th0), ("Wx", dWx, tW), ("u", du, tu),
                               ("b", db, tb)):
        assert rel_error(ours, theirs.grad.numpy()) < 1e-12, name


def _run_functional(rng, dtype, masked, shape):
    """Forward and traced backward of the functional pair: every array they produce."""
    T_, N_, D_, H_ = shape
    x, h0, Wx, u, b = _arrays(rng, dtype, shape)
    mask = _mask(T_, rng.integers(0, T_ + 1, N_)) if masked else None
    dh = rng.standard_normal((T_, N_, H_)).astype(dtype)
    dhT = rng.standard_normal((N_, H_)).astype(dtype)
    h, cache = indrnn.indrnn_forward(x, h0, Wx, u, b, mask)
    trace = {}
    grads = indrnn.indrnn_backward(dh, cache, dhT, trace)
    return (h, *grads, trace["dh"])


@compiled_only
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
def test_compiled_loops_equal_their_references(dtype, tol, masked, three_threads):
    """indrnn.c against the NumPy loops, float32 and float64, with and without masks; the batch rows
    cut into three uneven ranges run on worker threads, whatever this machine has."""
    T_, N_, H_ = 7, 19, 36
    h = np.zeros((T_ + 1, N_, H_), dtype=dtype)
    u = np.ones(H_, dtype=dtype)
    mask = _mask(T_, np.arange(N_) % (T_ + 1)) if masked else None
    fw = dict(T=T_, N=N_, H=H_, h=h, u=u, mask=mask)
    bw = dict(T=T_, N=N_, H=H_, dh=h[1:], h=h, u=u, mask=mask, dh_prev=h[0].copy(), da=h[1:].copy(),
              trace_dh=None)
    assert indrnn.INDRNN_FW.compiled(fw) is not None  # the compiled path really runs these
    assert indrnn.INDRNN_BW.compiled(bw) is not None
    with kernels.reference():
        assert indrnn.INDRNN_FW.compiled(fw) is None

    split_calls = three_threads
    shape = (T_, N_, 8, H_)
    fast = _run_functional(np.random.default_rng(4), dtype, masked, shape)
    assert split_calls == [3, 3]  # forward and backward each ran as three row ranges
    with kernels.reference():
        ref = _run_functional(np.random.default_rng(4), dtype, masked, shape)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape, i
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


def _state(layer, rng):
    return rng.standard_normal(layer.init_state(N).shape)


def test_stacked_bidirectional_layer_with_dropout_and_masks_matches_numerical(rng):
    layer = rnnkit.make_recurrent("indrnn", D, H, num_layers=2, bidirectional=True, dropout=0.3,
                                  dtype=np.float64, seed=3)
    x = rng.standard_normal((T, N, D))
    mask = _mask()
    state, dstate = _state(layer, rng), _state(layer, rng)
    dout = rng.standard_normal((T, N, 2 * H)) * mask[:, :, None]

    def run():
        layer.rng = np.random.default_rng(99)  # the same dropout mask at every call
        out, fin = layer.forward(x, state, mask)
        return np.concatenate([out.ravel(), fin.ravel()])

    run()
    layer.zero_grad()
    dx, dstate0 = layer.backward(dout, dstate)
    upstream = np.concatenate([dout.ravel(), dstate.ravel()])
    for name, p, g in layer.named_parameters():
        assert rel_error(numerical_grad(run, p, upstream), g) < 1e-6, name
    assert rel_error(numerical_grad(run, x, upstream), dx) < 1e-6
    assert rel_error(numerical_grad(run, state, upstream), dstate0) < 1e-6


def _train_step(layer, x, state, mask, dout, dstate):
    out, fin = layer.forward(x, state, mask)
    layer.zero_grad()
    dx, ds0 = layer.backward(dout, dstate)
    return [out, fin, dx, ds0] + [g.copy() for _, _, g in layer.named_parameters()]


@pytest.mark.parametrize("recompute", [2, "sqrt"])
@pytest.mark.parametrize("split", [False, True])
def test_recompute_gives_the_gradients_of_plain_bptt(rng, recompute, split, monkeypatch):
    """IndRNN declares no `recompute`: the layer keeps each segment's starting state and runs forward
    again in backward; the same outputs and gradients as plain BPTT (split: the batch rows cut into
    parts, each running all its segments on one thread)."""
    if split:
        monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 0)
        monkeypatch.setattr(kernels.pool, "SPLIT_MIN_ROWS", 1)
        monkeypatch.setattr(kernels.pool, "threads", lambda: 3)
    T_, N_ = 11, 7 if split else N
    x = rng.standard_normal((T_, N_, D))
    mask = _mask(T_, np.arange(N_) * 5 % (T_ + 1))
    kw = dict(num_layers=2, bidirectional=True, dtype=np.float64, seed=3)
    plain = rnnkit.make_recurrent("indrnn", D, H, **kw)
    ckpt = rnnkit.make_recurrent("indrnn", D, H, recompute=recompute, **kw)
    state = rng.standard_normal(plain.init_state(N_).shape)
    dstate = rng.standard_normal(state.shape)
    dout = rng.standard_normal((T_, N_, 2 * H)) * mask[:, :, None]
    calls, forward = [], ckpt.cell.forward
    ckpt.cell.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    a = _train_step(plain, x, state, mask, dout, dstate)
    b = _train_step(ckpt, x, state, mask, dout, dstate)
    for i, (p, q) in enumerate(zip(a, b)):
        assert rel_error(p, q) < 1e-12, i
    segments, parts = (6 if recompute == 2 else 3), (3 if split else 1)
    # each segment of every row part, layer and direction: run in forward, and again in backward
    assert len(calls) == 2 * 4 * segments * parts


def test_step_by_step_equals_forward(rng):
    layer = rnnkit.make_recurrent("indrnn", D, H, num_layers=2, dtype=np.float64, seed=5)
    x = rng.standard_normal((T, N, D))
    state = np.abs(_state(layer, rng))
    full, final = layer.forward(x, state)
    s, outs = state, []
    for t in range(T):
        y, s = layer.step(x[t], s)
        outs.append(y)
    np.testing.assert_allclose(np.stack(outs), full, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(s, final, rtol=1e-13, atol=1e-13)
    # the first layer's x Wx + b read from a table (an embedding), as sampling does
    E = rng.standard_normal((7, D))
    table = layer.input_gates(E)
    s1 = s2 = None
    for tok in (3, 0, 6, 6):
        h1, s1 = layer.step(E[tok:tok + 1], s1)
        h2, s2 = layer.step(None, s2, x_gates=table[tok:tok + 1])
        assert rel_error(h1, h2) < 1e-13


def test_diagnostics_read_the_cells_own_bptt(rng):
    rnn = rnnkit.make_recurrent("indrnn", D, H, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, N, D))
    w = rng.standard_normal((N, H))  # the loss: L = sum(w * top layer's h_T)
    flow = gradient_flow(rnn, x, lambda out_last: w)
    assert flow["cell"] == "indrnn" and list(flow["lag"]) == list(range(T, -1, -1))
    assert [sorted(layer) for layer in flow["layers"]] == [["dh"], ["dh"]]
    top = flow["layers"][1]["dh"]
    assert top.shape == (T + 1,) and top[T] == pytest.approx(np.linalg.norm(w, axis=1).mean())
    # the bottom layer's curve is dL/dh_t through both layers: numerically, from h_t of layer 0
    layers = run_layers(rnn, x)
    for t in (0, 3):
        h_t = layers[0][0]["cache"].h[t].copy()

        def loss():  # h_t is the state the layer goes on from and, at t >= 1, its output at t
            y0 = rnn.cell.forward(x[t:], (h_t,), rnn.layer_params(0))[0]
            below = np.concatenate([layers[0][0]["y"][:t - 1], h_t[None], y0]) if t else y0
            y1 = rnn.cell.forward(below, (np.zeros((N, H)),), rnn.layer_params(1))[0]
            return np.array(np.sum(w * y1[-1]))

        num = numerical_grad(loss, h_t, np.array(1.0))
        assert flow["layers"][0]["dh"][t] == pytest.approx(np.linalg.norm(num, axis=1).mean(), rel=1e-6)
    acts = activations(rnn, x)
    assert [name for name, _ in acts] == ["layer 0", "layer 1"] and list(acts[0][1]) == ["h"]
    assert gate_stats(rnn, x) == [("layer 0", {}), ("layer 1", {})]  # no gates to show


TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine. "
        "all that glitters is not gold. where there is a will there is a way.\n") * 30


def test_char_lm_trains_and_samples():
    """The character LM with cell="indrnn", trained by hand (truncated BPTT, Adam, clipping) for 200
    steps on a few KB of repeated English: its loss falls from near log(V) and it samples words."""
    from rnnkit.data.text import CharVocab
    from rnnkit.functional import softmax_cross_entropy
    from rnnkit.models.lm import CharLM, LMConfig, sample
    from rnnkit.optim import Adam, clip_grad_norm, collect_params
    from rnnkit.train import StreamBatches

    vocab = CharVocab.from_text(TEXT)
    model = CharLM(LMConfig(len(vocab), cell="indrnn", embed=16, hidden=64, layers=2, seed=0))
    assert model.rnn.cell.name == "indrnn"
    params = collect_params(model=model)
    opt = Adam(params, lr=3e-3)
    batches = StreamBatches(vocab.encode(TEXT), 8, 32, seed=0)
    state, losses = None, []
    for _ in range(200):
        batch = batches.next_batch()
        if batch.reset:
            state = None
        opt.zero_grad()
        logits, state = model.forward(batch.x, state)  # the state carried as values into the next
        loss, dlogits = softmax_cross_entropy(logits, batch.y)
        model.backward(dlogits)
        clip_grad_norm(params, 5.0)
        opt.step()
        losses.append(loss)
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert first > 2.5 and last < 1.0, (first, last)  # from near log(V) = 3.4 to well below
    out = "".join(vocab.decode([i]) for i in sample(model.eval(), vocab.encode("the "), 60,
                                                     temperature=0.5, rng=np.random.default_rng(0)))
    assert len(out) == 60 and set(out) <= set(TEXT)
    assert any(w in out for w in ("the", "is", "there")), out  # it has learnt some of the words


def test_command_line_finds_the_cell_through_RNNKIT_CELLS(tmp_path):
    """As a user would run it: the plugin named by RNNKIT_CELLS is a --cell choice, and a saved run
    finds its cell again when sampled (the run records the name "indrnn", not the class)."""
    env = {**os.environ, "RNNKIT_CELLS": str(EXAMPLE)}
    text = tmp_path / "text.txt"
    text.write_text(TEXT)

    def rnnkit_cli(*args):
        r = subprocess.run([sys.executable, "-m", "rnnkit", *args], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "indrnn: IndRNN (Li et al. 2018)" in " ".join(rnnkit_cli("train", "lm", "--help").split())
    out = tmp_path / "run"
    res = json.loads(rnnkit_cli("train", "lm", "--data", str(text), "--cell", "indrnn", "--hidden", "16",
                                "--embed", "8", "--batch", "4", "--seq-len", "16", "--steps", "6",
                                "--eval-every", "3", "--out", str(out), "--no-progress", "--json"))
    assert res["step"] == 6 and res["val_loss"] > 0
    assert json.loads((out / "last.json").read_text())["meta"]["config"]["model"]["cell"] == "indrnn"
    assert rnnkit_cli("sample", str(out), "--prime", "the ", "--length", "20", "--seed", "1"
                      ).startswith("the ")
