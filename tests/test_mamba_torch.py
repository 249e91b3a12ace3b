"""Mamba against PyTorch on identical float64 weights: rnnkit's fused selective scan against
`selective_scan_ref` (mamba_ssm's pure-PyTorch reference, in tests/torch_mamba.py), and the whole block
(outputs, the final state and every gradient, the initial state's included) against the block written
as mamba_simple.py's slow path computes it, differentiated by autograd; the one-step mode against
Mamba.step. Test-only PyTorch, as for the other cells (test_torch_parity.py)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gradcheck import rel_error  # noqa: E402
from rnnkit import cells  # noqa: E402
from rnnkit.cells import mamba as M  # noqa: E402

import torch_mamba as TM  # noqa: E402

T, N, D, H = 9, 3, 6, 6
TOL = 1e-10


def _setup(rng, D=D, H=H, **kw):
    cell = cells.create("mamba", **{"state_size": 5, "expand": 2, "chunk": 4, **kw})
    p = cell.init_params(rng, D, H, np.float64)
    p = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in p.items()}
    x = rng.standard_normal((T, N, D))
    state = tuple(0.5 * rng.standard_normal(s) for s in cell.state_shape(N, H).values())
    return cell, p, x, state


def test_scan_matches_selective_scan_ref(rng):
    """Outputs, final state and the gradient of every input: delta is the pre-softplus step size with
    its bias (delta_bias, delta_softplus=True), the skip D and the gate z inside, as the slow path
    calls it; rnnkit's (T, N, E) arrays are mamba_ssm's (N, E, T)."""
    E, S, R = 4, 3, 2
    xs, pre, dbc, xz = (rng.standard_normal(s) for s in ((T, N, E), (T, N, E), (T, N, R + 2 * S),
                                                          (T, N, 2 * E)))
    A = -np.exp(rng.standard_normal((E, S)))
    skip, b = rng.standard_normal(E), rng.standard_normal(E)
    h0 = rng.standard_normal((N, E, S))
    At = np.ascontiguousarray(A.T)
    y, out, hT, kept = M.selective_scan(xs, pre + b, At, dbc, skip, xz, h0.transpose(0, 2, 1).copy())

    def bel(a):  # (T, N, C) -> (N, C, T)
        return torch.tensor(a.transpose(1, 2, 0).copy(), requires_grad=True)

    tu, tdelta, tz = bel(xs), bel(pre), bel(xz[..., E:])
    tB, tC = bel(dbc[..., R:R + S]), bel(dbc[..., R + S:])
    tA, tskip, tb, th0 = (torch.tensor(v, requires_grad=True) for v in (A, skip, b, h0))
    tout, tlast = TM.selective_scan_ref(tu, tdelta, tA, tB, tC, tskip, z=tz, delta_bias=tb,
                                        delta_softplus=True, return_last_state=True, h0=th0)
    assert rel_error(out, tout.detach().numpy().transpose(2, 0, 1)) < TOL
    assert rel_error(hT.transpose(0, 2, 1), tlast.detach().numpy()) < TOL

    dout, dhT = rng.standard_normal(out.shape), rng.standard_normal(h0.shape)
    (torch.sum(tout * bel(dout).detach()) + torch.sum(tlast * torch.tensor(dhT))).backward()
    g = {k: np.empty_like(v) for k, v in (("dxs", xs), ("dpre", xs), ("ddbc", dbc), ("dxz", xz))}
    g.update(dA=np.empty((N, S, E)), dskip=np.empty((N, E)))
    dh = np.ascontiguousarray(dhT.transpose(0, 2, 1))
    from rnnkit.backend import get_ops
    get_ops(xs).run(M.MAMBA_SCAN_BW, T=T, N=N, H=E, S=S, rank=R, k=32, xs=xs, pre=pre + b, At=At,
                    dbc=dbc, skip=skip, xz=xz, y=y, mask=None, kept=kept, dout=dout, dh=dh,
                    trace=None, **g)

    def tm(t):  # (N, C, T) gradient -> (T, N, C)
        return t.grad.numpy().transpose(2, 0, 1)

    assert rel_error(g["dxs"], tm(tu)) < TOL
    assert rel_error(g["dpre"], tm(tdelta)) < TOL
    assert rel_error(g["dpre"].sum(axis=(0, 1)), tb.grad.numpy()) < TOL      # delta_bias
    assert rel_error(g["ddbc"][..., R:R + S], tm(tB)) < TOL
    assert rel_error(g["ddbc"][..., R + S:], tm(tC)) < TOL
    assert rel_error(g["dxz"][..., E:], tm(tz)) < TOL
    assert rel_error(g["dA"].sum(axis=0).T, tA.grad.numpy()) < TOL
    assert rel_error(g["dskip"].sum(axis=0), tskip.grad.numpy()) < TOL
    assert rel_error(dh.transpose(0, 2, 1), th0.grad.numpy()) < TOL


@pytest.mark.parametrize("DH", [(D, H), (4, 6)])
def test_block_matches_pytorch(DH, rng):
    """The block with its residual (D = H) and without (D != H): outputs, both parts of the final
    state, and the gradients of x, of both parts of the initial state and of every parameter, for
    random upstream gradients on the outputs and on the final state."""
    cell, p, x, state = _setup(rng, D=DH[0], H=DH[1])
    out, final, cache = cell.forward(x, state, p)
    tp = TM.torch_params(p)
    tx = torch.tensor(x, requires_grad=True)
    tconv, tssm = (torch.tensor(s, requires_grad=True) for s in state)
    tout, tfconv, tfssm = TM.mamba_layer(tx, tp, tconv, tssm)
    assert rel_error(out, tout.detach().numpy()) < TOL
    assert rel_error(final[0], tfconv.detach().numpy()) < TOL
    assert rel_error(final[1], tfssm.detach().numpy()) < TOL

    dout = rng.standard_normal(out.shape)
    dfinal = tuple(rng.standard_normal(f.shape) for f in final)
    (torch.sum(tout * torch.tensor(dout)) + torch.sum(tfconv * torch.tensor(dfinal[0]))
     + torch.sum(tfssm * torch.tensor(dfinal[1]))).backward()
    dx, (dconv0, dssm0), grads = cell.backward(dout, cache, dfinal)
    assert rel_error(dx, tx.grad.numpy()) < TOL
    assert rel_error(dconv0, tconv.grad.numpy()) < TOL
    assert rel_error(dssm0, tssm.grad.numpy()) < TOL
    for name, g in TM.numpy_grads(tp).items():
        assert rel_error(grads[name], g) < TOL, name


def test_step_matches_mamba_step(rng):
    """Generation: rnnkit's step against Mamba.step, token by token from a non-zero state."""
    cell, p, x, state = _setup(rng)
    tp = TM.torch_params(p, requires_grad=False)
    s, ts = state, tuple(torch.tensor(v) for v in state)
    with torch.no_grad():
        for t in range(T):
            y, s = cell.step(x[t], s, p)
            ty, tconv, tssm = TM.mamba_step(torch.tensor(x[t]), tp, *ts)
            ts = (tconv, tssm)
            assert rel_error(y, ty.numpy()) < TOL
    assert rel_error(s[0], ts[0].numpy()) < TOL and rel_error(s[1], ts[1].numpy()) < TOL
