"""What every registered cell must do through the shared layer, checked for each name in the registry
(the built-ins, and any plugin imported before collection: the IndRNN example is): a stacked
bidirectional layer with masks has the numerical gradients, recompute gives plain BPTT's gradients,
one-step inference gives the sequence forward, and the compiled path gives the NumPy reference.

A cell's own tests check its math in detail (test_gradients, test_mingru, test_adding_a_cell, ...);
these are the properties the rest of rnnkit relies on, so a new cell gets them checked by registering.
"""

import numpy as np
import pytest

import rnnkit
import rnnkit.diagnostics
from gradcheck import numerical_grad, rel_error
from rnnkit import cells, kernels

T, N, D, H = 5, 3, 4, 3
CELLS = cells.names()


def _layer(name, dtype=np.float64, **kw):
    """The cell's own initialisation, jittered: an initial value of exactly zero (RWKV's output
    projections, which start each block as the identity) would leave paths with no gradient to check."""
    layer = rnnkit.make_recurrent(name, D, H, dtype=dtype, seed=7, **kw)
    rng = np.random.default_rng(8)
    for v in layer.params.values():
        v += (0.3 * rng.standard_normal(v.shape)).astype(dtype)
    return layer


def _inputs(layer, rng, dtype=np.float64):
    x = rng.standard_normal((T, N, D)).astype(dtype)
    mask = np.arange(T)[:, None] < np.array([T, 3, 1])[None, :]
    state = layer.join_state(tuple(0.5 * rng.standard_normal(s.shape).astype(dtype)
                                   for s in layer.state_parts(layer.init_state(N))))
    return x, mask, state


def _loss_and_grads(layer, x, mask, state, dout, dfinal):
    """Forward and backward with upstream gradients dout (outputs; zero at padded steps, which the
    layer's backward ignores) and dfinal (the final state, or None)."""
    out, final = layer.forward(x, state, mask)
    layer.zero_grad()
    dx, dstate0 = layer.backward(dout, dfinal)
    loss = np.sum(out * dout)
    if dfinal is not None:
        loss += sum(np.sum(f * g) for f, g in zip(layer.state_parts(final), layer.state_parts(dfinal)))
    return loss, dx, dstate0, {k: g.copy() for k, g in layer.grads.items()}


@pytest.mark.parametrize("name", CELLS)
def test_stacked_bidirectional_masked_layer_has_the_numerical_gradients(name, rng):
    layer = _layer(name, num_layers=2, bidirectional=True)
    x, mask, state = _inputs(layer, rng)
    out, final = layer.forward(x, state, mask)
    dout = rng.standard_normal(out.shape) * mask[:, :, None]
    dfinal = layer.join_state(tuple(rng.standard_normal(s.shape) for s in layer.state_parts(final)))
    _, dx, dstate0, grads = _loss_and_grads(layer, x, mask, state, dout, dfinal)

    def loss():
        return np.array(_loss_and_grads(layer, x, mask, state, dout, dfinal)[0])

    assert rel_error(dx, numerical_grad(loss, x, np.array(1.0))) < 1e-6
    for part, d in zip(layer.state_parts(state), layer.state_parts(dstate0)):
        assert rel_error(d, numerical_grad(loss, part, np.array(1.0))) < 1e-6
    for key, p in layer.params.items():
        assert rel_error(grads[key], numerical_grad(loss, p, np.array(1.0))) < 1e-6, key


@pytest.mark.parametrize("name", CELLS)
def test_recompute_gives_plain_bptt(name, rng):
    plain, seg = _layer(name, num_layers=2), _layer(name, num_layers=2, recompute=2)
    x, mask, state = _inputs(plain, rng)
    out, final = plain.forward(x, state, mask)
    dout = rng.standard_normal(out.shape) * mask[:, :, None]
    dfinal = plain.join_state(tuple(rng.standard_normal(s.shape) for s in plain.state_parts(final)))
    a = _loss_and_grads(plain, x, mask, state, dout, dfinal)
    b = _loss_and_grads(seg, x, mask, state, dout, dfinal)
    assert abs(a[0] - b[0]) < 1e-10 and rel_error(a[1], b[1]) < 1e-10
    for g0, g1 in zip(plain.state_parts(a[2]), seg.state_parts(b[2])):
        assert rel_error(g0, g1) < 1e-10
    for key in a[3]:
        assert rel_error(a[3][key], b[3][key]) < 1e-10, key


@pytest.mark.parametrize("name", CELLS)
def test_one_step_at_a_time_gives_the_sequence_forward(name, rng):
    layer = _layer(name, num_layers=2)
    x, _, state = _inputs(layer, rng)
    out, final = layer.forward(x, state)
    s = state
    for t in range(T):
        y, s = layer.step(x[t], s)
        np.testing.assert_allclose(y, out[t], rtol=1e-12, atol=1e-12)
    for a, b in zip(layer.state_parts(s), layer.state_parts(final)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not kernels.status()["available"], reason="compiled kernels unavailable")
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name", CELLS)
def test_compiled_path_gives_the_reference(name, dtype, tol, rng):
    layer = _layer(name, dtype=dtype, num_layers=2, bidirectional=True)
    x, mask, state = _inputs(layer, rng, dtype)
    out, final = layer.forward(x, state, mask)
    dout = (rng.standard_normal(out.shape) * mask[:, :, None]).astype(dtype)
    fast = _loss_and_grads(layer, x, mask, state, dout, None)
    with kernels.reference():
        ref = _loss_and_grads(layer, x, mask, state, dout, None)
    assert rel_error(fast[1], ref[1]) < tol
    for key in fast[3]:
        assert rel_error(fast[3][key], ref[3][key]) < tol, key


@pytest.mark.parametrize("name", CELLS)
def test_the_cell_declares_what_diagnostics_read(name, rng):
    layer = _layer(name)
    cell = layer.cell
    assert cells.create(name) == cell and name in cells.describe()
    views = dict(rnnkit.diagnostics.activations(layer, rng.standard_normal((T, N, D))))["layer 0"]
    assert list(views)[:len(cell.state)] == list(cell.state)  # the state's parts first, then the gates
    assert [g.name for g in cell.gates] == list(views)[len(cell.state):]
    for g in cell.gates:
        v = views[g.name]
        if g.activation == "sigmoid":
            assert v.min() >= 0 and v.max() <= 1
