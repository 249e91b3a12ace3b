"""minGRU (rnnkit.functional.mingru): gradients checked numerically and against PyTorch autograd on
identical weights; the parallel scan equals the sequential one; padded steps carry the state."""

import json

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit import MinGRU
from rnnkit.cells.mingru import mingru_backward, mingru_forward
from rnnkit.functional import linear_scan

T, N, D, H = 6, 3, 4, 5


def _mask():
    return np.arange(T)[:, None] < np.array([6, 3, 1])[None, :]


def _arrays(rng):
    x, h0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H))
    Wx, b = rng.standard_normal((D, 2 * H)) * 0.5, rng.standard_normal(2 * H)
    return x, h0, Wx, b


@pytest.mark.parametrize("masked", [False, True])
def test_mingru_forward_backward(rng, masked):
    x, h0, Wx, b = _arrays(rng)
    mask = _mask() if masked else None
    dh, dhT = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    if masked:
        dh = dh * mask[:, :, None]  # the loss never reads padded outputs

    def f():
        h, _ = mingru_forward(x, h0, Wx, b, mask)
        return np.concatenate([h[1:].ravel(), h[-1].ravel()])

    h, cache = mingru_forward(x, h0, Wx, b, mask)
    dx, dh0, dWx, db = mingru_backward(dh, cache, dhT)
    dout = np.concatenate([dh.ravel(), dhT.ravel()])
    for name, arr, grad in (("x", x, dx), ("h0", h0, dh0), ("Wx", Wx, dWx), ("b", b, db)):
        assert rel_error(numerical_grad(f, arr, dout), grad) < 1e-6, name


def test_padded_steps_carry_the_state_and_get_no_gradient(rng):
    x, h0, Wx, b = _arrays(rng)
    mask = _mask()
    h, cache = mingru_forward(x, h0, Wx, b, mask)
    assert np.array_equal(h[1:, 2], np.broadcast_to(h[1, 2], (T, H)))  # one valid step, then carried
    assert np.array_equal(h[4:, 1], np.broadcast_to(h[3, 1], (T - 3, H)))
    dh = rng.standard_normal((T, N, H))  # nonzero at padded steps too: they must be ignored
    dx, *_ = mingru_backward(dh, cache)
    assert np.all(dx[~mask] == 0)


def test_mingru_matches_torch_autograd(rng):
    """The paper's minGRU written in PyTorch, autograd for its gradients, the same float64 weights."""
    torch = pytest.importorskip("torch")
    x, h0, Wx, b = _arrays(rng)
    mask = _mask()
    dh, dhT = rng.standard_normal((T, N, H)) * mask[:, :, None], rng.standard_normal((N, H))
    h, cache = mingru_forward(x, h0, Wx, b, mask)
    dx, dh0, dWx, db = mingru_backward(dh, cache, dhT)

    tx, th0, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, h0, Wx, b))
    tm = torch.tensor(mask)
    ht, outs = th0, []
    for t in range(T):
        k = tx[t] @ tW + tb
        z, c = torch.sigmoid(k[:, :H]), k[:, H:]
        new = (1 - z) * ht + z * c
        ht = torch.where(tm[t][:, None], new, ht)
        outs.append(ht)
    out = torch.stack(outs)
    (out * torch.tensor(dh)).sum().backward(retain_graph=True)
    (ht * torch.tensor(dhT)).sum().backward()
    assert rel_error(h[1:], out.detach().numpy()) < 1e-13
    for ours, theirs in ((dx, tx), (dh0, th0), (dWx, tW), (db, tb)):
        assert rel_error(ours, theirs.grad.numpy()) < 1e-12


@pytest.mark.parametrize("steps", [1, 2, 5, 16, 17])
def test_parallel_scan_equals_the_sequential_one(rng, steps):
    a = rng.uniform(0, 1, (steps, N, H))
    b = rng.standard_normal((steps, N, H))
    h0 = rng.standard_normal((N, H))
    seq = linear_scan(a, b, h0)
    par = linear_scan(a, b, h0, parallel=True)
    assert seq.shape == par.shape == (steps + 1, N, H)
    assert np.array_equal(seq[0], h0) and rel_error(seq, par) < 1e-13
    h = h0
    for t in range(steps):  # the definition, step by step
        h = a[t] * h + b[t]
    assert np.array_equal(seq[-1], h)


def test_parallel_forward_equals_sequential(rng):
    x, h0, Wx, b = _arrays(rng)
    h1, _ = mingru_forward(x, h0, Wx, b, _mask())
    h2, _ = mingru_forward(x, h0, Wx, b, _mask(), parallel=True)
    assert rel_error(h1, h2) < 1e-13


def test_bad_arguments_name_what_was_expected(rng):
    x, h0, Wx, b = _arrays(rng)
    with pytest.raises(ValueError, match=r"b has shape \(9,\), expected \(2H,\)"):
        mingru_forward(x, h0, Wx[:, :9], b[:9])
    with pytest.raises(ValueError, match=r"Wx has shape \(3, 10\), expected \(D=4, 2H=10\)"):
        mingru_forward(x, h0, Wx[:3], b)
    with pytest.raises(ValueError, match="h0 has shape"):
        mingru_forward(x, h0[:, :2], Wx, b)


def test_layer_has_no_recurrent_weights_and_refuses_torch_export():
    layer = MinGRU(D, H, num_layers=2, bidirectional=True)
    assert sorted(layer.params) == ["l0.Wx", "l0.b", "l0_reverse.Wx", "l0_reverse.b", "l1.Wx", "l1.b",
                                    "l1_reverse.Wx", "l1_reverse.b"]
    assert layer.params["l1.Wx"].shape == (2 * H, 2 * H)
    from rnnkit.interop import to_torch_state_dict

    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        to_torch_state_dict(layer)


def test_command_line_trains_and_samples_with_mingru(tmp_path, capsys):
    """`--cell mingru` on the adding problem and the character LM, and sampling from the LM."""
    from rnnkit.cli import main

    assert main(["train", "adding", "--cell", "mingru", "--length", "5", "--hidden", "4", "--batch", "4",
                 "--test-size", "8", "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "add"),
                 "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["config"]["cell"] == "mingru" and res["step"] == 4 and np.isfinite(res["test_mse"])
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    out = tmp_path / "lm"
    assert main(["train", "lm", "--data", str(text), "--out", str(out), "--cell", "mingru", "--hidden",
                 "16", "--layers", "2", "--embed", "8", "--batch", "4", "--seq-len", "16", "--steps",
                 "6", "--eval-every", "3", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_loss"] > 0
    assert main(["sample", str(out), "--prime", "the ", "--length", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_update_bias_sets_the_update_gate_of_every_layer_and_direction():
    plain = MinGRU(D, H, num_layers=2, bidirectional=True, seed=4)
    kept = MinGRU(D, H, num_layers=2, bidirectional=True, seed=4, update_bias=-4.0)
    for name in ("l0.b", "l0_reverse.b", "l1.b", "l1_reverse.b"):
        assert np.all(kept.params[name][:H] == -4.0)
        assert np.array_equal(kept.params[name][H:], plain.params[name][H:])  # the candidate's: as drawn
    assert np.array_equal(kept.params["l1.Wx"], plain.params["l1.Wx"])


def test_update_bias_flag_reaches_the_adding_run(tmp_path, capsys):
    from rnnkit.cli import main
    from rnnkit.train import load_checkpoint

    out = tmp_path / "add"
    assert main(["train", "adding", "--cell", "mingru", "--update-bias", "-3", "--length", "5", "--hidden",
                 "4", "--batch", "4", "--test-size", "8", "--steps", "2", "--eval-every", "2", "--out",
                 str(out), "--no-progress"]) == 0
    _, meta, _ = load_checkpoint(out, "last", "adding")
    assert meta["config"]["update_bias"] == -3.0
