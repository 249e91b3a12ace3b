"""The RWKV-7 references (tests/torch_rwkv7.py, the sequence form; tests/rwkv7_rnn_numpy.py, the RNN
mode) checked against each other in float64, and the initialisation against model.py's formulas,
before rnnkit's cell is tested against them."""

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rwkv7_rnn_numpy as rn  # noqa: E402
import torch_rwkv7 as tr  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-10)
C, HS, D = 32, 8, 5  # 4 heads; layer 0 takes D inputs through W_in


def _layers(seed=0):
    return [tr.random_params(C, HS, D=D, seed=seed), tr.random_params(C, HS, seed=seed + 1)]


def _state(rng, B, scale=0.5):
    H = C // HS
    return (scale * rng.standard_normal((B, C)), scale * rng.standard_normal((B, H, HS, HS)),
            scale * rng.standard_normal((B, C)))


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _torch_stack(x_tm, ps, states):
    """The torch block over a whole (T, B, D) sequence, batch-first inside as the reference."""
    out, finals = tr.stack(_t(x_tm).transpose(0, 1), [tr.torch_params(p, False) for p in ps], HS,
                           [tuple(_t(s) for s in st) for st in states])
    return out.transpose(0, 1).numpy(), [tuple(s.numpy() for s in st) for st in finals]


def test_block_over_a_sequence_equals_the_rnn_mode_stepped(rng):
    T, B = 9, 3
    ps = _layers()
    x = rng.standard_normal((T, B, D))
    states = [_state(rng, B), _state(rng, B)]
    out, finals = _torch_stack(x, ps, states)
    ref, ref_finals = rn.run(x, ps, HS, states)
    assert out.shape == (T, B, C)
    assert np.abs(ref).max() > 0.1  # a live output: no factor of the path is zero
    np.testing.assert_allclose(out, ref, **TOL)
    for got, want in zip(finals, ref_finals):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, **TOL)


def test_the_state_and_v_first_change_the_output(rng):
    """Each part of the initial state and layer 0's v reach the output: a reference that dropped
    one would still agree with itself."""
    T, B = 4, 2
    ps = _layers()
    x = rng.standard_normal((T, B, D))
    states = [_state(rng, B), _state(rng, B)]
    base, _ = rn.run(x, ps, HS, states)
    for layer in (0, 1):
        for part in range(3):
            st = [list(s) for s in states]
            st[layer][part] = np.zeros_like(st[layer][part])
            out, _ = _torch_stack(x, ps, [tuple(s) for s in st])
            assert np.abs(out - base).max() > 1e-3, (layer, part)
    p1 = tr.torch_params(ps[1], False)
    x1 = _t(rng.standard_normal((B, T, C)))
    zero = tr.zero_state(B, C, HS)
    y1, _, _ = tr.block(x1, p1, _t(rng.standard_normal((B, T, C))), 1, HS, zero)
    y2, _, _ = tr.block(x1, p1, _t(rng.standard_normal((B, T, C))), 1, HS, zero)
    assert (y1 - y2).abs().max() > 1e-3


def test_a_sequence_split_in_two_with_the_state_carried_equals_the_whole(rng):
    T, B, cut = 11, 2, 5
    ps = _layers(seed=3)
    x = rng.standard_normal((T, B, D))
    states = [_state(rng, B), _state(rng, B)]
    whole, whole_finals = _torch_stack(x, ps, states)
    first, mid = _torch_stack(x[:cut], ps, states)
    second, finals = _torch_stack(x[cut:], ps, mid)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, **TOL)
    for got, want in zip(finals, whole_finals):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, **TOL)


def test_zero_state_is_the_references_zero_padded_shift():
    x = torch.randn(2, 6, C, dtype=torch.float64)
    pad = torch.nn.ZeroPad2d((0, 0, 1, -1))  # model.py's time_shift
    torch.testing.assert_close(tr._shift(x, torch.zeros(2, C, dtype=torch.float64)), pad(x))


def test_decay_forms_agree():
    """The demo's exp(-exp(-softplus(-z) - 0.5)), the CUDA kernel's exp(-exp(-0.5) sigmoid(z)) and
    the NumPy file's exp(-sigmoid(z) / e^0.5) are one function, in (exp(-exp(-0.5)), 1)."""
    z = torch.linspace(-30, 30, 201, dtype=torch.float64)
    demo = torch.exp(-torch.exp(-torch.nn.functional.softplus(-z) - 0.5))
    kernel = torch.exp(-math.exp(-0.5) * torch.sigmoid(z))
    torch.testing.assert_close(demo, kernel, rtol=1e-14, atol=0)
    npy = np.exp(-rn.sigmoid(z.numpy()) / np.e ** 0.5)
    np.testing.assert_allclose(npy, kernel.numpy(), rtol=1e-14)
    assert kernel.min() > math.exp(-math.exp(-0.5)) - 1e-12 and kernel.max() < 1


def test_lora_ranks():
    # the 0.1B model's (n_embd 768) ranks, as rwkv_v7_demo.py states them: 64, 64, 32, 128
    assert tr.lora_ranks(768) == {"w": 64, "a": 64, "v": 32, "g": 128}
    assert tr.lora_ranks(256) == {"w": 32, "a": 32, "v": 32, "g": 64}  # 5 * 16 / 32 = 2.5 -> 2
    assert tr.lora_ranks(64) == {"w": 32, "a": 32, "v": 32, "g": 32}
    # Python's round halves to even: 2.5 sqrt(1024) / 32 = 2.5 -> 2
    assert tr.lora_ranks(1024) == {"w": 64, "a": 64, "v": 64, "g": 160}
    p = tr.init_params(256, 64, 0, 2)
    assert p["w1"].shape == (256, 32) and p["g2"].shape == (64, 256)


def test_init_values_match_the_formulas():
    C0, hs, layer, L = 128, 64, 1, 4
    p = tr.init_params(C0, hs, layer, L, seed=1)
    r01, r10 = layer / (L - 1), 1 - layer / L
    for i in (0, 5, 64, 127):
        lin = i / (C0 - 1) - 0.5
        z = ((i % hs) - (hs - 1) / 2) / ((hs - 1) / 2)
        zz = z * abs(z)
        assert p["w0"][i] == pytest.approx(-6 + 6 * (i / (C0 - 1)) ** (1 + r01 ** 0.3) + 0.5
                                           + 2.5 * zz, abs=1e-12)
        assert p["a0"][i] == pytest.approx(-0.19 + 0.3 * zz + 0.4 * lin, abs=1e-12)
        assert p["v0"][i] == pytest.approx(0.73 - 0.4 * lin, abs=1e-12)
        assert p["k_k"][i] == pytest.approx(0.71 - 0.1 * lin, abs=1e-12)
        for m, e in (("r", 0.2), ("w", 0.9), ("k", 0.7), ("v", 0.7), ("a", 0.9), ("g", 0.2)):
            assert p["mu_" + m][i] == pytest.approx(1 - (i / C0) ** (e * r10), abs=1e-12)
        assert p["mu_c"][i] == pytest.approx(1 - (i / C0) ** (r10 ** 4), abs=1e-12)
    assert np.all(p["k_a"] == 1.02) and np.all(p["r_k"] == -0.04) and p["r_k"].shape == (2, hs)
    for name in ("w1", "a1", "v1", "g1", "Wo", "Wcv"):
        assert not p[name].any(), name
    for name in ("w2", "a2", "v2", "g2"):  # (rank, C), rank < C: rows orthogonal, gain 0.1
        w = p[name]
        np.testing.assert_allclose(w @ w.T, 0.01 * np.eye(w.shape[0]), atol=1e-12)
    for name, bound in (("Wr", 0.5), ("Wk", 0.05), ("Wv", 0.5), ("Wck", 0.5)):
        w = p[name]
        assert np.abs(w).max() <= bound / C0 ** 0.5
        assert np.abs(w).max() > 0.9 * bound / C0 ** 0.5  # drawn across the range, not near 0
    assert p["Wck"].shape == (C0, 4 * C0) and p["Wcv"].shape == (4 * C0, C0)


def test_train_scheme_is_generate_init_weight():
    C0, layer, L = 64, 2, 4
    p = tr.init_params(C0, 16, layer, L, scheme="train")
    np.testing.assert_allclose(p["lnx_w"], ((layer + 1) / L) ** 0.7)
    for name, gain in (("Wr", 1.0), ("Wk", 0.1), ("Wv", 1.0)):
        np.testing.assert_allclose(p[name].T @ p[name], gain ** 2 * np.eye(C0), atol=1e-12)
    np.testing.assert_allclose(p["Wck"] @ p["Wck"].T, np.eye(C0), atol=1e-12)  # (C, 4C)
    assert not p["Wo"].any() and not p["Wcv"].any()
    q = tr.init_params(C0, 16, layer, L, scheme="module")
    np.testing.assert_array_equal(p["w0"], q["w0"])


def _rwkv_package():
    os.environ.setdefault("RWKV_V7_ON", "1")
    try:
        from rwkv.model import RWKV  # noqa: F401
    except Exception:  # not installed, or built without RWKV-7
        return None
    return RWKV


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package's torch.jit.script
def test_rnn_mode_equals_the_rwkv_package(tmp_path, rng):
    """The `rwkv` pip package's RNN mode (cpu fp32) on the same weights, token by token (skipped
    where the package is absent, as in CI: `pip install --no-deps rwkv` to run it)."""
    RWKV = _rwkv_package()
    if RWKV is None:
        pytest.skip("the rwkv package (with RWKV_V7_ON=1) is not importable")
    V, L, hs, C0 = 20, 2, 64, 128
    model = rn.random_model(V, C0, L, hs, seed=2)
    path = tr.save_reference_checkpoint(model, tmp_path / "m")
    ref = RWKV(model=str(path), strategy="cpu fp32")
    state = None
    ours = [rn.zero_state(1, C0, hs) for _ in range(L)]
    for tok in rng.integers(0, V, 6):
        logits, state = ref.forward(int(tok), state)
        mine, ours = rn.model_step(model, np.array([tok]), hs, ours)
    # float32 against float64, and the package's 0.606531 for exp(-0.5): 6e-7 when written
    err = np.abs(mine[0] - logits.numpy()).max() / np.abs(mine).max()
    assert err < 1e-4, err


def test_random_params_give_every_parameter_a_gradient(rng):
    """What random_params is for: autograd through the block reaches every parameter, the state's
    parts and v_first (model.py's zero LoRA factors and W_o would leave most of them 0)."""
    T, B = 5, 2
    tp = tr.torch_params(tr.random_params(C, HS, seed=4))
    st = tuple(s.requires_grad_() for s in map(_t, _state(rng, B)))
    vf = _t(rng.standard_normal((B, T, C))).requires_grad_()
    out, _, final = tr.block(_t(rng.standard_normal((B, T, C))), tp, vf, 1, HS, st)
    loss = (out * _t(rng.standard_normal(out.shape))).sum() + sum(
        (f * _t(rng.standard_normal(f.shape))).sum() for f in final)
    loss.backward()
    for name, v in [*tp.items(), ("tshift", st[0]), ("wkv", st[1]), ("cshift", st[2]),
                    ("v_first", vf)]:
        assert v.grad is not None and torch.isfinite(v.grad).all(), name
        assert v.grad.abs().max() > 1e-6, name
