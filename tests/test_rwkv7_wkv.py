"""RWKV-7's WKV recurrence (rnnkit.cells.rwkv7): the compiled loops against their NumPy references
(float32 and float64, masks, streams cut across threads, chunk sizes 1, 3, T and beyond T), numerical
gradients of every input and of the initial state (float64, random upstream gradients), the forward
against the reference repository's NumPy RNN step, forward and gradients against a PyTorch autograd
loop, and a sequence in two pieces with the state carried against the whole."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import kernels
from rnnkit.cells import rwkv7 as R

T, N, H, C = 7, 3, 2, 4
LENGTHS = (T, 4, 1)

compiled_only = pytest.mark.skipif(not kernels.status()["available"],
                                   reason="compiled kernels unavailable")


def _mask(T_=T, lengths=LENGTHS):
    return np.arange(T_)[:, None] < np.array(lengths)[None, :]


def _model_vectors(rng, T_=T, N_=N, H_=H, C_=C):
    """r, w, k, v (T, N, H*C), kk, icl (T, N, H, C) and S0 (N, H, C, C) as the model makes them: w =
    exp(-e^-0.5 sigmoid(.)) in (0.545, 1), kk a unit vector per head, the in-context rate icl in
    (0, 1) (RWKV-v7/rwkv_v7_numpy.py lines 23, 31, 37)."""
    shape = (T_, N_, H_ * C_)
    r, k, v = (rng.standard_normal(shape) for _ in range(3))
    w = np.exp(-1 / (1 + np.exp(-rng.standard_normal(shape))) / np.e ** 0.5)
    kk = rng.standard_normal((T_, N_, H_, C_))
    kk /= np.linalg.norm(kk, axis=-1, keepdims=True)
    icl = 1 / (1 + np.exp(-rng.standard_normal((T_, N_, H_, C_))))
    return r, w, k, v, kk, icl, rng.standard_normal((N_, H_, C_, C_))


def _inputs(rng, dtype=np.float64, T_=T, N_=N, H_=H, C_=C):
    """r, w, k, v, a, b (T, N, H*C) and S0 (N, H, C, C): a = -kk and b = kk * icl, as the model
    passes them (RWKV-v7/train_temp/src/model.py's RWKV7_CLAMPW_CUDA(r, w, k, v, -kk, kk*a))."""
    r, w, k, v, kk, icl, S0 = _model_vectors(rng, T_, N_, H_, C_)
    a, b = (-kk).reshape(r.shape), (kk * icl).reshape(r.shape)
    return [x.astype(dtype) for x in (r, w, k, v, a, b, S0)]


def _upstream(rng, dtype, T_=T, N_=N, H_=H, C_=C):
    return (rng.standard_normal((T_, N_, H_ * C_)).astype(dtype),
            rng.standard_normal((N_, H_, C_, C_)).astype(dtype))


def _run(ins, dy, dST, mask, chunk):
    y, ST, cache = R.wkv7(*ins, mask=mask, chunk=chunk)
    return (y, ST, cache.kept, *R.wkv7_backward(dy, dST, cache))


@compiled_only
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-5)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, T, 50])
def test_compiled_loops_equal_their_references(dtype, tol, masked, chunk, rng, three_threads):
    """rwkv7.c against the NumPy loops; the streams (N*H = 6) cut into three ranges on worker
    threads, whatever this machine has."""
    ins = _inputs(rng, dtype)
    dy, dST = _upstream(rng, dtype)
    mask = _mask() if masked else None
    S = ins[-1].reshape(N * H, C, C).copy()
    streams = {name: x.reshape(T, N * H, C) for name, x in zip(R.INPUTS, ins)}
    fw = dict(T=T, N=N * H, H=C, chunk=chunk, **streams, mask=None, S=S,
              kept=np.empty((-(-T // chunk), N * H, C, C), dtype), y=np.empty((T, N * H, C), dtype))
    assert R.WKV7_FW.compiled(fw) is not None  # the compiled path really runs these
    with kernels.reference():
        assert R.WKV7_FW.compiled(fw) is None

    split_calls = three_threads
    fast = _run(ins, dy, dST, mask, chunk)
    assert split_calls == [3, 3]  # forward and backward each ran as three stream ranges
    with kernels.reference():
        ref = _run(ins, dy, dST, mask, chunk)
    assert fast[2].shape == (-(-T // chunk), N * H, C, C)  # O(T/chunk) states kept
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape, i
        assert rel_error(a, b) < tol, (i, rel_error(a, b))


@pytest.mark.parametrize("masked", [False, True])
def test_numerical_gradients(masked, rng):
    """Every input and S0 against central differences of sum(y dy) + sum(S_T dST), float64, with a
    chunk (3) that does not divide T; padded steps get exactly zero gradient and output."""
    ins = _inputs(rng)
    dy, dST = _upstream(rng, np.float64)
    mask = _mask() if masked else None
    y, ST, cache = R.wkv7(*ins, mask=mask, chunk=3)
    grads = R.wkv7_backward(dy, dST, cache)

    def loss():
        y_, ST_, _ = R.wkv7(*ins, mask=mask, chunk=3)
        return np.array(np.sum(y_ * dy) + np.sum(ST_ * dST))

    one = np.array(1.0)
    for name, x, g in zip((*R.INPUTS, "S0"), ins, grads):
        assert rel_error(g, numerical_grad(loss, x, one)) < 1e-7, name
    if masked:
        pad = ~mask
        assert np.all(y[pad] == 0)
        for name, g in zip(R.INPUTS, grads):
            assert np.all(g[pad] == 0), name
            assert np.any(g[~pad] != 0), name


def _rwkv_v7_numpy_wkv(r, w, k, v, kk, icl, S):
    """One batch row's WKV over a sequence, as RWKV-v7/rwkv_v7_numpy.py (BlinkDL/RWKV-LM at
    524481d5099b38d9bc8ef1e89209161b86c8011b) writes its RNN-mode step: per token (lines 36-40,
    `a` there the in-context rate, `k` already the modified key, `kk` the normalised key)
        r,w,k,v,kk,a,r_k = [i.reshape(N_HEAD, HEAD_SIZE, 1) for i in [r,w,k,v,kk,a,r_k]]
        S = S * w.mT - S @ kk * (kk*a).mT + v * k.mT
        y = S @ r
    r..icl (T, H*C) with kk unit per head; S (H, C, C). Returns y (T, H*C) and the final S."""
    Hh, Cc, _ = S.shape
    ys = []
    for t in range(r.shape[0]):
        rt, wt, kt, vt, kkt, at = (x[t].reshape(Hh, Cc, 1) for x in (r, w, k, v, kk, icl))
        S = S * wt.mT - S @ kkt * (kkt * at).mT + vt * kt.mT
        ys.append((S @ rt).flatten())
    return np.array(ys), S


def test_forward_equals_the_reference_numpy_step(rng):
    """wkv7(r, w, k, v, -kk, kk*a) against the RNN step of rwkv_v7_numpy.py, token by token."""
    T_, N_, H_, C_ = 12, 2, 3, 8
    r, w, k, v, kk, icl, S0 = _model_vectors(rng, T_, N_, H_, C_)
    kk, icl = kk.reshape(r.shape), icl.reshape(r.shape)
    y, ST, _ = R.wkv7(r, w, k, v, -kk, kk * icl, S0, chunk=5)
    for n in range(N_):
        y_ref, S_ref = _rwkv_v7_numpy_wkv(r[:, n], w[:, n], k[:, n], v[:, n], kk[:, n], icl[:, n],
                                          S0[n])
        assert rel_error(y[:, n], y_ref) < 1e-12
        assert rel_error(ST[n], S_ref) < 1e-12


def _torch_wkv(torch, r, w, k, v, a, b, S0, mask, Hh, Cc):
    """The recurrence in a PyTorch loop, as rwkv_v7_demo.py's non-CUDA RWKV7_OP (line 189:
    state = state * w[:, t, :, None, :] + state @ aa @ bb + vv @ kk; out = state @ rr), time-major,
    from S0 and with the mask carrying the state."""
    T_, N_, _ = r.shape
    heads = [x.view(T_, N_, Hh, Cc) for x in (r, w, k, v, a, b)]
    r, w, k, v, a, b = heads
    state, ys = S0, []
    for t in range(T_):
        new = (state * w[t, :, :, None, :] + state @ a[t, :, :, :, None] @ b[t, :, :, None, :]
               + v[t, :, :, :, None] @ k[t, :, :, None, :])
        yt = (new @ r[t, :, :, :, None])[..., 0]
        if mask is not None:
            m = torch.as_tensor(mask[t])[:, None, None]
            new = torch.where(m[..., None], new, state)
            yt = torch.where(m, yt, torch.zeros_like(yt))
        state = new
        ys.append(yt.reshape(N_, Hh * Cc))
    return torch.stack(ys), state


@pytest.mark.parametrize("masked", [False, True])
def test_against_torch_autograd(masked, rng):
    """Outputs, final state and every gradient against PyTorch autograd on identical float64 inputs."""
    torch = pytest.importorskip("torch")
    T_, N_, H_, C_ = 20, 3, 2, 6
    ins = _inputs(rng, np.float64, T_, N_, H_, C_)
    dy, dST = _upstream(rng, np.float64, T_, N_, H_, C_)
    mask = _mask(T_, (T_, 11, 3)) if masked else None
    y, ST, cache = R.wkv7(*ins, mask=mask, chunk=16)
    grads = R.wkv7_backward(dy, dST, cache)
    tins = [torch.tensor(x, requires_grad=True) for x in ins]
    ty, tST = _torch_wkv(torch, *tins, mask, H_, C_)
    (ty * torch.tensor(dy)).sum().add((tST * torch.tensor(dST)).sum()).backward()
    assert rel_error(y, ty.detach().numpy()) < 1e-12
    assert rel_error(ST, tST.detach().numpy()) < 1e-12
    for name, g, t in zip((*R.INPUTS, "S0"), grads, tins):
        assert rel_error(g, t.grad.numpy()) < 1e-12, name


@pytest.mark.parametrize("masked", [False, True])
def test_two_pieces_with_the_state_carried_equal_the_whole(masked, rng):
    """Forward: the second piece from the first's final state; backward: the second piece's dS0 as
    the first's final-state gradient. Both equal the whole sequence's, outputs and gradients."""
    ins = _inputs(rng)
    dy, dST = _upstream(rng, np.float64)
    mask = _mask() if masked else None
    cut = 4
    y, ST, cache = R.wkv7(*ins, mask=mask, chunk=3)
    whole = R.wkv7_backward(dy, dST, cache)
    first = [x[:cut] for x in ins[:-1]]
    second = [x[cut:] for x in ins[:-1]]
    m1, m2 = (None, None) if mask is None else (mask[:cut], mask[cut:])
    y1, S1, c1 = R.wkv7(*first, ins[-1], mask=m1, chunk=3)
    y2, S2, c2 = R.wkv7(*second, S1, mask=m2, chunk=3)
    assert rel_error(np.concatenate([y1, y2]), y) < 1e-14
    assert rel_error(S2, ST) < 1e-14
    g2 = R.wkv7_backward(dy[cut:], dST, c2)
    g1 = R.wkv7_backward(dy[:cut], g2[-1], c1)
    for i in range(6):
        assert rel_error(np.concatenate([g1[i], g2[i]]), whole[i]) < 1e-13, R.INPUTS[i]
    assert rel_error(g1[-1], whole[-1]) < 1e-13


def test_the_initial_state_is_not_modified_and_errors_name_the_argument(rng):
    ins = _inputs(rng)
    S0 = ins[-1].copy()
    R.wkv7(*ins)
    assert np.array_equal(ins[-1], S0)
    with pytest.raises(ValueError, match="^k has shape"):
        R.wkv7(*ins[:2], ins[2][:, :, 1:], *ins[3:])
    with pytest.raises(ValueError, match="^S0 has shape"):
        R.wkv7(*ins[:-1], ins[-1][..., 1:])
    with pytest.raises(ValueError, match="^v has dtype"):
        R.wkv7(*ins[:3], ins[3].astype(np.float32), *ins[4:])
    with pytest.raises(ValueError, match="chunk"):
        R.wkv7(*ins, chunk=0)
    bad = _mask()
    bad[0, 1], bad[2, 1] = False, True
    with pytest.raises(ValueError, match="prefix"):
        R.wkv7(*ins, mask=bad)
