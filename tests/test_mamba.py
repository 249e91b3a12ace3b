"""Mamba's selective scan and block: the compiled chunked scan against the NumPy reference (float32 and
float64, masks, threads, chunk sizes), the parallel prefix form against the sequential one, numerical
gradients of the scan and of the block (float64, random upstream gradients, the initial state's
included), memory kept per chunk, and the one-step mode. The layer-level properties (stacks, both
directions, recompute, one step = the sequence) are test_every_cell.py's; PyTorch parity is
test_mamba_torch.py's."""

import contextlib

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import cells, kernels
from rnnkit.cells import mamba as M

T, N, D, H = 7, 3, 5, 5


def _cell(**kw):
    return cells.create("mamba", **{"state_size": 4, "expand": 2, "chunk": 3, **kw})


def _setup(rng, dtype=np.float64, D=D, H=H, **kw):
    cell = _cell(**kw)
    p = cell.init_params(rng, D, H, dtype)
    p = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(dtype) for k, v in p.items()}
    x = rng.standard_normal((T, N, D)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal(s)).astype(dtype) for s in cell.state_shape(N, H).values())
    mask = np.arange(T)[:, None] < np.array([T, 4, 1])[None, :]
    return cell, p, x, state, mask


def _scan_inputs(rng, dtype, E=6, S=4, R=2):
    xs = rng.standard_normal((T, N, E)).astype(dtype)
    pre = rng.standard_normal((T, N, E)).astype(dtype) - 1
    pre[0, 0, 0] = 25.0  # beyond softplus's linear threshold
    At = -np.exp(rng.standard_normal((S, E))).astype(dtype)
    dbc = rng.standard_normal((T, N, R + 2 * S)).astype(dtype)
    skip = rng.standard_normal(E).astype(dtype)
    xz = rng.standard_normal((T, N, 2 * E)).astype(dtype)
    h0 = rng.standard_normal((N, S, E)).astype(dtype)
    return xs, pre, At, dbc, skip, xz, h0


def _scan_bw(xs, pre, At, dbc, skip, xz, y, mask, kept, dout, dh, chunk):
    T_, N_, E = xs.shape
    S = At.shape[0]
    out = {"dxs": np.empty_like(xs), "dpre": np.empty_like(xs), "ddbc": np.zeros_like(dbc),
           "dxz": np.zeros_like(xz), "dA": np.empty((N_, S, E), xs.dtype),
           "dskip": np.empty((N_, E), xs.dtype), "trace": np.empty((T_ + 1, N_, S, E), xs.dtype)}
    dh = dh.copy()
    from rnnkit.backend import get_ops
    get_ops(xs).run(M.MAMBA_SCAN_BW, T=T_, N=N_, H=E, S=S, rank=dbc.shape[-1] - 2 * S, k=chunk, xs=xs,
                    pre=pre, At=At, dbc=dbc, skip=skip, xz=xz, y=y, mask=mask, kept=kept, dout=dout,
                    dh=dh, **out)
    out["dh0"] = dh
    return out


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, T, 50])
def test_compiled_scan_equals_reference(dtype, tol, masked, chunk, rng, three_threads):
    xs, pre, At, dbc, skip, xz, h0 = _scan_inputs(rng, dtype)
    mask = (np.arange(T)[:, None] < np.array([T, 4, 1])[None, :]) if masked else None
    fast = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, mask, chunk=chunk)
    with kernels.reference():
        ref = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, mask, chunk=chunk)
    for a, b in zip(fast, ref):
        assert rel_error(a, b) < tol
    assert fast[3].shape == (-(-T // chunk), N, At.shape[0], xs.shape[2])  # O(T/k) states kept
    assert three_threads == [3]  # the forward ran as three row ranges
    dout = rng.standard_normal(xs.shape).astype(dtype)
    dh = rng.standard_normal(h0.shape).astype(dtype)
    g_fast = _scan_bw(xs, pre, At, dbc, skip, xz, fast[0], mask, fast[3], dout, dh, chunk)
    with kernels.reference():
        g_ref = _scan_bw(xs, pre, At, dbc, skip, xz, ref[0], mask, ref[3], dout, dh, chunk)
    for key in g_fast:
        assert rel_error(g_fast[key], g_ref[key]) < tol, key


def test_parallel_scan_equals_sequential(rng):
    xs, pre, At, dbc, skip, xz, h0 = _scan_inputs(rng, np.float64)
    mask = np.arange(T)[:, None] < np.array([T, 4, 1])[None, :]
    for m in (None, mask):
        with kernels.reference():
            seq = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, m)
        par = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, m, parallel=True)
        for a, b in zip(seq, par):
            assert rel_error(a, b) < 1e-12


@pytest.mark.parametrize("masked", [False, True])
def test_scan_has_the_numerical_gradients(masked, rng):
    """Every input of the fused scan, the initial state included, against central differences of
    sum(out * dout) + sum(h_T * dh_T)."""
    xs, pre, At, dbc, skip, xz, h0 = _scan_inputs(rng, np.float64)
    mask = (np.arange(T)[:, None] < np.array([T, 4, 1])[None, :]) if masked else None
    dout = rng.standard_normal(xs.shape)
    dhT = rng.standard_normal(h0.shape)
    y, out, hT, kept = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, mask, chunk=3)
    g = _scan_bw(xs, pre, At, dbc, skip, xz, y, mask, kept, dout, dhT, 3)
    S = At.shape[0]

    def loss():
        _, o, h, _ = M.selective_scan(xs, pre, At, dbc, skip, xz, h0, mask, chunk=3)
        return np.array(np.sum(o * dout) + np.sum(h * dhT))

    one = np.array(1.0)
    assert rel_error(g["dxs"], numerical_grad(loss, xs, one)) < 1e-6
    assert rel_error(g["dpre"], numerical_grad(loss, pre, one)) < 1e-6
    assert rel_error(g["dA"].sum(axis=0), numerical_grad(loss, At, one)) < 1e-6
    assert rel_error(g["ddbc"][..., -2 * S:], numerical_grad(loss, dbc, one)[..., -2 * S:]) < 1e-6
    assert rel_error(g["dskip"].sum(axis=0), numerical_grad(loss, skip, one)) < 1e-6
    assert rel_error(g["dxz"][..., xs.shape[2]:], numerical_grad(loss, xz, one)[..., xs.shape[2]:]) < 1e-6
    assert rel_error(g["dh0"], numerical_grad(loss, h0, one)) < 1e-6
    assert rel_error(g["trace"][0], g["dh0"]) == 0


@pytest.mark.parametrize("DH", [(D, H), (4, 6)])
@pytest.mark.parametrize("masked", [False, True])
def test_block_has_the_numerical_gradients(DH, masked, rng):
    """The whole block (with its residual where D = H, without where the sizes differ), every parameter
    and both parts of the initial state, the final state's gradient given."""
    cell, p, x, state, mask = _setup(rng, D=DH[0], H=DH[1])
    mask = mask if masked else None
    out, final, cache = cell.forward(x, state, p, mask)
    dout = rng.standard_normal(out.shape)
    if mask is not None:
        dout *= mask[:, :, None]
    dfinal = tuple(rng.standard_normal(f.shape) for f in final)
    dx, dstate0, grads = cell.backward(dout, cache, dfinal)

    def loss():
        o, f, _ = cell.forward(x, state, p, mask)
        return np.array(np.sum(o * dout) + sum(np.sum(a * b) for a, b in zip(f, dfinal)))

    one = np.array(1.0)
    assert rel_error(dx, numerical_grad(loss, x, one)) < 1e-6
    for s, d in zip(state, dstate0):
        assert rel_error(d, numerical_grad(loss, s, one)) < 1e-6
    for name in p:
        assert rel_error(grads[name], numerical_grad(loss, p[name], one)) < 1e-6, name


def test_padded_steps_carry_the_state_and_take_no_gradient(rng):
    """A sequence's final state is the one at its own length (as if run alone), and what follows its
    end (the padding's inputs and their upstream gradients) changes nothing."""
    cell, p, x, state, mask = _setup(rng)
    out, final, cache = cell.forward(x, state, p, mask)
    n, L = 1, 4
    alone, fin_alone, _ = cell.forward(x[:L, n:n + 1], tuple(s[n:n + 1] for s in state), p)
    np.testing.assert_allclose(out[:L, n], alone[:, 0], rtol=1e-12, atol=1e-12)
    for f, g in zip(final, fin_alone):
        np.testing.assert_allclose(f[n], g[0], rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, _, _ = cell.backward(dout, cache, tuple(np.zeros_like(f) for f in final))
    assert np.all(dx[~mask] == 0)


def test_step_mode_streams_the_sequence(rng):
    """Generation one token at a time, and a sequence run in pieces with the state carried, give the
    whole-sequence outputs and final state."""
    cell, p, x, state, _ = _setup(rng)
    out, final, _ = cell.forward(x, state, p)
    s = state
    for t in range(T):
        y, s = cell.step(x[t], s, p)
        np.testing.assert_allclose(y, out[t], rtol=1e-12, atol=1e-12)
    for u, v in zip(s, final):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)
    a, s1, _ = cell.forward(x[:3], state, p)
    b, s2, _ = cell.forward(x[3:], s1, p)
    np.testing.assert_allclose(np.concatenate([a, b]), out, rtol=1e-12, atol=1e-12)
    for u, v in zip(s2, final):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


def test_initialisation_follows_mamba_simple(rng):
    cell = cells.create("mamba")
    p = cell.init_params(rng, 64, 64, np.float32)
    E, S = 128, 16
    assert p["W_in"].shape == (64, 2 * E) and p["W_dt"].shape == (4, E)  # dt_rank = ceil(64 / 16)
    np.testing.assert_allclose(-np.exp(p["A_log"][3]), -np.arange(1, S + 1), rtol=1e-6)  # S4D-real
    dt = np.log1p(np.exp(p["b_dt"].astype(np.float64)))  # softplus(b_dt): dt at initialisation
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert np.all(p["skip"] == 1) and np.all(p["norm"] == 1)


@pytest.mark.parametrize("bad", [{"state_size": 0}, {"expand": -1}, {"chunk": 0}, {"dt_rank": -2},
                                 {"conv_width": 1.5}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        cells.create("mamba", **bad)


def test_wrong_state_shape_is_named(rng):
    cell, p, x, state, _ = _setup(rng)
    with pytest.raises(ValueError, match="ssm0"):
        cell.forward(x, (state[0], state[1][:, :, :2]), p)


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("K", [1, 2, 4])
def test_compiled_block_equals_reference(dtype, tol, K, rng, three_threads):
    """The block's compiled loops (the convolution and its SiLU, the scan) against their references,
    rows cut across three threads, with masks (a sequence shorter than the convolution's width)."""
    cell, p, x, state, mask = _setup(rng, dtype, conv_width=K)
    dfinal = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state)
    dout = rng.standard_normal((T, N, H)).astype(dtype)
    runs = []
    for reference in (False, True):
        with kernels.reference() if reference else contextlib.nullcontext():
            out, final, cache = cell.forward(x, state, p, mask)
            runs.append((out, final, cell.backward(dout, cache, dfinal)))
    (o1, f1, (dx1, ds1, g1)), (o2, f2, (dx2, ds2, g2)) = runs
    assert rel_error(o1, o2) < tol and rel_error(dx1, dx2) < tol
    for a, b in list(zip(f1, f2)) + list(zip(ds1, ds2)):
        assert a.shape == b.shape and (a.size == 0 or rel_error(a, b) < tol)
    for name in g1:
        assert rel_error(g1[name], g2[name]) < tol, name


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
def test_step_with_weights_bound_sees_them_updated_and_replaced(rng):
    """The step keeps its weights' conversion between tokens (`ops.run_bound`): a weight updated in
    place, or replaced by another array, is read as it is now, and the result stays the reference's."""
    cell, p, x, state, _ = _setup(rng)
    x0 = x[0]
    with kernels.reference():
        want, _ = cell.step(x0, state, p)
    got, _ = cell.step(x0, state, p)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    p["W_out"] *= 2                          # in place: the same object, new values
    p["skip"] = p["skip"] + 1                # a new object
    with kernels.reference():
        want, _ = cell.step(x0, state, p)
    got, _ = cell.step(x0, state, p)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
