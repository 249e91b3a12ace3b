"""The PyTorch Mamba references (tests/torch_mamba.py) checked among themselves in float64, and
against a NumPy loop written from rnnkit's interface text, before anything is tested against them."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_mamba as tm  # noqa: E402

F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)


def _params(rng, D, H, S=3, expand=2, K=4, R=2):
    """Mamba's initialisation with every parameter moved off its special value (norm 1, skip 1,
    A_log = log(1..S)), so that a parameter read in the wrong place or transposed shows."""
    p = tm.mamba_init(rng, D, H, state_size=S, expand=expand, conv_width=K, dt_rank=R,
                      dtype=np.float64)
    for k in ("norm", "skip", "A_log", "b_dt"):
        p[k] = p[k] + 0.3 * rng.standard_normal(p[k].shape)
    return p


def _states(rng, N, p, scale=0.5):
    K, E = p["conv_w"].shape
    S = p["A_log"].shape[1]
    return scale * rng.standard_normal((N, K - 1, E)), scale * rng.standard_normal((N, E, S))


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _np_layer(x, p, conv0, ssm0, eps=1e-5):
    """rnnkit's Mamba cell, a step at a time in NumPy, as its interface states it."""
    T, N, D = x.shape
    K, E = p["conv_w"].shape
    S, R = p["A_log"].shape[1], p["W_dt"].shape[0]
    H = p["W_out"].shape[1]
    u = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * p["norm"]
    xz = u @ p["W_in"]
    xi, z = xz[..., :E], xz[..., E:]
    past = np.concatenate([conv0.transpose(1, 0, 2), xi])  # (K-1+T, N, E), oldest first
    A = -np.exp(p["A_log"])
    h = ssm0.copy()
    out = np.empty((T, N, H))
    for t in range(T):
        xc = p["conv_b"] + sum(p["conv_w"][j] * past[t + j] for j in range(K))
        xs = xc / (1 + np.exp(-xc))
        low_B_C = xs @ p["W_x"]
        dt_low, Bt, Ct = low_B_C[:, :R], low_B_C[:, R:R + S], low_B_C[:, R + S:]
        dt = np.log1p(np.exp(dt_low @ p["W_dt"] + p["b_dt"]))
        h = np.exp(dt[:, :, None] * A) * h + (dt * xs)[:, :, None] * Bt[:, None, :]
        y = np.einsum("nes,ns->ne", h, Ct) + p["skip"] * xs
        out[t] = (y * z[t] / (1 + np.exp(-z[t]))) @ p["W_out"]
    if D == H:
        out = x + out
    return out, past[T:].transpose(1, 0, 2), h


def _scan_inputs(rng, N=2, E=5, S=3, L=13):
    return dict(u=rng.standard_normal((N, E, L)), delta=rng.standard_normal((N, E, L)),
                A=-np.exp(0.5 * rng.standard_normal((E, S))), B=rng.standard_normal((N, S, L)),
                C=rng.standard_normal((N, S, L)), D=rng.standard_normal(E),
                z=rng.standard_normal((N, E, L)), delta_bias=rng.standard_normal(E),
                h0=rng.standard_normal((N, E, S)))


def _scan_all(a, h0=True):
    """selective_scan_ref and the two mambapy scans on the same inputs: [(y, last_state), ...]."""
    h0 = a["h0"] if h0 else None
    ref = tm.selective_scan_ref(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], z=a["z"],
                                delta_bias=a["delta_bias"], delta_softplus=True,
                                return_last_state=True, h0=h0)
    delta = F.softplus(a["delta"] + a["delta_bias"][:, None]).transpose(1, 2)
    others = []
    for fn in (tm.selective_scan_pscan, tm.selective_scan_seq):
        y, last = fn(a["u"].transpose(1, 2), delta, a["A"], a["B"].transpose(1, 2),
                     a["C"].transpose(1, 2), a["D"], h0=h0, return_last_state=True)
        others.append(((y * F.silu(a["z"].transpose(1, 2))).transpose(1, 2), last))
    return [ref] + others


@pytest.mark.parametrize("L", [1, 2, 3, 4, 13, 16])
@pytest.mark.parametrize("with_h0", [False, True])
def test_the_three_scans_and_a_plain_loop_agree(rng, L, with_h0):
    a = _scan_inputs(rng, L=L)
    ys = _scan_all({k: _t(v) for k, v in a.items()}, h0=with_h0)
    # the plain loop, from the equations
    dt = np.log1p(np.exp(a["delta"] + a["delta_bias"][:, None]))
    h = a["h0"].copy() if with_h0 else np.zeros_like(a["h0"])
    want = np.empty_like(a["u"])
    for t in range(L):
        h = (np.exp(dt[:, :, t, None] * a["A"]) * h
             + (dt[:, :, t] * a["u"][:, :, t])[:, :, None] * a["B"][:, None, :, t])
        y = np.einsum("bds,bs->bd", h, a["C"][:, :, t]) + a["D"] * a["u"][:, :, t]
        want[:, :, t] = y * a["z"][:, :, t] / (1 + np.exp(-a["z"][:, :, t]))
    for y, last in ys:
        np.testing.assert_allclose(y.numpy(), want, **TOL)
        np.testing.assert_allclose(last.numpy(), h, **TOL)


@pytest.mark.parametrize("L", [3, 8, 13])
def test_pscan_hand_written_backward_equals_autograd_through_the_loop(rng, L):
    a = _scan_inputs(rng, L=L)
    dy = rng.standard_normal(a["u"].shape)
    dlast = rng.standard_normal(a["h0"].shape)
    grads = []
    for which in range(3):
        leaves = {k: _t(v, grad=True) for k, v in a.items()}
        y, last = _scan_all(leaves)[which]
        ((y * _t(dy)).sum() + (last * _t(dlast)).sum()).backward()
        grads.append({k: v.grad.numpy() for k, v in leaves.items()})
    for other in grads[1:]:
        for k in a:
            np.testing.assert_allclose(other[k], grads[0][k], rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("L", [1, 2, 5, 8])
def test_pscan_passes_gradcheck(rng, L):
    A = _t(rng.uniform(0.3, 0.95, (2, L, 3, 2)), grad=True)
    X = _t(rng.standard_normal((2, L, 3, 2)), grad=True)
    assert torch.autograd.gradcheck(tm.pscan, (A, X))


@pytest.mark.parametrize("D,H", [(6, 6), (5, 7)])
@pytest.mark.parametrize("scan", ["ref", "pscan", "seq"])
def test_layer_is_the_interface_written_out(rng, D, H, scan):
    T, N = 9, 3
    p = _params(rng, D, H)
    x = rng.standard_normal((T, N, D))
    conv0, ssm0 = _states(rng, N, p)
    want = _np_layer(x, p, conv0, ssm0)
    got = tm.mamba_layer(_t(x), tm.torch_params(p, False), _t(conv0), _t(ssm0), scan=scan)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w, **TOL)


def test_zero_conv_state_is_mambas_zero_padding(rng):
    T, N, D = 7, 2, 6
    p = tm.torch_params(_params(rng, D, D), False)
    x = _t(rng.standard_normal((T, N, D)))
    padded = tm.mamba_layer(x, p)
    zeros = tm.mamba_layer(x, p, torch.zeros(N, 3, 2 * D, dtype=torch.float64),
                           torch.zeros(N, 2 * D, 3, dtype=torch.float64))
    for a, b in zip(padded, zeros):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **TOL)


@pytest.mark.parametrize("D,H", [(6, 6), (5, 7)])
def test_step_by_step_equals_the_whole_sequence(rng, D, H):
    T, N = 8, 3
    p = _params(rng, D, H)
    tp = tm.torch_params(p, False)
    x = _t(rng.standard_normal((T, N, D)))
    conv0, ssm0 = (_t(s) for s in _states(rng, N, p))
    out, conv, ssm = tm.mamba_layer(x, tp, conv0, ssm0)
    c, s = conv0, ssm0
    for t in range(T):
        y, c, s = tm.mamba_step(x[t], tp, c, s)
        np.testing.assert_allclose(y.numpy(), out[t].numpy(), **TOL)
    np.testing.assert_allclose(c.numpy(), conv.numpy(), **TOL)
    np.testing.assert_allclose(s.numpy(), ssm.numpy(), **TOL)


@pytest.mark.parametrize("cut", [1, 2, 3, 7])
@pytest.mark.parametrize("scan", ["ref", "pscan"])
def test_initial_state_continues_the_prefix(rng, cut, scan):
    """Running x[:cut] then x[cut:] from its final states is the whole sequence, outputs and
    gradients, also when a piece is shorter than the K-1 inputs the conv state holds."""
    T, N, D = 10, 2, 6
    p = _params(rng, D, D)
    x = rng.standard_normal((T, N, D))
    dy = rng.standard_normal((T, N, D))
    runs = []
    for pieces in ([(0, T)], [(0, cut), (cut, T)]):
        tp = tm.torch_params(p)
        tx = _t(x, grad=True)
        conv, ssm = None, None
        outs = []
        for a, b in pieces:
            out, conv, ssm = tm.mamba_layer(tx[a:b], tp, conv, ssm, scan=scan)
            outs.append(out)
        out = torch.cat(outs)
        ((out * _t(dy)).sum() + conv.sum() + ssm.sum()).backward()
        runs.append((out.detach().numpy(), conv.detach().numpy(), ssm.detach().numpy(),
                     tx.grad.numpy(), tm.numpy_grads(tp)))
    whole, split = runs
    for a, b in zip(whole[:4], split[:4]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11)
    for k in p:
        np.testing.assert_allclose(split[4][k], whole[4][k], rtol=1e-9, atol=1e-11, err_msg=k)


def test_layer_gradients_reach_the_initial_states(rng):
    """gradcheck through mamba_layer: x, both initial states and every parameter."""
    T, N, D = 5, 2, 4
    p = _params(rng, D, D, S=2)
    tp = tm.torch_params(p)
    conv0, ssm0 = (_t(s, grad=True) for s in _states(rng, N, p))
    x = _t(rng.standard_normal((T, N, D)), grad=True)
    names = list(tp)

    def f(x, conv0, ssm0, *vals):
        return tm.mamba_layer(x, dict(zip(names, vals)), conv0, ssm0)

    # fast mode checks random projections of the Jacobian: the full one takes half a minute here
    assert torch.autograd.gradcheck(f, (x, conv0, ssm0, *tp.values()), fast_mode=True)
