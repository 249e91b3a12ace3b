"""The character-level language model: gradients, streaming inference, sampling, the training task."""

import math

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.lm import CharLM, LMConfig, LMState, evaluate_stream, pick, sample
from rnnkit.tasks.lm import LMTask
from rnnkit.train import StreamBatches, TrainConfig, fit

V, T, N = 7, 5, 3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_gradients_match_numerical(rng, cell):
    model = CharLM(LMConfig(V, cell=cell, embed=4, hidden=5, layers=2, seed=3), dtype=np.float64)
    x = rng.integers(0, V, (T, N))
    y = rng.integers(0, V, (T, N))
    s0 = model.init_state(N)
    s0.h[...] = rng.standard_normal(s0.h.shape)  # a carried state (no gradient flows into it)

    def loss():
        logits, _ = model.forward(x, s0)
        return softmax_cross_entropy(logits, y)[0]

    logits, _ = model.forward(x, s0)
    _, dlogits = softmax_cross_entropy(logits, y)
    model.zero_grad()
    model.backward(dlogits)
    for name, p, g in model.named_parameters():
        num = numerical_grad(lambda: np.array(loss()), p, np.array(1.0))
        assert rel_error(g, num) < 1e-6, name


def test_one_hot_embedding_gradient_equals_add_at(rng):
    model = CharLM(LMConfig(V, embed=4, hidden=5, layers=1))
    x = rng.integers(0, V, (T, N))
    logits, _ = model.forward(x)
    dlogits = rng.standard_normal(logits.shape).astype(np.float32)
    model.zero_grad()
    model.backward(dlogits)
    fast = model.embed.grads["W"].copy()
    model.forward(x)
    model.zero_grad()
    dout = model.drop.backward(model.head.backward(dlogits))
    dx, _ = model.rnn.backward(dout)
    model.embed.backward(dx)
    np.testing.assert_allclose(fast, model.embed.grads["W"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_step_by_step_equals_forward_and_state_round_trips(rng, cell):
    model = CharLM(LMConfig(V, cell=cell, embed=4, hidden=6, layers=2, dropout=0.5), dtype=np.float64)
    model.eval()
    x = rng.integers(0, V, (T, N))
    full, final = model.forward(x)
    state = None
    outs = []
    for t in range(T):
        logits, state = model.step(x[t], state)
        outs.append(logits)
        if t == 1:  # pause the stream: save the state as plain arrays and resume from a copy
            state = LMState.from_dict({k: v.copy() for k, v in state.to_dict().items()})
    np.testing.assert_allclose(np.stack(outs), full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.h, final.h, rtol=1e-12, atol=1e-12)
    chunk, s2 = model.step(x[:2])
    rest, s3 = model.step(x[2:], s2)
    np.testing.assert_allclose(np.concatenate([chunk, rest]), full, rtol=1e-12, atol=1e-12)
    assert set(s3.parts) == ({"h", "c"} if cell == "lstm" else {"h"})
    h_before = s2.h.copy()
    model.step(x[0], s2)
    np.testing.assert_array_equal(s2.h, h_before)  # step never modifies the state it is given


def test_pick_and_sample(rng):
    logits = np.array([0.0, 3.0, 1.0, 2.0])
    assert pick(logits, 0, None, rng) == 1
    draws = {pick(logits, 1.0, 2, rng) for _ in range(200)}
    assert draws == {1, 3}  # top-k keeps the two most likely only
    model = CharLM(LMConfig(V, embed=4, hidden=6, layers=1))
    a = list(sample(model, [1, 2], 20, 1.0, None, np.random.default_rng(5)))
    b = list(sample(model, [1, 2], 20, 1.0, None, np.random.default_rng(5)))
    assert a == b and len(a) == 20 and all(0 <= i < V for i in a)
    g1 = list(sample(model, [3], 10, 0.0))
    # greedy sampling fed back one token at a time equals argmax over step() outputs
    state, tok, g2 = None, 3, []
    for _ in range(10):
        logits, state = model.step(np.array([tok]), state)
        tok = int(np.argmax(logits[0]))
        g2.append(tok)
    assert g1 == g2


def test_evaluate_stream_matches_a_direct_computation(rng):
    model = CharLM(LMConfig(V, embed=4, hidden=6, layers=1), dtype=np.float64)
    model.eval()
    ids = rng.integers(0, V, 41)
    r = evaluate_stream(model, ids, batch=4, chunk=3, min_stream=10)
    x = ids[:40].reshape(4, 10).T
    y = ids[1:41].reshape(4, 10).T
    logits, _ = model.forward(x)
    expect, _ = softmax_cross_entropy(logits, y)
    assert r["chars"] == 40
    assert abs(r["val_loss"] - expect) < 1e-10
    assert abs(r["bits_per_char"] - expect / math.log(2)) < 1e-10


def test_lm_task_learns_a_periodic_text_with_truncated_bptt(tmp_path):
    text = np.tile(np.array([0, 1, 2, 3, 4, 5, 6, 2, 4]), 80)
    model = CharLM(LMConfig(V, embed=8, hidden=24, layers=1))
    task = LMTask(model, val_ids=text[:100])
    src = StreamBatches(text, batch_size=4, seq_len=12, seed=0)
    s = fit(task, src, TrainConfig(steps=150, lr=0.03, eval_every=50, log_every=25), tmp_path,
            {"model": {}}, progress=False)
    assert s["last_eval"]["val_loss"] < 0.1  # uniform guessing would be log 7 = 1.95
