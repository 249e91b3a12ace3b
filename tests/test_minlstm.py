"""minLSTM (rnnkit.cells.minlstm): gradients checked numerically and against PyTorch autograd on
identical weights; the compiled loops equal the NumPy reference; padded steps carry the state;
recompute, one-step inference, the char-LM and diagnostics through the shared layer; and the linear
scan's three forms (sequential, parallel, log-space) agree."""

import json

import numpy as np
import pytest

import rnnkit
from gradcheck import numerical_grad, rel_error
from rnnkit import kernels
from rnnkit.cells.minlstm import (
    MINLSTM_BW,
    MINLSTM_FW,
    minlstm_backward,
    minlstm_forward,
    minlstm_fw,
)
from rnnkit.functional import linear_scan, linear_scan_log, softmax_cross_entropy

T, N, D, H = 6, 3, 4, 5

compiled_only = pytest.mark.skipif(not kernels.status()["available"],
                                   reason="compiled kernels unavailable")


def _mask():
    return np.arange(T)[:, None] < np.array([6, 3, 1])[None, :]


def _arrays(rng, dtype=np.float64, shape=(T, N, D, H)):
    T_, N_, D_, H_ = shape
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return r(T_, N_, D_), r(N_, H_), (r(D_, 3 * H_) * 0.5).astype(dtype), r(3 * H_)


def _sigmoid(k):
    return 1 / (1 + np.exp(-k))


def _softplus(k):
    return np.logaddexp(0, k)


# --- the functional pair ------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_minlstm_forward_backward(rng, masked):
    """dx, dh0, dWx, db against central differences: a random upstream gradient on every output and on
    the final state, a non-zero initial state, with and without padding."""
    x, h0, Wx, b = _arrays(rng)
    mask = _mask() if masked else None
    dh, dhT = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    if masked:
        dh = dh * mask[:, :, None]  # the loss never reads padded outputs

    def f():
        h, _ = minlstm_forward(x, h0, Wx, b, mask)
        return np.concatenate([h[1:].ravel(), h[-1].ravel()])

    h, cache = minlstm_forward(x, h0, Wx, b, mask)
    dx, dh0, dWx, db = minlstm_backward(dh, cache, dhT)
    dout = np.concatenate([dh.ravel(), dhT.ravel()])
    for name, arr, grad in (("x", x, dx), ("h0", h0, dh0), ("Wx", Wx, dWx), ("b", b, db)):
        assert rel_error(numerical_grad(f, arr, dout), grad) < 1e-7, name


def test_the_forward_is_the_definition(rng):
    x, h0, Wx, b = _arrays(rng)
    h, cache = minlstm_forward(x, h0, Wx, b)
    ht = h0
    for t in range(T):
        k = x[t] @ Wx + b
        f, i, c = _sigmoid(k[:, :H]), _sigmoid(k[:, H:2 * H]), k[:, 2 * H:]
        ht = f / (f + i) * ht + i / (f + i) * c
        assert rel_error(cache.fp[t], f / (f + i)) < 1e-15
        assert rel_error(cache.gates[t], np.concatenate([f, i, c], axis=1)) < 1e-15
        assert rel_error(h[t + 1], ht) < 1e-14


def test_padded_steps_carry_the_state_and_get_no_gradient(rng):
    x, h0, Wx, b = _arrays(rng)
    mask = _mask()
    h, cache = minlstm_forward(x, h0, Wx, b, mask)
    assert np.array_equal(h[1:, 2], np.broadcast_to(h[1, 2], (T, H)))  # one valid step, then carried
    assert np.array_equal(h[4:, 1], np.broadcast_to(h[3, 1], (T - 3, H)))
    dh = rng.standard_normal((T, N, H))  # nonzero at padded steps too: they must be ignored
    dx, *_ = minlstm_backward(dh, cache)
    assert np.all(dx[~mask] == 0)


def test_trace_records_dL_dh_t(rng):
    """trace["dh"][t] = dL/dh_t: [0] is dh0, [T] the upstream gradient, a middle step numerically (the
    state h_2 as the initial state of the suffix run)."""
    x, h0, Wx, b = _arrays(rng)
    dh = np.zeros((T, N, H))
    dh[-1] = rng.standard_normal((N, H))
    h, cache = minlstm_forward(x, h0, Wx, b)
    trace = {}
    dh0 = minlstm_backward(dh, cache, trace=trace)[1]
    assert trace["dh"].shape == (T + 1, N, H)
    assert np.allclose(trace["dh"][0], dh0) and np.allclose(trace["dh"][T], dh[-1])
    hmid = h[2].copy()
    num = numerical_grad(lambda: minlstm_forward(x[2:], hmid, Wx, b)[0][-1], hmid, dh[-1])
    assert rel_error(num, trace["dh"][2]) < 1e-7


def test_minlstm_matches_torch_autograd(rng):
    """The paper's minLSTM (sequential form) written in PyTorch, autograd for its gradients, the same
    float64 weights, a mask, an initial state and a final-state gradient."""
    torch = pytest.importorskip("torch")
    x, h0, Wx, b = _arrays(rng)
    mask = _mask()
    dh, dhT = rng.standard_normal((T, N, H)) * mask[:, :, None], rng.standard_normal((N, H))
    h, cache = minlstm_forward(x, h0, Wx, b, mask)
    dx, dh0, dWx, db = minlstm_backward(dh, cache, dhT)

    tx, th0, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, h0, Wx, b))
    tm = torch.tensor(mask)
    ht, outs = th0, []
    for t in range(T):
        k = tx[t] @ tW + tb
        f, i, c = torch.sigmoid(k[:, :H]), torch.sigmoid(k[:, H:2 * H]), k[:, 2 * H:]
        new = f / (f + i) * ht + i / (f + i) * c
        ht = torch.where(tm[t][:, None], new, ht)
        outs.append(ht)
    out = torch.stack(outs)
    (out * torch.tensor(dh)).sum().backward(retain_graph=True)
    (ht * torch.tensor(dhT)).sum().backward()
    assert rel_error(h[1:], out.detach().numpy()) < 1e-13
    for ours, theirs in ((dx, tx), (dh0, th0), (dWx, tW), (db, tb)):
        assert rel_error(ours, theirs.grad.numpy()) < 1e-12


def test_parallel_forward_equals_sequential(rng):
    x, h0, Wx, b = _arrays(rng)
    h1, _ = minlstm_forward(x, h0, Wx, b, _mask())
    h2, _ = minlstm_forward(x, h0, Wx, b, _mask(), parallel=True)
    assert rel_error(h1, h2) < 1e-13


@pytest.mark.parametrize("path", ["reference", "compiled"])
@pytest.mark.parametrize("dtype,far", [(np.float64, 800.0), (np.float32, 110.0)])
def test_nearly_shut_gates_keep_their_ratio(dtype, far, path):
    """Both gates far below zero: each sigmoid underflows to 0, yet f' = f / (f + i) is well defined
    (for kf = -far, ki = -far - u it is sigmoid(u)) and so are its gradients: no 0/0 on either path."""
    if path == "compiled" and not kernels.status()["available"]:
        pytest.skip("compiled kernels unavailable")
    u = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    gates = np.zeros((1, 1, 3 * 5), dtype=dtype)
    gates[0, 0, :5], gates[0, 0, 5:10], gates[0, 0, 10:] = -far, -far - u, 2.0
    fp, h = np.empty((1, 1, 5), dtype), np.ones((2, 1, 5), dtype)
    run = (lambda **a: minlstm_fw(**a)) if path == "reference" else \
        (lambda **a: MINLSTM_FW.compiled(a)())
    run(T=1, N=1, H=5, gates=gates, fp=fp, h=h, mask=None)
    want = _sigmoid(u)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    assert rel_error(fp[0, 0], want) < tol
    assert rel_error(h[1, 0], want * 1 + (1 - want) * 2) < tol
    dgates, g = np.empty_like(gates), np.ones((1, 5), dtype)
    bw = minlstm_bw_by_path(path)
    bw(T=1, N=1, H=5, dh=np.zeros((1, 1, 5), dtype), gates=gates, fp=fp, h=h, mask=None, dh_next=g,
       dgates=dgates, trace_dh=None)
    assert np.isfinite(dgates).all() and np.isfinite(g).all()
    w = (1 - 2) * want * (1 - want)  # dL/df' f' i' with h_{t-1} = 1, h~ = 2: (1 - f) = (1 - i) = 1
    assert rel_error(dgates[0, 0, :5], w) < tol and rel_error(dgates[0, 0, 5:10], -w) < tol


def minlstm_bw_by_path(path):
    from rnnkit.cells.minlstm import minlstm_bw

    return minlstm_bw if path == "reference" else (lambda **a: MINLSTM_BW.compiled(a)())


def test_bad_arguments_name_what_was_expected(rng):
    x, h0, Wx, b = _arrays(rng)
    with pytest.raises(ValueError, match=r"b has shape \(14,\), expected \(3H,\)"):
        minlstm_forward(x, h0, Wx[:, :14], b[:14])
    with pytest.raises(ValueError, match=r"Wx has shape \(3, 15\), expected \(D=4, 3H=15\)"):
        minlstm_forward(x, h0, Wx[:3], b)
    with pytest.raises(ValueError, match="h0 has shape"):
        minlstm_forward(x, h0[:, :2], Wx, b)


# --- the linear scan's three forms --------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 5, 16, 17, 33])
def test_sequential_parallel_and_log_space_scans_agree(rng, steps):
    """Positive terms, a positive initial state, and padded steps (a = 1, b = 0: log b = -inf)."""
    a = rng.uniform(0.05, 1, (steps, N, H))
    b = rng.uniform(0.1, 2, (steps, N, H))
    a[steps // 2, 0], b[steps // 2, 0] = 1.0, 0.0  # a padded step
    h0 = rng.uniform(0.1, 2, (N, H))
    seq = linear_scan(a, b, h0)
    par = linear_scan(a, b, h0, parallel=True)
    with np.errstate(divide="ignore"):
        la, lb, lh0 = np.log(a), np.log(b), np.log(h0)
    logs = linear_scan_log(la, lb, lh0)
    logp = linear_scan_log(la, lb, lh0, parallel=True)
    assert seq.shape == par.shape == logs.shape == logp.shape == (steps + 1, N, H)
    assert np.array_equal(seq[0], h0)
    for other in (par, logs, logp):
        assert rel_error(seq, other) < 1e-12
    h = h0
    for t in range(steps):  # the definition, step by step
        h = a[t] * h + b[t]
    assert rel_error(seq[-1], h) < 1e-15


def test_log_space_scan_from_a_zero_state(rng):
    a, b = rng.uniform(0.05, 1, (7, N, H)), rng.uniform(0.1, 2, (7, N, H))
    with np.errstate(divide="ignore"):
        lh0 = np.log(np.zeros((N, H)))
    for parallel in (False, True):
        got = linear_scan_log(np.log(a), np.log(b), lh0, parallel)
        assert rel_error(got, linear_scan(a, b, np.zeros((N, H)))) < 1e-12 and np.all(got[0] == 0)


def test_log_space_scan_does_not_overflow_over_a_long_decay(rng):
    """a*_t = cumsum(log a) reaches -2000 (e^2000 would overflow): every exp stays in range."""
    steps = 1000
    a = np.full((steps, 2, 3), np.exp(-2.0))
    b = rng.uniform(0.1, 1, (steps, 2, 3))
    h0 = np.full((2, 3), 5.0)
    want = linear_scan(a, b, h0)
    for parallel in (False, True):
        got = linear_scan_log(np.log(a), np.log(b), np.log(h0), parallel)
        assert np.isfinite(got).all() and rel_error(got, want) < 1e-12


@pytest.mark.parametrize("steps", [3, 7, 17])
def test_signed_initial_state_sequential_equals_parallel(rng, steps):
    """The non-log forms take any sign: a signed initial state and signed b."""
    a = rng.uniform(0, 1, (steps, N, H))
    b = rng.standard_normal((steps, N, H))
    h0 = rng.standard_normal((N, H)) * 3
    assert (h0 < 0).any() and (h0 > 0).any()
    seq, par = linear_scan(a, b, h0), linear_scan(a, b, h0, parallel=True)
    assert np.array_equal(seq[0], h0) and rel_error(seq, par) < 1e-13
    h = h0
    for t in range(steps):
        h = a[t] * h + b[t]
    assert rel_error(seq[-1], h) < 1e-15


def _log_g(k):
    """log g(k), g(k) = k + 0.5 for k >= 0, sigmoid(k) below: the paper's positive candidate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k >= 0, np.log(np.maximum(k, 0) + 0.5), -_softplus(-k))


def test_papers_log_space_minlstm_equals_the_sequential_loop(rng):
    """The paper's parallel training form: log f' = -softplus(d), log i' = -softplus(-d) with
    d = softplus(-kf) - softplus(-ki), the candidate g(h~) > 0 through log g, and a positive state
    carried from an earlier call entered as log h0 itself (not through log g again: that would make
    the parallel form disagree with the step-by-step one). Equals minLSTM's own loop run on g(h~)."""
    x, _, Wx, b = _arrays(rng, shape=(11, N, D, H))
    h0 = rng.uniform(0.2, 1.5, (N, H))
    k = x @ Wx + b
    kf, ki, kh = k[..., :H], k[..., H:2 * H], k[..., 2 * H:]
    d = _softplus(-kf) - _softplus(-ki)
    log_fp, log_ip = -_softplus(d), -_softplus(-d)
    for parallel in (False, True):
        h = linear_scan_log(log_fp, log_ip + _log_g(kh), np.log(h0), parallel)
        gates = np.concatenate([kf, ki, np.exp(_log_g(kh))], axis=-1)
        ref = np.empty_like(h)
        ref[0] = h0
        minlstm_fw(11, N, H, gates, np.empty((11, N, H)), ref, None)
        assert rel_error(h, ref) < 1e-12
        # and streaming: the second half from the first half's last state, entered as its log
        h2 = linear_scan_log(log_fp[6:], log_ip[6:] + _log_g(kh[6:]), np.log(h[6]), parallel)
        assert rel_error(h2, h[6:]) < 1e-12


# --- the compiled loops -------------------------------------------------------------------------


def _run(dtype, masked, rng, shape=(T, N, D, H)):
    """Forward + backward (with a final-state gradient and a trace): every array it yields."""
    T_, N_, D_, H_ = shape
    x, h0, Wx, b = _arrays(rng, dtype, shape)
    dh = rng.standard_normal((T_, N_, H_)).astype(dtype)
    dhT = rng.standard_normal((N_, H_)).astype(dtype)
    mask = (np.arange(T_)[:, None] < (np.arange(N_) * 7 % (T_ + 1))[None, :]) if masked else None
    trace = {}
    h, cache = minlstm_forward(x, h0, Wx, b, mask)
    grads = minlstm_backward(dh, cache, dhT, trace=trace)
    return [h, cache.gates, cache.fp, *grads, trace["dh"]]


@compiled_only
@pytest.mark.parametrize("shape", [(9, 4, 5, 6), (6, 11, 7, 20), (4, 9, 3, 72)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_equals_reference(dtype, tol, masked, shape):
    fast = _run(dtype, masked, np.random.default_rng(3), shape)
    with kernels.reference():
        ref = _run(dtype, masked, np.random.default_rng(3), shape)
    assert len(fast) == len(ref) == 8
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


@compiled_only
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
def test_rows_split_across_threads_equal_reference(dtype, tol, masked, three_threads):
    """The time loops cut into three uneven row ranges run on worker threads give the reference."""
    split_calls = three_threads
    shape = (6, 19, 7, 36)
    fast = _run(dtype, masked, np.random.default_rng(4), shape)
    assert split_calls == [3, 3]  # forward and backward each ran as three row ranges
    with kernels.reference():
        ref = _run(dtype, masked, np.random.default_rng(4), shape)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


@compiled_only
def test_the_compiled_loops_really_ran(monkeypatch, rng):
    """With the fast path on, neither loop falls back to its reference for float32/float64 NumPy
    arrays: through the functional pair, a layer's forward, backward, recompute and step."""
    def refuse(**_):
        raise AssertionError("a NumPy reference ran on the fast path")

    monkeypatch.setattr(MINLSTM_FW, "reference", refuse)
    monkeypatch.setattr(MINLSTM_BW, "reference", refuse)
    for dtype in (np.float32, np.float64):
        _run(dtype, True, rng)
        layer = rnnkit.make_recurrent("minlstm", D, H, num_layers=2, dtype=dtype, recompute=2)
        x = rng.standard_normal((T, N, D)).astype(dtype)
        out, _ = layer.forward(x, mask=_mask())
        layer.backward(np.ones_like(out))
        layer.step(x[0])
    with pytest.raises(AssertionError, match="reference ran"), kernels.reference():
        _run(np.float64, False, rng)


# --- through the layer --------------------------------------------------------------------------


def _state(layer, rng):
    return rng.standard_normal(layer.init_state(N).shape)


def test_stacked_bidirectional_layer_with_dropout_has_the_numerical_gradients(rng):
    layer = rnnkit.make_recurrent("minlstm", D, H, num_layers=2, bidirectional=True, dropout=0.3,
                                  dtype=np.float64, seed=3)
    x, mask = rng.standard_normal((T, N, D)), _mask()
    state = _state(layer, rng)
    dout = rng.standard_normal((T, N, 2 * H)) * mask[:, :, None]
    dstate = rng.standard_normal(state.shape)

    def run():
        layer.rng = np.random.default_rng(99)  # the same dropout mask at every call
        out, fin = layer.forward(x, state, mask)
        return np.concatenate([out.ravel(), fin.ravel()])

    run()
    layer.zero_grad()
    dx, dstate0 = layer.backward(dout, dstate)
    upstream = np.concatenate([dout.ravel(), dstate.ravel()])
    assert sorted(layer.params) == ["l0.Wx", "l0.b", "l0_reverse.Wx", "l0_reverse.b", "l1.Wx", "l1.b",
                                    "l1_reverse.Wx", "l1_reverse.b"]
    for name, p, g in layer.named_parameters():
        assert rel_error(numerical_grad(run, p, upstream), g) < 1e-7, name
    assert rel_error(numerical_grad(run, x, upstream), dx) < 1e-7
    assert rel_error(numerical_grad(run, state, upstream), dstate0) < 1e-7


@pytest.mark.parametrize("bidirectional", [False, True])
def test_recompute_equals_plain_bptt(rng, bidirectional):
    kw = dict(num_layers=2, bidirectional=bidirectional, dtype=np.float64, seed=5)
    plain = rnnkit.make_recurrent("minlstm", D, H, **kw)
    seg = rnnkit.make_recurrent("minlstm", D, H, recompute=2, **kw)
    x, mask = rng.standard_normal((T, N, D)), _mask()
    state = _state(plain, rng)
    K = 2 if bidirectional else 1
    dout, dstate = rng.standard_normal((T, N, K * H)), rng.standard_normal(state.shape)
    results = []
    for layer in (plain, seg):
        out, fin = layer.forward(x, state, mask)
        layer.zero_grad()
        dx, d0 = layer.backward(dout, dstate)
        results.append((out, fin, dx, d0, {k: g.copy() for k, g in layer.grads.items()}))
    (o1, f1, dx1, s1, g1), (o2, f2, dx2, s2, g2) = results
    assert rel_error(o1, o2) < 1e-14 and rel_error(f1, f2) < 1e-14
    assert rel_error(dx1, dx2) < 1e-12 and rel_error(s1, s2) < 1e-12
    for key in g1:
        assert rel_error(g1[key], g2[key]) < 1e-12, key


def test_step_by_step_equals_forward(rng):
    layer = rnnkit.make_recurrent("minlstm", D, H, num_layers=3, dtype=np.float64, seed=2)
    x, state = rng.standard_normal((T, N, D)), _state(layer, rng)
    out, final = layer.forward(x, state)
    s = state
    for t in range(T):
        y, s = layer.step(x[t], s)
        np.testing.assert_allclose(y, out[t], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(s, final, rtol=1e-13, atol=1e-13)
    # the first layer's input side from a table (an embedding's rows)
    E = rng.standard_normal((7, D))
    tokens = np.array([3, 0, 6])
    y1, _ = layer.step(E[tokens], state)
    y2, _ = layer.step(None, state, x_gates=layer.input_gates(E)[tokens])
    np.testing.assert_allclose(y1, y2, rtol=1e-13, atol=1e-13)


def test_layer_class_is_made_from_the_registry():
    from rnnkit import MinLSTM

    layer = MinLSTM(D, H, num_layers=2)
    assert layer.cell.name == "minlstm" and layer.params["l1.Wx"].shape == (H, 3 * H)
    assert "minlstm" in rnnkit.cells.names() and "minlstm" in rnnkit.cells.describe()
    from rnnkit.interop import to_torch_state_dict

    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        to_torch_state_dict(layer)


# --- the char-LM and diagnostics ----------------------------------------------------------------


def test_char_lm_gradients_match_numerical(rng):
    from rnnkit.models.lm import CharLM, LMConfig

    V = 7
    model = CharLM(LMConfig(V, cell="minlstm", embed=4, hidden=5, layers=2, seed=3), dtype=np.float64)
    x, y = rng.integers(0, V, (T, N)), rng.integers(0, V, (T, N))
    s0 = model.init_state(N)
    s0.h[...] = rng.standard_normal(s0.h.shape)  # a carried state

    def loss():
        logits, _ = model.forward(x, s0)
        return softmax_cross_entropy(logits, y)[0]

    logits, _ = model.forward(x, s0)
    _, dlogits = softmax_cross_entropy(logits, y)
    model.zero_grad()
    model.backward(dlogits)
    names = []
    for name, p, g in model.named_parameters():
        names.append(name)
        assert rel_error(g, numerical_grad(lambda: np.array(loss()), p, np.array(1.0))) < 1e-6, name
    assert any("l1.Wx" in n for n in names)


def test_gradient_flow_is_dL_dh_t(rng):
    from rnnkit.diagnostics import gradient_flow, run_layers

    rnn = rnnkit.make_recurrent("minlstm", D, H, num_layers=2, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, N, D))
    w = rng.standard_normal((N, H))  # the loss: L = sum(w * h_T) of the top layer
    flow = gradient_flow(rnn, x, lambda out_last: w)
    assert flow["cell"] == "minlstm" and len(flow["layers"]) == 2
    assert set(flow["layers"][1]) == {"dh"} and flow["layers"][1]["dh"].shape == (T + 1,)
    layers = run_layers(rnn, x)
    x_top, top = layers[0][0]["y"], layers[1][0]
    for t in (0, 3, T):
        h_t = top["cache"].h[t].copy()

        def loss():
            h = rnn.cell.forward(x_top[t:], (h_t,), rnn.layer_params(1, 0))[0] if t < T else h_t[None]
            return np.array(np.sum(w * h[-1]))

        num = numerical_grad(loss, h_t, np.array(1.0))
        assert flow["layers"][1]["dh"][t] == pytest.approx(np.linalg.norm(num, axis=1).mean(), rel=1e-6)
    assert np.all(flow["layers"][0]["dh"] > 0)


def test_gate_stats_show_the_normalised_gates(rng):
    from rnnkit.diagnostics import activations, gate_stats

    rnn = rnnkit.make_recurrent("minlstm", D, H, num_layers=2, dtype=np.float64, seed=3)
    x, mask = rng.standard_normal((T, N, D)), _mask()
    stats = dict(gate_stats(rnn, x, mask))
    assert list(stats) == ["layer 0", "layer 1"]
    for gates in stats.values():
        assert list(gates) == ["f'", "i'"]
        assert gates["f'"]["mean"] + gates["i'"]["mean"] == pytest.approx(1.0)
        assert sum(gates["f'"]["hist"]) == mask.sum() * H  # padded steps left out
        assert gates["f'"]["sigmoid"] and gates["f'"]["title"].startswith("normalised forget")
    acts = dict(activations(rnn, x))["layer 0"]
    assert list(acts) == ["h", "f'", "i'"]
    y, _, cache = rnn.cell.forward(x, (np.zeros((N, H)),), rnn.layer_params(0, 0))
    f, i = cache.gates[..., :H], cache.gates[..., H:2 * H]
    assert rel_error(acts["f'"], f / (f + i)) < 1e-15 and rel_error(acts["h"], y) < 1e-15


def test_command_line_trains_and_samples_with_minlstm(tmp_path, capsys):
    from rnnkit.cli import main

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    out = tmp_path / "lm"
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--cell", "minlstm", "--hidden",
                 "16", "--layers", "2", "--embed", "8", "--batch", "4", "--seq-len", "16", "--steps",
                 "6", "--eval-every", "3", "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["val_loss"] > 0
    assert main(["sample", str(out), "--prime", "the ", "--length", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the ")
