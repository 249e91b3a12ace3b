"""The shared decoders (rnnkit.models.decoding) on hand-built step functions: the known best sequence
where greedy misses it, length normalisation, beam width one against greedy, each item decoded as if
alone, and the extras (attention weights) that follow the chosen hypothesis back through the beam."""

import numpy as np
import pytest

from rnnkit.functional import log_softmax
from rnnkit.models import decoding

BOS, EOS, A, B = 0, 1, 2, 3  # a four-token vocabulary


def _table_step(tables):
    """A step whose next-token distribution depends on the previous token and the item only: tables[i]
    (V, V) are item i's probabilities of each next token (columns) after each token (rows). The state
    (1, rows, 1) holds each row's item, so beam search must move it with its hypothesis; the extra is
    the token the row was fed."""
    logs = [np.log(np.maximum(t, 1e-300)) for t in tables]

    def step(tokens, state):
        items = state[0, :, 0]
        logp = np.stack([logs[i][t] for i, t in zip(items, tokens)])
        return logp, state, tokens[:, None].astype(float)

    return step


def _items(n, beam=1):
    return np.repeat(np.arange(n), beam)[None, :, None]


def _table(after_bos, after_a, after_b):
    t = np.full((4, 4), 1e-9)
    for row, probs in ((BOS, after_bos), (A, after_a), (B, after_b), (EOS, {EOS: 1.0})):
        for tok, p in probs.items():
            t[row, tok] = p
    return t / t.sum(axis=1, keepdims=True)


# greedy takes A (0.55), then <eos> (0.5): p = 0.275; the best sentence is B <eos>: 0.45 * 0.9 = 0.405
TRAP = _table({A: 0.55, B: 0.45}, {EOS: 0.5, A: 0.25, B: 0.25}, {EOS: 0.9, A: 0.05, B: 0.05})
# here greedy is right: A <eos> = 0.8 * 0.9
EASY = _table({A: 0.8, B: 0.2}, {EOS: 0.9, B: 0.1}, {EOS: 0.5, A: 0.5})
# the empty sentence (0.5) beats A <eos> (0.5 * 0.95 = 0.475) on the total, not per token
SHORT = _table({EOS: 0.5, A: 0.5}, {EOS: 0.95, B: 0.05}, {EOS: 1.0})


def test_beam_finds_the_known_best_sequence_greedy_misses():
    step = _table_step([TRAP, EASY])
    hyps, _ = decoding.greedy(step, _items(2), 2, BOS, EOS, max_len=5)
    assert hyps == [[A], [A]]
    hyps, _ = decoding.beam_search(step, _items(2, 2), 2, 2, BOS, EOS, max_len=5)
    assert hyps == [[B], [A]]


def _remembers_the_first_word():
    """A step whose state is each row's first word (-1 before it): after the first word A 0.55, B 0.45,
    then <eos> 0.9 if the sentence began with B, else 0.1. The best sentence, B A <eos> (0.4 * 0.55 *
    0.9), needs each hypothesis' own state: with A B's state swapped for B A's, A B <eos> would score
    0.6 * 0.45 * 0.9."""

    def step(tokens, state):
        first = state[0, :, 0]
        p = np.full((tokens.shape[0], 4), 1e-9)
        for r, (t, f) in enumerate(zip(tokens, first)):
            if t == BOS:
                p[r, A], p[r, B] = 0.6, 0.4
            elif f < 0:  # fed the first word
                p[r, A], p[r, B] = 0.55, 0.45
            else:
                p[r, EOS] = 0.9 if f == B else 0.1
                p[r, A] = p[r, B] = (1 - p[r, EOS]) / 2
        first = np.where((first < 0) & (tokens != BOS), tokens, first)
        return np.log(p / p.sum(axis=1, keepdims=True)), first[None, :, None], None

    return step


def test_beam_moves_each_hypothesis_state_with_it():
    step = _remembers_the_first_word()
    assert decoding.greedy(step, np.full((1, 1, 1), -1), 1, BOS, EOS, 3)[0] == [[A, A, A]]
    assert decoding.beam_search(step, np.full((1, 4, 1), -1), 1, 4, BOS, EOS, 3)[0] == [[B, A]]


def test_length_penalty_normalises_by_the_length_with_eos():
    step = _table_step([SHORT])
    assert decoding.beam_search(step, _items(1, 3), 1, 3, BOS, EOS, 5, length_penalty=0)[0] == [[]]
    assert decoding.beam_search(step, _items(1, 3), 1, 3, BOS, EOS, 5, length_penalty=1)[0] == [[A]]


def _random_rnn_step(rng, V=7, H=5, eos_bias=0.0):
    """A tiny random recurrent model: h' = tanh(h Wh + E[token]), logp = log_softmax(h' Wo + b), b
    zero but for eos_bias on <eos>."""
    Wh, E, Wo = rng.standard_normal((H, H)), rng.standard_normal((V, H)), rng.standard_normal((H, V)) * 3
    b = np.zeros(V)
    b[EOS] = eos_bias

    def step(tokens, state):
        h = np.tanh(state[0] @ Wh + E[tokens])
        logp = log_softmax(h @ Wo + b)
        return logp, h[None], np.exp(logp[:, :3])

    return step


@pytest.mark.parametrize("seed", range(5))
def test_beam_of_one_is_greedy(seed):
    rng = np.random.default_rng(seed)
    step = _random_rnn_step(rng)
    h0 = rng.standard_normal((1, 6, 5))
    g, g_extra = decoding.greedy(step, h0, 6, BOS, EOS, max_len=8, keep_extra=True)
    b, b_extra = decoding.beam_search(step, h0, 6, 1, BOS, EOS, max_len=8, keep_extra=True)
    assert b == g
    assert len(b_extra) == len(g_extra) == 6
    for x, y in zip(b_extra, g_extra):
        np.testing.assert_array_equal(x, y)


def test_wide_beam_is_exhaustive():
    """With K at least the number of sequences every one survives (the finished ones with their scores
    frozen): the result is the best of them all, found here by brute force."""
    import itertools

    rng = np.random.default_rng(5)
    V, L = 4, 4
    step = _random_rnn_step(rng, V=V, eos_bias=-2.0)  # the best sentences are the long ones
    h0 = rng.standard_normal((1, 1, 5))

    def score(seq):
        state, tok, total = h0, np.array([BOS]), 0.0
        for t in seq:
            logp, state, _ = step(tok, state)
            total += logp[0, t]
            tok = np.array([t])
        return total

    seqs = [list(c) + [EOS] for n in range(L) for c in itertools.product(range(V), repeat=n)
            if EOS not in c]
    seqs += [list(c) for c in itertools.product(range(V), repeat=L) if EOS not in c]
    best = max(seqs, key=score)
    hyps, _ = decoding.beam_search(step, np.repeat(h0, V ** L, axis=1), 1, V ** L, BOS, EOS, L)
    assert hyps[0] == [t for t in best if t != EOS]


def test_each_item_decodes_as_if_alone():
    rng = np.random.default_rng(3)
    step = _random_rnn_step(rng)
    h0 = rng.standard_normal((1, 4, 5))
    K = 3
    together, _ = decoding.beam_search(step, h0[:, np.repeat(np.arange(4), K)], 4, K, BOS, EOS, 8)
    for n in range(4):
        alone, _ = decoding.beam_search(step, np.repeat(h0[:, n:n + 1], K, axis=1), 1, K, BOS, EOS, 8)
        assert alone[0] == together[n]


@pytest.mark.parametrize("beam", [1, 3])
def test_extras_follow_the_chosen_hypothesis(beam):
    """The extra of each step is the token fed to the row: for the hypothesis returned they read
    <bos>, its tokens (and the <eos> step), whichever rows of the beam it passed through."""
    step = _table_step([TRAP, EASY, SHORT])
    decode = (lambda: decoding.greedy(step, _items(3), 3, BOS, EOS, 5, keep_extra=True)) if beam == 1 \
        else (lambda: decoding.beam_search(step, _items(3, beam), 3, beam, BOS, EOS, 5, keep_extra=True))
    hyps, extras = decode()
    for h, e in zip(hyps, extras):
        assert e.shape == (len(h) + 1, 1)
        assert e[:, 0].tolist() == [BOS] + h


def test_max_len_cuts_and_no_extras_without_a_source():
    step = _table_step([_table({A: 1.0}, {A: 1.0}, {A: 1.0})])  # never says <eos>
    for decode in (lambda **kw: decoding.greedy(step, _items(1), 1, BOS, EOS, 4, **kw),
                   lambda **kw: decoding.beam_search(step, _items(1, 2), 1, 2, BOS, EOS, 4, **kw)):
        hyps, extras = decode(keep_extra=True)
        assert hyps == [[A] * 4] and extras[0].shape == (4, 1)  # no <eos> step to add
        assert decode()[1] == []
    assert decoding.greedy(step, _items(2), 2, BOS, EOS, 0) == ([[], []], [])
    with pytest.raises(ValueError, match="beam"):
        decoding.beam_search(step, _items(1), 1, 0, BOS, EOS, 4)


def test_select_rows_moves_every_part_of_the_state():
    h, c = np.arange(12.0).reshape(2, 3, 2), -np.arange(12.0).reshape(2, 3, 2)
    rows = np.array([2, 2, 0])
    h2, c2 = decoding.select_rows((h, c), rows)
    np.testing.assert_array_equal(h2, h[:, rows])
    np.testing.assert_array_equal(c2, c[:, rows])
    np.testing.assert_array_equal(decoding.select_rows(h, rows), h[:, rows])
