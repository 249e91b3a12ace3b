"""The compiled fast path (rnnkit.kernels) equals the plain NumPy reference it replaces: every output,
final state, gradient and BPTT trace, float32 and float64, with and without a mask of valid steps."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import GRU, LSTM, RNN, kernels
from rnnkit.cells.gru import gru_backward, gru_forward
from rnnkit.cells.lstm import lstm_backward, lstm_forward
from rnnkit.cells.mingru import mingru_backward, mingru_forward
from rnnkit.cells.minlstm import minlstm_backward, minlstm_forward
from rnnkit.cells.rnn import rnn_backward, rnn_forward
from rnnkit.functional import softmax_cross_entropy

T, N, D, H = 9, 4, 5, 6

if not kernels.status()["available"]:
    pytest.skip(f"compiled kernels unavailable: {kernels.status()['reason']}", allow_module_level=True)


def _run(cell, dtype, masked, rng, nonlinearity="tanh", shape=(T, N, D, H)):
    """Forward + backward (with final-state gradients and a trace) of one cell; every array it yields."""
    T, N, D, H = shape
    G = {"lstm": 4, "gru": 3, "rnn": 1, "mingru": 2, "minlstm": 3}[cell]
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x, h0, c0, dh, dhT, dcT = r(T, N, D), r(N, H), r(N, H), r(T, N, H), r(N, H), r(N, H)
    # Wh scaled down as H grows: a recurrence that blows up amplifies float32 rounding past any tolerance
    Wx, Wh, b, bhn = r(D, G * H), r(H, G * H) * min(0.5, 1.5 / H ** 0.5), r(G * H), r(H)
    mask = (np.arange(T)[:, None] < (np.arange(N) * 7 % (T + 1))[None, :]) if masked else None
    trace = {}
    if cell == "lstm":
        h, c, cache = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
        grads = lstm_backward(dh, cache, dhT, dcT, trace=trace)
        return [h, c, cache.gates, cache.tanh_c, *grads, trace["dh"], trace["dc"]]
    if cell == "gru":
        h, cache = gru_forward(x, h0, Wx, Wh, b, bhn, mask)
        grads = gru_backward(dh, cache, dhT, trace=trace)
        return [h, cache.gates, cache.hn, *grads, trace["dh"]]
    if cell == "mingru":
        h, cache = mingru_forward(x, h0, Wx, b, mask)
        grads = mingru_backward(dh, cache, dhT, trace=trace)
        return [h, cache.gates, *grads, trace["dh"]]
    if cell == "minlstm":
        h, cache = minlstm_forward(x, h0, Wx, b, mask)
        grads = minlstm_backward(dh, cache, dhT, trace=trace)
        return [h, cache.gates, cache.fp, *grads, trace["dh"]]
    h, cache = rnn_forward(x, h0, Wx, Wh, b, mask, nonlinearity)
    grads = rnn_backward(dh, cache, dhT, trace=trace)
    return [h, *grads, trace["dh"]]


# The second shape reaches the kernels' own small-batch gemm: full 4-row x 64-column tiles plus
# left-over rows and columns (N=11, H=20: 4H=80), and (H=72) a backward product with K=4H=288 over three
# K chunks and one full panel of H columns; the first shape stays on the edge loops.
@pytest.mark.parametrize("shape", [(T, N, D, H), (6, 11, 7, 20), (4, 9, 3, 72)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu", "mingru", "minlstm"])
def test_fast_equals_reference(cell, dtype, tol, masked, shape):
    nl = "relu" if cell == "rnn_relu" else "tanh"
    cell = cell.replace("_relu", "")
    if cell == "rnn" and shape[3] == 20:
        shape = shape[:3] + (72,)  # the RNN's product has H columns: 72 = one tile and 8 more
    fast = _run(cell, dtype, masked, np.random.default_rng(3), nl, shape)
    with kernels.reference():
        ref = _run(cell, dtype, masked, np.random.default_rng(3), nl, shape)
    assert len(fast) == len(ref)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru", "minlstm"])
def test_rows_split_across_threads_equal_reference(cell, dtype, tol, masked, monkeypatch):
    """The time loop cut into row ranges run on worker threads (here three uneven parts of 19 rows,
    whatever this machine's thread count) gives what the reference gives."""
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(kernels.pool, "threads", lambda: 3)
    assert kernels.row_parts(6, 19, 1, 3) == [(0, 4), (4, 12), (12, 19)]  # cut at whole 4-row tiles
    split_calls, run_parallel = [], kernels.pool.run_parallel
    monkeypatch.setattr(kernels.pool, "run_parallel",
                        lambda fn, calls: (split_calls.append(len(calls)), run_parallel(fn, calls)))
    shape = (6, 19, 7, 36)
    fast = _run(cell, dtype, masked, np.random.default_rng(4), "tanh", shape)
    assert split_calls == [3, 3]  # forward and backward each ran as three row ranges
    with kernels.reference():
        ref = _run(cell, dtype, masked, np.random.default_rng(4), "tanh", shape)
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


def test_row_parts_keep_register_tiles_and_skip_small_work(monkeypatch):
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 1000)
    assert kernels.row_parts(100, 32, 512 * 2048, 2) == [(0, 16), (16, 32)]
    assert kernels.row_parts(100, 40, 512 * 2048, 2) == [(0, 20), (20, 40)]
    assert kernels.row_parts(100, 42, 512 * 2048, 2) == [(0, 20), (20, 42)]
    assert kernels.row_parts(100, 1, 512 * 2048, 2) == [(0, 1)]  # sampling: one row
    assert kernels.row_parts(1, 2, 10, 2) == [(0, 2)]  # too little work to hand off
    assert kernels.row_parts(100, 32, 512 * 2048, 1) == [(0, 32)]


def test_reference_switch_really_switches():
    """Guard for the tests above: the fast path is on by default here, and off under reference()."""
    from rnnkit.backend import COMPILED, REFERENCE, get_ops
    from rnnkit.cells.rnn import RNN_FW

    h, Wh = np.zeros((3, 2, 4)), np.zeros((4, 4))
    args = dict(T=2, N=2, H=4, h=h, Wh=Wh, mask=None, relu=0)
    assert get_ops(h) is COMPILED and RNN_FW.compiled(args) is not None
    with kernels.reference():
        assert get_ops(h) is REFERENCE and RNN_FW.compiled(args) is None
    assert get_ops(h) is COMPILED and RNN_FW.compiled(args) is not None


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("fast", [True, False])
def test_layer_gradient_check_on_both_paths(cls, fast):
    """Numerical gradient check of a bidirectional 2-layer stack with variable lengths, on each path."""
    rng = np.random.default_rng(1)
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((5, 2, 3))
    mask = np.arange(5)[:, None] < np.array([5, 3])[None, :]
    dout = rng.standard_normal((5, 2, 8)) * mask[:, :, None]  # padded outputs receive no gradient
    kernels.set_enabled(fast)
    try:
        layer.forward(x, mask=mask)
        layer.zero_grad()
        dx, _ = layer.backward(dout)
        num = numerical_grad(lambda: layer.forward(x, mask=mask)[0], x, dout)
        assert rel_error(dx, num) < 1e-6
        W = layer.params["l0.Wh"]
        num_W = numerical_grad(lambda: layer.forward(x, mask=mask)[0], W, dout)
        assert rel_error(layer.grads["l0.Wh"], num_W) < 1e-6
    finally:
        kernels.set_enabled(True)


@pytest.mark.parametrize("M,K,Nc", [(300, 40, 50), (20, 64, 700), (17, 5, 33)])
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_cut_across_threads_equals_numpy(M, K, Nc, transposed, monkeypatch):
    """kernels.matmul cuts a product into row blocks (or column blocks, when B is the wider side) run on
    rnnkit's threads; each block is NumPy's own product, so the result is NumPy's, into `out` too."""
    monkeypatch.setattr(kernels.products, "MATMUL_SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(kernels.pool, "threads", lambda: 3)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M)).T if transposed else rng.standard_normal((M, K))  # x^T da-like views
    b = rng.standard_normal((K, Nc)).astype(np.float32)
    a = a.astype(np.float32)
    expected = a @ b
    np.testing.assert_allclose(kernels.matmul(a, b), expected, rtol=1e-5, atol=1e-5)
    out = np.full((M, Nc), np.nan, dtype=np.float32)
    assert kernels.matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_matmul_accumulate_adds_into_out(split, dtype, tol, monkeypatch):
    """matmul(accumulate=True) is out += a @ b, through the BLAS's beta = 1, for every layout a layer
    passes (contiguous, or a transposed view), cut across threads or not, and on the reference path."""
    r = _random(dtype, 7)
    for a, b in _operand_layouts(r, split, monkeypatch):
        out0 = r(a.shape[0], b.shape[1])
        want = out0.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
        out = out0.copy()
        assert kernels.matmul(a, b, out=out, accumulate=True) is out
        assert rel_error(out, want) < tol
        with kernels.reference():
            out = out0.copy()
            kernels.matmul(a, b, out=out, accumulate=True)
        assert rel_error(out, want) < tol
    with pytest.raises(ValueError, match="needs out"):
        kernels.matmul(r(3, 4), r(4, 5), accumulate=True)


def _random(dtype, seed):
    rng = np.random.default_rng(seed)
    return lambda *s: rng.standard_normal(s).astype(dtype)


def _operand_layouts(r, split, monkeypatch):
    """Operand pairs (a, b) for matmul in every layout a layer passes (contiguous, or a transposed
    view), with the products cut across three threads when `split`."""
    if split:
        monkeypatch.setattr(kernels.products, "MATMUL_SPLIT_MIN_MACS", 0)
        monkeypatch.setattr(kernels.pool, "threads", lambda: 3)
    for M, K, Nc in [(40, 24, 70), (90, 33, 20)]:
        for a in (r(M, K), r(K, M).T):
            for b in (r(K, Nc), r(Nc, K).T):
                yield a, b


def test_split_rows_runs_each_part_on_one_thread():
    """split_rows: results in order, and inside a part rnnkit's own work stays on that part's thread."""
    old = kernels.threads()
    kernels.set_threads(2)
    try:
        seen = kernels.split_rows(lambda i, n0, n1: (i, n0, n1, kernels.threads()), [(0, 3), (3, 8)])
        assert kernels.threads() == 2
    finally:
        kernels.set_threads(old)
    assert seen == [(0, 0, 3, 1), (1, 3, 8, 1)]


@pytest.mark.parametrize("env,rnnkit_threads,blas_threads",
                         [("", 2, 1), ("3", 3, 1), ("0", 1, 2), ("two", 2, 1)])
def test_thread_settings_at_load(env, rnnkit_threads, blas_threads):
    """rnnkit takes OpenBLAS's thread count and sets OpenBLAS to one; RNNKIT_NUM_THREADS overrides the
    count, 0 leaves OpenBLAS alone, and anything else is said to be ignored."""
    import os
    import subprocess
    import sys

    # first the threads themselves; then a small layer's forward as the very first call, which runs
    # inside blas_single_thread: the count must still come from OpenBLAS's setting, not from there
    for first in ("kernels.threads()",
                  "rnnkit.make_recurrent('rnn', 4, 4).forward(np.ones((3, 1, 4), np.float32))"):
        code = (f"import numpy as np, rnnkit; from rnnkit import kernels; {first}; "
                "print(kernels.threads(), kernels.blas_threads())")
        run_env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "RNNKIT_NUM_THREADS": env}
        r = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True,
                           check=True)
        assert r.stdout.split() == [str(rnnkit_threads), str(blas_threads)], first
    assert ("RNNKIT_NUM_THREADS='two' is not a whole number" in r.stderr) == (env == "two")


@pytest.fixture
def blas_restored():
    """The BLAS in use before the test comes back after it."""
    before = kernels.blas.state["blas"]
    yield
    kernels.blas.state["blas"] = before


def _numpy_blas_path():
    return kernels.blas.numpy_blas()[3]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_products_through_another_blas(split, dtype, tol, blas_restored, monkeypatch):
    """With a BLAS other than NumPy's chosen (here NumPy's own library, loaded as "another" one),
    matmul's plain products go through its gemm with beta = 0 (not np.matmul), for every layout, cut
    across threads or not; and the cells' fast path still equals the reference."""
    assert kernels.set_blas(_numpy_blas_path()) == _numpy_blas_path()
    monkeypatch.setitem(kernels.blas.state, "numpy_blas", "/elsewhere/libopenblas.so")
    assert not kernels.blas.numpy_gemm()
    calls = []
    monkeypatch.setattr(np, "matmul", lambda *a, **k: calls.append(1))  # must not be reached
    for a, b in _operand_layouts(_random(dtype, 8), split, monkeypatch):
        want = a.astype(np.float64) @ b.astype(np.float64)
        out = np.full(want.shape, np.nan, dtype)  # beta = 0: what was there does not count
        assert kernels.matmul(a, b, out=out) is out
        assert rel_error(out, want) < tol
        assert rel_error(kernels.matmul(a, b), want) < tol
    assert not calls
    monkeypatch.undo()
    test_fast_equals_reference("lstm", dtype, tol, True, (6, 11, 7, 20))


@pytest.mark.skipif(kernels.mkl_path() is None, reason="Intel's mkl wheel not installed (rnnkit[mkl])")
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_mkl_fast_path_equals_reference(cell, dtype, tol, blas_restored):
    assert kernels.set_blas("mkl") == kernels.mkl_path()
    test_fast_equals_reference(cell, dtype, tol, True, (6, 11, 7, 20))
    test_fast_equals_reference(cell, dtype, tol, False, (4, 9, 3, 72))


@pytest.mark.parametrize("choice,said", [
    ("numpy", None),
    ("/nonexistent/libcblas.so", "RNNKIT_BLAS='/nonexistent/libcblas.so': cannot load it"),
    ("/bin/sh", "RNNKIT_BLAS='/bin/sh': cannot load it"),
    ("mkl", None if kernels.mkl_path() else "RNNKIT_BLAS='mkl': Intel's mkl wheel is not installed"),
])
def test_blas_choice_at_load(choice, said):
    """RNNKIT_BLAS: a choice that cannot be had is said in one line, and NumPy's BLAS is used."""
    import os
    import subprocess
    import sys

    code = "from rnnkit import kernels; print(kernels.status()['blas'])"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RNNKIT_BLAS": choice},
                       capture_output=True, text=True, check=True)
    want = kernels.mkl_path() if choice == "mkl" and said is None else _numpy_blas_path()
    assert r.stdout.strip() == want
    lines = r.stderr.strip().splitlines()
    if said is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("rnnkit: " + said), r.stderr
        assert lines[0].endswith("using NumPy's BLAS")


@pytest.mark.skipif(kernels.mkl_path() is None, reason="Intel's mkl wheel not installed (rnnkit[mkl])")
@pytest.mark.parametrize("intel", [True, False])
def test_default_blas_is_mkl_on_intel_cpus_only(intel, monkeypatch):
    monkeypatch.setattr(kernels.blas, "intel_cpu", lambda: intel)
    assert kernels.blas.find_blas("")[3] == (kernels.mkl_path() if intel else _numpy_blas_path())
    assert kernels.blas.find_blas("mkl")[3] == kernels.mkl_path()  # by name: on any CPU


def test_default_blas_without_mkl_is_numpys(monkeypatch):
    monkeypatch.setattr(kernels.blas, "mkl_path", lambda: None)
    monkeypatch.setattr(kernels.blas, "intel_cpu", lambda: True)
    assert kernels.blas.find_blas("")[3] == _numpy_blas_path()
    with pytest.raises(ValueError, match="mkl wheel is not installed"):
        kernels.blas.find_blas("mkl")


def test_set_blas_refuses_what_it_cannot_load(blas_restored):
    before = kernels.status()["blas"]
    with pytest.raises(ValueError, match="cannot load it"):
        kernels.set_blas("/nonexistent/libcblas.so")
    assert kernels.status()["blas"] == before


def _split_flat(monkeypatch):
    """Cut every element-wise kernel call into three ranges, as three threads would."""
    monkeypatch.setattr(kernels.pool, "FLAT_SPLIT_MIN", 1)
    monkeypatch.setattr(kernels.pool, "threads", lambda: 3)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 2e-6)])
@pytest.mark.parametrize("kind,kw", [("adam", {}), ("adam", {"weight_decay": 0.1}),
                                     ("adamw", {"weight_decay": 0.3})])
@pytest.mark.parametrize("split", [False, True])
def test_fused_adam_equals_reference(kind, kw, dtype, tol, split, monkeypatch):
    """The compiled Adam (one pass per element, ranges across threads) against the NumPy reference
    update over several steps, with both kinds of weight decay; 1003 elements: not a multiple of 16."""
    from rnnkit.optim import OPTIMIZERS

    if split:
        _split_flat(monkeypatch)
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(1003).astype(dtype)
    runs = []
    for fast in (True, False):
        p, g = p0.copy(), np.zeros_like(p0)
        opt = OPTIMIZERS[kind]([("w", p, g)], lr=1e-2, **kw)
        grng = np.random.default_rng(1)
        for _ in range(6):
            g[...] = np.sin(p) + 0.3 * grng.standard_normal(p.shape)
            if fast:
                opt.step()
            else:
                with kernels.reference():
                    opt.step()
        runs.append((p, opt.state["w"]["m"], opt.state["w"]["v"]))
    assert not np.array_equal(runs[0][0], p0)  # the weights moved
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_softmax_cross_entropy_equals_reference(dtype, tol, masked, split, smoothing, monkeypatch):
    if split:
        _split_flat(monkeypatch)
    rng = np.random.default_rng(2)
    logits = (4 * rng.standard_normal((7, 5, 301))).astype(dtype)
    y = rng.integers(0, 301, (7, 5))
    mask = rng.random((7, 5)) < 0.6 if masked else None
    loss, dlogits = softmax_cross_entropy(logits, y, mask, smoothing)
    with kernels.reference():
        ref_loss, ref_d = softmax_cross_entropy(logits, y, mask, smoothing)
    assert dlogits.shape == logits.shape and dlogits.dtype == logits.dtype
    assert loss == pytest.approx(ref_loss, rel=tol)
    np.testing.assert_allclose(dlogits, ref_d, rtol=tol, atol=tol)
    if masked:  # masked rows get no gradient at all
        assert not dlogits[~mask].any()
    zero_loss, zero_d = softmax_cross_entropy(logits, y, np.zeros((7, 5), bool))
    assert zero_loss == 0.0 and not zero_d.any()


def test_flush_subnormals_is_scoped():
    tiny = np.array([1e-30], np.float32)
    factor = np.float32(1e-10)  # 1e-40 is subnormal in float32
    assert (tiny * factor)[0] > 0
    with kernels.flush_subnormals():
        if kernels.status()["available"]:
            assert (tiny * factor)[0] == 0
            with kernels.flush_subnormals():  # nested: leaving the inner block keeps the outer's
                pass
            assert (tiny * factor)[0] == 0
    assert (tiny * factor)[0] > 0


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("split", [False, True])
def test_bag_mean_equals_reference(dtype, tol, split, monkeypatch):
    """The compiled mean of rows per bag and its scatter backward (columns across threads) against the
    NumPy reference, with grams shared between bags and repeated inside one; 37 columns."""
    from rnnkit.functional import bag_mean_backward_into, bag_mean_forward

    if split:
        _split_flat(monkeypatch)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((50, 37)).astype(dtype)
    sizes = rng.integers(1, 9, 40)
    grams = rng.integers(0, 50, int(sizes.sum()))
    grams[:3] = 7  # bag 0 (and maybe 1): one gram several times
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    dout = rng.standard_normal((40, 37)).astype(dtype)
    out, cache = bag_mean_forward(grams, offsets, W)
    dW = np.ones_like(W)  # backward adds into what is there
    bag_mean_backward_into(dW, dout, cache)
    with kernels.reference():
        ref_out, ref_cache = bag_mean_forward(grams, offsets, W)
        ref_dW = np.ones_like(W)
        bag_mean_backward_into(ref_dW, dout, ref_cache)
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(dW, ref_dW, rtol=tol, atol=tol)
    np.testing.assert_allclose(out[5], W[grams[offsets[5]:offsets[6]]].mean(axis=0), rtol=tol * 10)


def test_every_fast_test_above_really_ran_compiled_code(monkeypatch):
    """Guard for the equality tests: with the fast path on, no loop or element-wise kernel falls back
    to its NumPy reference for float32/float64 NumPy arrays (a fallback would make them compare the
    reference with itself)."""
    from rnnkit import cells
    from rnnkit.cells import gru, lstm, mingru, minlstm, rnn
    from rnnkit.functional import bag_mean_backward_into, bag_mean_forward
    from rnnkit.functional import layers as flayers
    from rnnkit.functional import losses
    from rnnkit.kernels import FlatKernel, LoopKernel
    from rnnkit.optim import Adam
    from rnnkit.optim import optimizers

    modules = (lstm, gru, rnn, mingru, minlstm, flayers, losses, optimizers)
    declared = [k for m in modules for k in vars(m).values() if isinstance(k, (LoopKernel, FlatKernel))]
    assert len(declared) == 16  # lstm 3, gru 3, rnn 2, mingru 2, minlstm 2, bag 2, softmax 1, adam 1

    def refuse(*a, **k):
        raise AssertionError("a NumPy reference ran on the fast path")

    for k in declared:
        monkeypatch.setattr(k, "reference", refuse)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for cell in ("lstm", "gru", "rnn", "mingru", "minlstm"):
            _run(cell, dtype, True, rng)
            for name in (cell,):
                layer = rnnkit_layer(name, dtype)
                layer.recompute = 2  # the recompute loops (lstm_cells, gru_cells) too
                x = rng.standard_normal((6, 3, D)).astype(dtype)
                out, _ = layer.forward(x)
                layer.backward(np.ones_like(out))
                layer.step(x[0])
        logits = rng.standard_normal((5, 7)).astype(dtype)
        softmax_cross_entropy(logits, rng.integers(0, 7, 5))
        W = rng.standard_normal((9, 4)).astype(dtype)
        grams, offsets = np.array([0, 3, 3, 8, 1]), np.array([0, 2])
        out, cache = bag_mean_forward(grams, offsets, W)
        bag_mean_backward_into(np.zeros_like(W), np.ones_like(out), cache)
        p = W.copy()
        opt = Adam([("w", p, np.ones_like(p))])
        opt.step()
    assert cells.names()  # the registry is untouched by the patches


def rnnkit_layer(name, dtype):
    import rnnkit

    return rnnkit.make_recurrent(name, D, H, dtype=dtype)


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
def test_bound_call_never_keeps_a_copy_of_a_weight(rng):
    """ops.run_bound keeps the fixed arguments' conversion only where they pass as themselves: a weight
    the call had to copy (not C-contiguous) is converted again at every call, so that an update made
    to it in place between calls is read."""
    from rnnkit import cells
    from rnnkit.backend import get_ops
    from rnnkit.cells import mamba as M

    cell = cells.create("mamba", state_size=3)
    D = H = 4
    p = cell.init_params(rng, D, H, np.float64)
    W = np.asfortranarray(p["W_out"])  # the same values, not C-contiguous: the call copies it
    p["W_out"] = W
    conv, ssm = (np.zeros(s) for s in cell.state_shape(2, H).values())
    x = rng.standard_normal((2, D))

    def step():
        out = np.empty((2, H))
        get_ops(x).run_bound(M.MAMBA_STEP, p, T=1, N=2, H=H, D=D, E=2 * H, S=3, rank=1, K=4, x=x,
                             conv=conv.copy(), ssm=ssm.copy(), out=out)
        return out

    first = step()
    W *= 3  # in place, on the caller's array
    with kernels.reference():
        want = cell.step(x, (conv, ssm), p)[0]
    assert not np.allclose(first, want)
    np.testing.assert_allclose(step(), want, rtol=1e-12, atol=1e-12)
