"""The encoder-decoder: numerical gradients of the loss for each cell / direction / attention, parity with
the PyTorch twin (benchmarks/translate_vs_torch.py) on identical weights, and the decoders (greedy, beam
search, teacher-forcing ratio)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck import rel_error
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.seq2seq import BOS, EOS, Seq2Seq, Seq2SeqConfig

S, T, N, VS, VT = 5, 4, 3, 11, 9

CONFIGS = [("lstm", True, "general"), ("gru", True, "dot"), ("lstm", False, "additive"),
           ("gru", False, "none"), ("lstm", True, "dot"), ("gru", True, "additive"), ("lstm", True, "none")]


def _batch(rng):
    src = rng.integers(4, VS, (S, N))
    src_mask = np.arange(S)[:, None] < np.array([5, 3, 1])[None, :]
    src[~src_mask] = 0
    tgt_in = rng.integers(2, VT, (T, N))
    tgt_out = rng.integers(3, VT, (T, N))
    tgt_mask = np.arange(T)[:, None] < np.array([4, 2, 3])[None, :]
    tgt_out[~tgt_mask] = 0
    return src, src_mask, tgt_in, tgt_out, tgt_mask


def _model(cell, bi, att, dtype=np.float64, layers=1):
    cfg = Seq2SeqConfig(VS, VT, emb=4, hidden=5, cell=cell, bidirectional=bi, attention=att, layers=layers)
    return Seq2Seq(cfg, dtype=dtype)


def _check_grads(m, f, dlog, rng, k=8, only=None):
    """Numerical gradient at k random entries of every parameter (all entries would be slow)."""
    for name, p, g in m.named_parameters():
        if only and not only(name):
            continue
        flat = p.reshape(-1)
        for i in rng.choice(flat.size, size=min(k, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            fp = np.sum(f() * dlog)
            flat[i] = old - 1e-6
            fm = np.sum(f() * dlog)
            flat[i] = old
            num = (fp - fm) / 2e-6
            ana = g.reshape(-1)[i]
            assert abs(num - ana) <= 1e-6 + 1e-5 * abs(num), (name, i, num, ana)


GRAD_CONFIGS = [("lstm", True, "general"), ("gru", True, "dot"), ("lstm", False, "additive"),
                ("gru", False, "none")]


@pytest.mark.parametrize("cell,bi,att", GRAD_CONFIGS)
def test_seq2seq_gradients(cell, bi, att, rng):
    m = _model(cell, bi, att)
    src, sm, tin, tout, tm = _batch(rng)
    dlog = rng.standard_normal((T, N, VT))
    m.zero_grad()
    logits = m.forward(src, sm, tin)
    m.backward(dlog)
    assert logits.shape == (T, N, VT)
    _check_grads(m, lambda: m.forward(src, sm, tin), dlog, rng)


def test_two_layers_gradients(rng):
    m = _model("lstm", True, "general", layers=2)
    src, sm, tin, tout, tm = _batch(rng)
    dlog = rng.standard_normal((T, N, VT))
    m.zero_grad()
    m.forward(src, sm, tin)
    m.backward(dlog)
    _check_grads(m, lambda: m.forward(src, sm, tin), dlog, rng, only=lambda n: "coder." in n)


@pytest.mark.parametrize("att,smoothing", [("general", 0.0), ("none", 0.0), ("general", 0.1)])
def test_loss_on_valid_positions_equals_the_full_pass(att, smoothing, rng):
    m = _model("lstm", True, att)
    src, sm, tin, tout, tm = _batch(rng)
    m.zero_grad()
    full, dlog = softmax_cross_entropy(m.forward(src, sm, tin), tout, tm, smoothing)
    m.backward(dlog)
    ref = {n: g.copy() for n, _, g in m.named_parameters()}
    m.zero_grad()
    loss, dlog = m.loss(src, sm, tin, tout, tm, smoothing)
    assert dlog.shape == (int(tm.sum()), VT)
    m.backward(dlog)
    assert abs(loss - full) < 1e-12
    for n, _, g in m.named_parameters():
        np.testing.assert_allclose(g, ref[n], rtol=1e-10, atol=1e-12)


def _torch_twin():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import translate_vs_torch

    return translate_vs_torch


@pytest.mark.parametrize("cell,bi,att", CONFIGS)
def test_seq2seq_matches_torch(cell, bi, att, rng):
    torch = pytest.importorskip("torch")
    tw = _torch_twin()
    m = _model(cell, bi, att, dtype=np.float32)
    tm_ = tw.TorchSeq2Seq(m.cfg).from_rnnkit(m)
    src, sm, tin, tout, tmask = _batch(rng)
    m.zero_grad()
    loss, dlog = softmax_cross_entropy(m.forward(src, sm, tin), tout, tmask)
    m.backward(dlog)
    tl = tw.loss_fn(tm_(torch.from_numpy(src), torch.from_numpy(sm), torch.from_numpy(tin)),
                    torch.from_numpy(tout))
    tl.backward()
    assert abs(loss - tl.item()) < 1e-5
    theirs = tw.TorchSeq2Seq.grads_as_rnnkit(tm_, m)
    ours = {n: g for n, _, g in m.named_parameters()}
    assert set(theirs) == set(ours)
    for name in ours:
        assert rel_error(ours[name], theirs[name]) < 1e-4, name
    # and back: the torch weights copied into a fresh rnnkit model give the same logits
    twin = tm_.to_rnnkit(Seq2Seq(m.cfg))
    np.testing.assert_allclose(twin.forward(src, sm, tin), m.forward(src, sm, tin), atol=1e-5)


def test_torch_twin_smooths_labels_as_rnnkit(rng):
    """--label-smoothing 0.1: the twin's loss (torch's cross_entropy with label_smoothing) equals
    rnnkit's `Seq2Seq.loss(..., smoothing=0.1)` on identical weights."""
    torch = pytest.importorskip("torch")
    tw = _torch_twin()
    m = _model("lstm", True, "general", dtype=np.float32)
    tm_ = tw.TorchSeq2Seq(m.cfg).from_rnnkit(m)
    src, sm, tin, tout, tmask = _batch(rng)
    ours, _ = m.loss(src, sm, tin, tout, tmask, smoothing=0.1)
    theirs = tw.loss_fn(tm_(torch.from_numpy(src), torch.from_numpy(sm), torch.from_numpy(tin)),
                        torch.from_numpy(tout), 0.1)
    assert abs(ours - theirs.item()) < 1e-5
    assert abs(ours - m.loss(src, sm, tin, tout, tmask)[0]) > 1e-3  # the smoothing did something


def test_torch_twin_drops_where_rnnkit_drops(rng):
    """With --dropout the twin has dropout (its training-mode logits differ from evaluation mode), and
    in evaluation mode it still computes rnnkit's logits."""
    torch = pytest.importorskip("torch")
    tw = _torch_twin()
    cfg = Seq2SeqConfig(VS, VT, emb=4, hidden=5, attention="general", dropout=0.5)
    m = Seq2Seq(cfg, dtype=np.float32)
    tm_ = tw.TorchSeq2Seq(cfg).from_rnnkit(m)
    src, sm, tin, _, _ = _batch(rng)
    args = (torch.from_numpy(src), torch.from_numpy(sm), torch.from_numpy(tin))
    tm_.eval()
    m.eval()
    np.testing.assert_allclose(tm_(*args).detach().numpy(), m.forward(src, sm, tin), atol=1e-5)
    tm_.train()
    assert not torch.allclose(tm_(*args), tm_.eval()(*args))


def _seq_logprob(m, src, sm, hyp):
    """log p(hyp + <eos> | src) by teacher forcing, one sentence."""
    y = hyp + [EOS]
    tin = np.array([BOS] + y[:-1])[:, None]
    logits = m.forward(src, sm, tin)[:, 0]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(sum(logp[t, y[t]] for t in range(len(y))))


def _trained_free_model(seed=3):
    # a random model whose output is spread enough that beam search has something to find
    cfg = Seq2SeqConfig(VS, VT, emb=6, hidden=8, attention="general", seed=seed)
    m = Seq2Seq(cfg, dtype=np.float64)
    m.out.params["W"] *= 6
    return m.eval()


def test_beam_of_one_is_greedy_and_wider_beams_score_higher(rng):
    m = _trained_free_model()
    src, sm, *_ = _batch(rng)
    greedy = m.greedy(src, sm, max_len=6)
    assert m.beam_search(src, sm, beam=1, max_len=6, length_penalty=0) == greedy
    beam = m.beam_search(src, sm, beam=4, max_len=6, length_penalty=0)
    for n in range(N):
        s, k = src[:, n:n + 1], sm[:, n:n + 1]
        if len(greedy[n]) < 6 and len(beam[n]) < 6:  # both finished: compare full-sentence scores
            assert _seq_logprob(m, s, k, beam[n]) >= _seq_logprob(m, s, k, greedy[n]) - 1e-9
    # batched search gives each sentence what it gets alone
    for n in range(N):
        assert m.beam_search(src[:, n:n + 1], sm[:, n:n + 1], beam=4, max_len=6, length_penalty=0)[0] \
            == beam[n]


def test_beam_search_is_exhaustive_when_wide(rng):
    """With K >= V^L every sequence of length <= L survives, so the result is the best of them all."""
    import itertools

    cfg = Seq2SeqConfig(VS, 5, emb=4, hidden=6, attention="dot", bidirectional=False, seed=1)
    m = Seq2Seq(cfg, dtype=np.float64).eval()
    m.out.params["W"] *= 5
    src, sm = np.array([[5], [6]]), np.ones((2, 1), bool)
    best = m.beam_search(src, sm, beam=200, max_len=3, length_penalty=0)[0]
    cands = [list(c) for L in range(0, 3) for c in itertools.product(range(5), repeat=L)
             if EOS not in c and BOS not in c]
    scores = {tuple(c): _seq_logprob(m, src, sm, c) for c in cands}
    if len(best) < 3:
        assert abs(_seq_logprob(m, src, sm, best) - max(scores.values())) < 1e-9


def test_max_len_and_eos(rng):
    m = _trained_free_model()
    src, sm, *_ = _batch(rng)
    for beam in (1, 3):
        hyps = m.translate_ids(src, sm, beam=beam, max_len=2)
        assert all(len(h) <= 2 and EOS not in h and BOS not in h for h in hyps)
    # a decoder that always says <eos> first gives empty outputs
    m.out.params["b"][:] = 0
    m.out.params["W"][:] = 0
    m.out.params["b"][EOS] = 10
    assert m.greedy(src, sm, 5) == [[], [], []]
    assert m.beam_search(src, sm, beam=3, max_len=5) == [[], [], []]


def test_scheduled_inputs(rng):
    m = _trained_free_model()
    src, sm, tin, *_ = _batch(rng)
    assert np.array_equal(m.scheduled_inputs(src, sm, tin, 1.0, rng), tin)
    own = m.scheduled_inputs(src, sm, tin, 0.0, rng)
    assert np.array_equal(own[0], tin[0])  # <bos> (or the first input) is always given
    greedy = m.greedy(src, sm, T - 1)
    for n in range(N):  # with ratio 0 the inputs are the model's own greedy outputs
        g = greedy[n]
        assert own[1:1 + len(g), n].tolist() == g[:T - 1]


def test_attention_weights_returned(rng):
    m = _trained_free_model()
    src, sm, *_ = _batch(rng)
    for beam in (1, 3):
        hyps, atts = m.translate_ids(src, sm, beam=beam, max_len=5, return_attention=True)
        for n, (h, a) in enumerate(zip(hyps, atts)):
            assert a.shape == (len(h) + 1 if len(h) < 5 else 5, S)
            np.testing.assert_allclose(a.sum(-1), 1.0)
            assert np.all(a[:, ~sm[:, n]] == 0)
