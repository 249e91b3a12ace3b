"""The LSTM's bf16-mixed training step (`lstm_forward_bf16`, `lstm_backward_bf16`, the layer's
precision="bf16-mixed") against float64 emulations of the same roundings and against the float32
LSTM, at stated tolerances; masks, threads, recompute, stacks; the fallback without a bf16 unit.

Tolerances, relative to the largest magnitude of each result:
  - against the float64 emulation of the bf16 step (the same operands rounded to bf16 before each
    product, the rest exact): 1e-5 (measured under 1e-6). The float32 element-wise arithmetic moves
    a value by ~1e-7, which can flip the bf16 rounding of an operand (2^-9 of it): rare, and spread
    over a sum of many products.
  - against the float32 LSTM: 2e-2. Every product's operands carry bf16's 2^-9 relative rounding,
    and 30 steps of the recurrence add them up (measured ~5e-3 here).
"""

import numpy as np
import pytest

from rnnkit import kernels
from rnnkit.cells.lstm import (lstm_backward, lstm_backward_bf16, lstm_forward, lstm_forward_bf16)
from rnnkit.kernels import bf16
from rnnkit.layers import make_recurrent

BF16 = [t for t in bf16.detect()["runnable"] if t != "none"]
needs_bf16 = pytest.mark.skipif(not BF16, reason=f"no bf16 tier here: {bf16.detect()['reason']}")
T, N, D, H = 30, 7, 19, 37
LENGTHS = np.array([30, 29, 17, 30, 1, 8, 30])


def _operands(seed=5, T=T, N=N, D=D, H=H):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return (r(T, N, D), r(N, H) * 0.5, r(N, H), r(D, 4 * H) / D**0.5, r(H, 4 * H) / H**0.5,
            r(4 * H) * 0.1)


def _mask(masked):
    return (np.arange(T)[:, None] < LENGTHS) if masked else None


def _close(got, want, rtol, name):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= rtol, f"{name}: max error {err:.2e} of its largest value, allowed {rtol:.0e}"
    return err


def _rd(v):
    return bf16.round_bf16(np.asarray(v, np.float32)).astype(np.float64)


def _backward_emulated(dh, cache, dhT, dcT):
    """lstm_backward in float64 from the float32 cache, with each product's operands rounded to bf16
    as lstm_backward_bf16 rounds them."""
    x, h, c, gates, tanh_c, Wx, Wh, mask = (np.asarray(v, np.float64) if v is not None else None
                                             for v in cache)
    dh = dh.astype(np.float64)
    dh_next, dc_next = dhT.astype(np.float64), dcT.astype(np.float64)
    da = np.zeros(gates.shape)
    for t in reversed(range(T)):
        i, f, o, g = np.split(gates[t], 4, axis=1)
        m = mask[t][:, None].astype(bool) if mask is not None else np.ones((N, 1), bool)
        dht = dh[t] * m + dh_next
        dc = dc_next + dht * o * (1 - tanh_c[t] ** 2) * m
        d = np.concatenate([dc * g * i * (1 - i), dc * c[t] * f * (1 - f),
                            dht * tanh_c[t] * o * (1 - o), dc * i * (1 - g * g)], axis=1)
        da[t] = np.where(m, d, 0)
        dc_next = np.where(m, dc * f, dc)
        # da_t as float32 rounds it, then to bf16
        dh_next = np.where(m, _rd(da[t]) @ _rd(Wh.T), dht)
    da2 = da.reshape(T * N, 4 * H)
    dx = (_rd(da2) @ _rd(Wx.T)).reshape(T, N, D)
    xh = np.concatenate([x.reshape(T * N, D), h[:-1].reshape(T * N, H), np.ones((T * N, 1))], 1)
    dW = _rd(xh).T @ _rd(da2)
    return dx, dh_next, dc_next, dW[:D], dW[D:D + H], dW[D + H]


NAMES = ("dx", "dh0", "dc0", "dWx", "dWh", "db")


@needs_bf16
@pytest.mark.parametrize("masked", [False, True])
def test_backward_against_emulation_and_float32(masked):
    x, h0, c0, Wx, Wh, b = _operands()
    mask = _mask(masked)
    rng = np.random.default_rng(2)
    dh = rng.standard_normal((T, N, H)).astype(np.float32)
    dhT, dcT = (rng.standard_normal((N, H)).astype(np.float32) for _ in range(2))
    _, _, cache = lstm_forward_bf16(x, h0, c0, Wx, Wh, b, mask)
    got = lstm_backward_bf16(dh, cache, dhT, dcT)
    want = _backward_emulated(dh, cache, dhT, dcT)
    _, _, cache32 = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
    want32 = lstm_backward(dh, cache32, dhT, dcT)
    worst = 0.0
    for name, g, e, f in zip(NAMES, got, want, want32):
        assert g.dtype == np.float32, name
        _close(g, e, 1e-5, name + " (emulated)")
        worst = max(worst, _close(g, f, 2e-2, name + " (float32)"))
    assert worst > 1e-5  # the products really were bf16
    if masked:  # a sequence of length 1 got gradient from its first step only, dx of later steps 0
        assert not got[0][1:, 4].any()


@needs_bf16
def test_forward_and_backward_of_every_row_the_same_on_any_threads():
    # enough rows and work for the loops and the products to be cut across threads
    x, h0, c0, Wx, Wh, b = _operands(T=12, N=42, D=48, H=96)
    results = []
    before = kernels.threads()
    try:
        for n in (1, 2):
            kernels.set_threads(n)
            h, c, cache = lstm_forward_bf16(x, h0, c0, Wx, Wh, b)
            results.append((h, c) + lstm_backward_bf16(np.ones_like(h[1:]), cache))
    finally:
        kernels.set_threads(before)
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)


def _layer_pair(**kw):
    return [make_recurrent("lstm", D, H, seed=3, **kw),
            make_recurrent("lstm", D, H, seed=3, precision="bf16-mixed", **kw)]


@needs_bf16
@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True},
                                {"recompute": 7}], ids=["one", "stack", "recompute"])
def test_layer_bf16_mixed_follows_float32(kw):
    x = _operands()[0]
    mask = _mask(True)
    rng = np.random.default_rng(4)
    ref, mixed = _layer_pair(**kw)
    assert mixed.precision == "bf16-mixed" and "bf16-mixed" in repr(mixed)
    outs = []
    for layer in (ref, mixed):
        layer.zero_grad()
        y, _ = layer.forward(x, mask=mask)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        rng = np.random.default_rng(4)
        dx, _ = layer.backward(dy)
        outs.append((y, dx, dict(layer.grads)))
    (y32, dx32, g32), (y, dx, g) = outs
    assert y.dtype == dx.dtype == np.float32
    _close(y, y32, 2e-2, "out")
    _close(dx, dx32, 2e-2, "dx")
    for name in g32:
        assert g[name].dtype == np.float32
        _close(g[name], g32[name], 2e-2, name)
    assert np.abs(y - y32).max() > 1e-5
    # the weights and the checkpoint stay float32, the same names
    assert {k: v.dtype for k, v in mixed.state_dict().items()} == \
        {k: v.dtype for k, v in ref.state_dict().items()}


@needs_bf16
def test_recompute_equals_plain_bptt_in_bf16():
    x = _operands()[0]
    plain = make_recurrent("lstm", D, H, seed=3, precision="bf16-mixed")
    seg = make_recurrent("lstm", D, H, seed=3, precision="bf16-mixed", recompute=7)
    dy = np.random.default_rng(6).standard_normal((T, N, H)).astype(np.float32)
    res = []
    for layer in (plain, seg):
        y, _ = layer.forward(x)
        dx, _ = layer.backward(dy)
        res.append((y, dx, layer.grads["l0.Wh"].copy()))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    # the rebuilt cache sums its products in another order: a bf16 rounding of da may flip
    for a, b_, name in zip(res[0][1:], res[1][1:], ("dx", "dWh")):
        _close(b_, a, 2e-3, name)


def test_float64_runs_the_exact_math():
    """A gradient check in float64 of a bf16-mixed layer checks the LSTM itself: no rounding."""
    x = _operands()[0].astype(np.float64)
    ref = make_recurrent("lstm", D, H, seed=3, dtype=np.float64)
    mixed = make_recurrent("lstm", D, H, seed=3, dtype=np.float64, precision="bf16-mixed")
    ys = [layer.forward(x)[0] for layer in (ref, mixed)]
    dxs = [layer.backward(np.ones_like(ys[0]))[0] for layer in (ref, mixed)]
    np.testing.assert_array_equal(ys[0], ys[1])
    np.testing.assert_array_equal(dxs[0], dxs[1])


def test_precision_refusals_name_the_cell_and_the_value():
    with pytest.raises(ValueError, match="the gru cell has no bf16 path"):
        make_recurrent("gru", D, H, precision="bf16-mixed")
    with pytest.raises(ValueError, match="precision must be one of 32, bf16-mixed; got 'bf16'"):
        make_recurrent("lstm", D, H, precision="bf16")


def test_without_a_bf16_unit_the_float32_path_runs_and_says_so(monkeypatch, capsys):
    from rnnkit.layers import recurrent

    monkeypatch.setitem(bf16.detect(), "tier", "none")
    monkeypatch.setattr(recurrent, "_said", set())
    x = _operands()[0]
    mixed = make_recurrent("lstm", D, H, seed=3, precision="bf16-mixed")
    make_recurrent("lstm", D, H, seed=3, precision="bf16-mixed")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs in float32" in err  # one line, once
    ref = make_recurrent("lstm", D, H, seed=3)
    np.testing.assert_array_equal(mixed.forward(x)[0], ref.forward(x)[0])
