"""Diagnostics from the BPTT: the gradient flow is dL/dh_t (checked numerically), gate statistics and
activations match the layers, and the flow shows the lecture's story (the RNN's gradient vanishes, the
LSTM's cell state carries it)."""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.diagnostics import activations, gate_stats, gradient_flow, run_layers
from rnnkit.layers import make_recurrent

T, N, D, H = 6, 2, 3, 4


def _continue(rnn, k, x, h, c):
    """Run layer k of `rnn` over x from the state (h, c): the loss's future as a function of the state
    (its outputs (T, N, H))."""
    state = (h, c) if len(rnn.cell.state) == 2 else (h,)
    return rnn.cell.forward(x, state, rnn.layer_params(k, 0))[0]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "mingru"])
def test_gradient_flow_is_dL_dh_t(cell, rng):
    """||dL/dh_t|| from the trace equals the norm of the numerical derivative of the last step's loss
    with respect to h_t (and c_t), found by rerunning the layer from step t."""
    rnn = make_recurrent(cell, D, H, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, N, D))
    w = rng.standard_normal((N, H))  # the loss: L = sum(w * h_T)
    flow = gradient_flow(rnn, x, lambda out_last: w)
    layer = run_layers(rnn, x)[0][0]
    for t in (0, 2, T - 1, T):
        h_t = layer["cache"].h[t].copy()
        c_t = layer["cache"].c[t].copy() if cell == "lstm" else None

        def loss():
            h = _continue(rnn, 0, x[t:], h_t, c_t) if t < T else h_t[None]
            return np.array(np.sum(w * h[-1]))

        num = numerical_grad(loss, h_t, np.array(1.0))
        assert flow["layers"][0]["dh"][t] == pytest.approx(np.linalg.norm(num, axis=1).mean(), rel=1e-6)
        if cell == "lstm" and t < T:
            # dL/dc_t is the total derivative: c_t reaches the loss through c_{t+1} and through
            # h_t = o_t * tanh(c_t) (o_t the output gate that made h_t; h_0 is a free initial state)
            o_t = layer["cache"].gates[t - 1][:, 2 * H:3 * H] if t > 0 else None

            def loss_c():
                h = np.tanh(c_t) * o_t if t > 0 else h_t
                return np.array(np.sum(w * _continue(rnn, 0, x[t:], h, c_t)[-1]))

            num_c = numerical_grad(loss_c, c_t, np.array(1.0))
            assert flow["layers"][0]["dc"][t] == pytest.approx(np.linalg.norm(num_c, axis=1).mean(),
                                                               rel=1e-6)
    assert list(flow["lag"]) == list(range(T, -1, -1))


def test_gradient_flow_of_the_lower_layer_includes_the_path_through_the_upper(rng):
    rnn = make_recurrent("lstm", D, H, num_layers=2, dtype=np.float64, seed=4)
    x = rng.standard_normal((T, N, D))
    w = rng.standard_normal((N, H))
    flow = gradient_flow(rnn, x, lambda out_last: w)
    low, up = run_layers(rnn, x)
    t = 3
    h_t, c_t = low[0]["cache"].h[t].copy(), low[0]["cache"].c[t].copy()

    def loss():
        # h_t, then the lower layer's future from it
        h_low = np.concatenate([h_t[None], _continue(rnn, 0, x[t:], h_t, c_t)])
        # the upper layer reads h_t at step t (from its state at t-1) and the lower layer's future
        h_up = _continue(rnn, 1, h_low, up[0]["cache"].h[t - 1], up[0]["cache"].c[t - 1])
        return np.array(np.sum(w * h_up[-1]))

    num = numerical_grad(loss, h_t, np.array(1.0))
    assert flow["layers"][0]["dh"][t] == pytest.approx(np.linalg.norm(num, axis=1).mean(), rel=1e-6)


def test_rnn_gradient_vanishes_while_the_lstm_cell_carries_it(rng):
    """The lecture's claim, measured at initialisation over 60 steps: the vanilla RNN's dL/dh_t shrinks
    geometrically with the lag; an LSTM whose forget gates are open (bias 3) keeps dL/dc_t."""
    T, N, D, H = 60, 8, 3, 16
    x = rng.standard_normal((T, N, D))
    w = rng.standard_normal((N, H))  # the loss: L = sum(w * h_T)
    rnn = make_recurrent("rnn", D, H, dtype=np.float64, seed=0)
    f_rnn = gradient_flow(rnn, x, lambda o: w)["layers"][0]["dh"]
    assert f_rnn[1] / f_rnn[-1] < 1e-10
    assert np.mean(np.diff(np.log(f_rnn[1:]))) > 0.3  # about e^-0.3 or less per step of lag
    lstm = make_recurrent("lstm", D, H, forget_bias=3.0, dtype=np.float64, seed=0)
    f_lstm = gradient_flow(lstm, x, lambda o: w)["layers"][0]
    assert f_lstm["dc"][1] / f_lstm["dc"][-1] > 0.1
    assert f_lstm["dh"][1] / f_lstm["dh"][-1] > 1e6 * f_rnn[1] / f_rnn[-1]


def test_activations_match_the_layer_and_gates_are_in_range(rng):
    rnn = make_recurrent("lstm", D, H, num_layers=2, seed=1)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    rnn.eval()
    out, _ = rnn.forward(x)
    acts = activations(rnn, x)
    assert [name for name, _ in acts] == ["layer 0", "layer 1"]
    top = acts[1][1]
    assert set(top) == {"h", "c", "i", "f", "o", "g"}
    np.testing.assert_allclose(top["h"], out, rtol=1e-5, atol=1e-6)
    for g in "ifo":
        assert top[g].min() >= 0 and top[g].max() <= 1
    # the cell update holds exactly: c_t = f * c_{t-1} + i * g
    c_prev = np.concatenate([np.zeros((1, N, H), np.float32), top["c"][:-1]])
    np.testing.assert_allclose(top["c"], top["f"] * c_prev + top["i"] * top["g"], rtol=1e-5, atol=1e-6)


def test_bidirectional_activations_are_in_input_order(rng):
    rnn = make_recurrent("gru", D, H, bidirectional=True, seed=2)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    out, _ = rnn.forward(x)
    acts = dict(activations(rnn, x))
    np.testing.assert_allclose(acts["layer 0 reverse"]["h"], out[..., H:], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unidirectional"):
        gradient_flow(rnn, x, lambda o: o)


@pytest.mark.parametrize("cell, gates", [("lstm", "ifog"), ("gru", "rzn"), ("rnn", ""), ("mingru", "z")])
def test_gate_stats(cell, gates, rng):
    rnn = make_recurrent(cell, D, H, seed=5, **({"forget_bias": 3.0} if cell == "lstm" else {}))
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    ((_, stats),) = gate_stats(rnn, x)
    assert list(stats) == list(gates)
    acts = dict(activations(rnn, x))["layer 0"]
    for g, rec in stats.items():
        v = acts[g].ravel().astype(np.float64)
        assert rec["mean"] == pytest.approx(float(v.mean()), rel=1e-9, abs=1e-12)
        assert rec["frac_below_0.1"] == pytest.approx(float((v < 0.1).mean()))
        assert rec["frac_above_0.9"] == pytest.approx(float((v > 0.9).mean()))
        assert sum(rec["hist"]) == v.size
    if cell == "lstm":  # a forget bias of 3 opens the forget gates: sigmoid(3) = 0.95
        assert stats["f"]["mean"] > 0.85 and stats["f"]["frac_above_0.9"] > stats["i"]["frac_above_0.9"]


def test_mask_leaves_padded_steps_out_of_gate_stats(rng):
    rnn = make_recurrent("gru", D, H, seed=6)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    mask = np.arange(T)[:, None] < np.array([T, 2])[None, :]
    ((_, stats),) = gate_stats(rnn, x, mask)
    assert sum(stats["z"]["hist"]) == (T + 2) * H
    assert rel_error(np.array(stats["z"]["mean"]),
                     np.array(dict(activations(rnn, x, mask))["layer 0"]["z"][mask].mean())) < 1e-6
