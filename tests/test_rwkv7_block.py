"""RWKV-7's block (rnnkit.cells.rwkv7.rwkv7_forward / rwkv7_backward): every gradient against central
differences in float64 along a random upstream gradient, for the first layer (whose values become
v_first, with a gradient arriving from later layers) and a later one (reading v_first), with an input
projection, a mask of variable lengths, a non-zero initial state and a gradient on the final state."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.cells import rwkv7 as R

T, N, M, C, D = 5, 3, 8, 4, 6  # M channels in heads of C
H = M // C
RANKS = (3, 3, 2, 4)


def _setup(D, first, masked, seed=0):
    rng = np.random.default_rng(seed)
    p = {k: rng.normal(0, 0.5, s) for k, s in R.param_shapes7(D, M, C, RANKS).items()}
    x = rng.normal(0, 1, (T, N, D))
    state = (rng.normal(0, 1, (N, M)), rng.normal(0, 0.5, (N, H, C, C)), rng.normal(0, 1, (N, M)))
    vf = None if first else rng.normal(0, 1, (T, N, M))
    mask = None
    if masked:
        mask = np.arange(T)[:, None] < np.array([T, 2, 4])[None, :]
    ups = dict(dout=rng.normal(size=(T, N, M)), dT=rng.normal(size=(N, M)),
               dS=rng.normal(size=(N, H, C, C)), dC=rng.normal(size=(N, M)),
               dvf=rng.normal(size=(T, N, M)))
    return p, x, state, vf, mask, ups


def _loss_parts(p, x, state, vf, mask, ups, first):
    out, final, cache = R.rwkv7_forward(x, state, p, mask, v_first=vf, chunk=2)
    if mask is not None:
        out = out * mask[:, :, None]
    L = [(out, ups["dout"]), (final[0], ups["dT"]), (final[1], ups["dS"]), (final[2], ups["dC"])]
    if first:
        vfo = cache.vf if mask is None else cache.vf * mask[:, :, None]
        L.append((vfo, ups["dvf"]))
    return L


@pytest.mark.parametrize("first,masked,Din", [(True, False, M), (False, False, M), (True, True, D),
                                              (False, True, D)])
def test_block_gradients(first, masked, Din):
    p, x, state, vf, mask, ups = _setup(Din, first, masked)
    out, final, cache = R.rwkv7_forward(x, state, p, mask, v_first=vf, chunk=2)
    dvf_up = ups["dvf"] if mask is None else ups["dvf"] * mask[:, :, None]
    dx, dstate, grads, dvf = R.rwkv7_backward(ups["dout"], cache, (ups["dT"], ups["dS"], ups["dC"]),
                                              dvf_up if first else None)

    def f():
        return sum(float(np.sum(a * b)) for a, b in _loss_parts(p, x, state, vf, mask, ups, first))

    def check(arr, analytic, name):
        num = numerical_grad(lambda: np.array(f()), arr, np.array(1.0))
        assert rel_error(num, analytic) < 1e-6, name

    check(x, dx, "dx")
    for i, name in enumerate(("tshift0", "wkv0", "cshift0")):
        check(state[i], dstate[i], name)
    for name in p:
        if first and name in ("v0", "v1", "v2"):
            assert not np.any(grads[name])
            continue
        check(p[name], grads[name], name)
    if first:
        assert dvf is None
    else:
        check(vf, dvf, "v_first")
