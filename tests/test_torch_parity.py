"""Parity with PyTorch on identical weights: outputs, final states and every gradient (float32).

The upstream gradients are random: backward of (out * dout).sum() + (h_n * dh_n).sum() (+ c_n for LSTM).
Variable lengths are compared with torch's pack_padded_sequence.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from gradcheck import rel_error  # noqa: E402
from rnnkit import GRU, LSTM, RNN  # noqa: E402
from rnnkit.interop import from_torch_module, to_torch_module, to_torch_state_dict  # noqa: E402

T, N, D, H = 20, 4, 8, 16
TOL = 1e-5


def _grads_as_torch(layer):
    """Our gradients in torch's layout. Both torch biases receive the gradient of our folded bias."""
    params = {k: v for k, v in layer.params.items()}
    layer.params.update(layer.grads)
    try:
        g = to_torch_state_dict(layer)
    finally:
        layer.params.update(params)
    for k in list(g):
        if k.startswith("bias_hh"):
            b_ih = g["bias_ih" + k[len("bias_hh"):]]
            if layer.cell.name == "gru":
                g[k][: 2 * H] = b_ih[: 2 * H]
            else:
                g[k] = b_ih.copy()
    return g


CASES = [(cls, L, bi, masked, nl)
         for cls in (LSTM, GRU, RNN)
         for L, bi in [(1, False), (2, False), (3, False), (1, True), (2, True)]
         for masked in (False, True)
         for nl in (["tanh", "relu"] if cls is RNN else [None])]


@pytest.mark.parametrize("cls,L,bidirectional,masked,nl", CASES)
def test_parity_with_torch(cls, L, bidirectional, masked, nl):
    rng = np.random.default_rng(L * 10 + bidirectional + 2 * masked)
    kwargs = dict(num_layers=L, bidirectional=bidirectional, seed=L)
    if nl:
        kwargs["nonlinearity"] = nl
    ours = cls(D, H, **kwargs)
    theirs = to_torch_module(ours)
    K = 2 if bidirectional else 1
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    lengths = np.array([T, 13, 7, 1]) if masked else np.full(N, T)
    mask = np.arange(T)[:, None] < lengths[None, :]
    is_lstm = cls is LSTM
    h0 = rng.standard_normal((L * K, N, H)).astype(np.float32)
    c0 = rng.standard_normal((L * K, N, H)).astype(np.float32)
    dout = rng.standard_normal((T, N, K * H)).astype(np.float32) * mask[:, :, None]
    dhn = rng.standard_normal((L * K, N, H)).astype(np.float32)
    dcn = rng.standard_normal((L * K, N, H)).astype(np.float32)

    out, fin = ours.forward(x, (h0, c0) if is_lstm else h0, mask if masked else None)
    dx, d0 = ours.backward(dout, (dhn, dcn) if is_lstm else dhn)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    tstate = (th0, tc0) if is_lstm else th0
    if masked:
        packed = pack_padded_sequence(tx, torch.tensor(lengths), enforce_sorted=False)
        tout, tfin = theirs(packed, tstate)
        tout, _ = pad_packed_sequence(tout, total_length=T)
    else:
        tout, tfin = theirs(tx, tstate)
    tfin = tfin if is_lstm else (tfin,)
    loss = (tout * torch.tensor(dout)).sum() + (tfin[0] * torch.tensor(dhn)).sum()
    if is_lstm:
        loss = loss + (tfin[1] * torch.tensor(dcn)).sum()
    loss.backward()

    valid = mask[:, :, None]
    assert rel_error(out * valid, tout.detach().numpy()) < TOL
    fins = fin if is_lstm else (fin,)
    for ours_s, theirs_s in zip(fins, tfin):
        assert rel_error(ours_s, theirs_s.detach().numpy()) < TOL
    assert rel_error(dx, tx.grad.numpy()) < TOL
    d0 = d0 if is_lstm else (d0,)
    assert rel_error(d0[0], th0.grad.numpy()) < TOL
    if is_lstm:
        assert rel_error(d0[1], tc0.grad.numpy()) < TOL
    ours_grads = _grads_as_torch(ours)
    for name, p in theirs.named_parameters():
        assert rel_error(ours_grads[name], p.grad.numpy()) < TOL, name


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_interop_round_trip(cls):
    ours = cls(D, H, num_layers=2, bidirectional=True, seed=5)
    back = from_torch_module(to_torch_module(ours))
    for name, p in ours.params.items():
        assert np.array_equal(p, back.params[name]), name


def test_from_torch_module_matches_forward():
    torch.manual_seed(0)
    m = torch.nn.LSTM(D, H, num_layers=2)
    ours = from_torch_module(m)
    x = np.random.default_rng(0).standard_normal((T, N, D)).astype(np.float32)
    out, _ = ours.forward(x)
    assert rel_error(out, m(torch.from_numpy(x))[0].detach().numpy()) < TOL
