"""Corpus BLEU: the paper's worked examples, brevity penalty, multiple references, and sacrebleu."""

import math

import numpy as np
import pytest

from rnnkit.metrics.bleu import corpus_bleu, sentence_bleu


def test_modified_precision_papineni_example():
    # Papineni et al. (2002), section 2.1: "the" x7 against two references -> unigram precision 2/7
    hyp = "the the the the the the the".split()
    refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    b = corpus_bleu([hyp], [refs])
    assert b["precisions"][0] == pytest.approx(100 * 2 / 7)
    assert b["bleu2"] == 0.0  # no bigram matches


def test_perfect_match_and_brevity_penalty():
    ref = "a dog runs on the green grass".split()
    assert corpus_bleu([ref], [[ref]])["bleu4"] == pytest.approx(100.0)
    short = "a dog runs on the".split()
    b = corpus_bleu([short], [[ref]])
    assert b["bp"] == pytest.approx(math.exp(1 - 7 / 5))
    assert b["bleu1"] == pytest.approx(100 * math.exp(1 - 7 / 5))
    # closest reference length is used: a second reference of length 5 removes the penalty
    b2 = corpus_bleu([short], [[ref, "one two three four five".split()]])
    assert b2["bp"] == 1.0 and b2["ref_len"] == 5


def test_corpus_pools_counts_rather_than_averaging():
    h = ["a b c d".split(), "x y".split()]
    r = [["a b c d".split()], ["x z".split()]]
    b = corpus_bleu(h, r)
    # unigrams: 4 + 1 matched of 6; bigrams: 3 + 0 of 4
    assert b["precisions"][0] == pytest.approx(100 * 5 / 6)
    assert b["precisions"][1] == pytest.approx(100 * 3 / 4)
    assert b["bleu2"] == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 4))


def test_clipping_uses_max_count_over_references():
    hyp = "a a a dog".split()
    refs = [["a dog".split(), "a a cat".split()]]
    assert corpus_bleu([hyp], refs)["precisions"][0] == pytest.approx(100 * 3 / 4)  # a: min(3, 2) + dog


def test_sentence_bleu_ranks():
    refs = ["a dog runs in a field".split()]
    assert sentence_bleu("a dog runs in a field".split(), refs) == pytest.approx(100.0)
    assert sentence_bleu("a dog runs".split(), refs) > sentence_bleu("a cat sits".split(), refs) > 0
    assert sentence_bleu("zebra".split(), refs) == 0.0


def test_matches_sacrebleu(rng):
    sacrebleu = pytest.importorskip("sacrebleu")
    words = "a the dog cat man in on runs sits grass red ball water".split()
    hyps, refs = [], []
    for _ in range(40):
        hyps.append(list(rng.choice(words, rng.integers(3, 10))))
        refs.append([list(rng.choice(words, rng.integers(3, 10))) for _ in range(5)])
    ours = corpus_bleu(hyps, refs)
    streams = [[" ".join(r[k]) for r in refs] for k in range(5)]
    for n in range(1, 5):
        m = sacrebleu.metrics.BLEU(max_ngram_order=n, tokenize="none", smooth_method="none")
        s = m.corpus_score([" ".join(h) for h in hyps], streams)
        assert ours[f"bleu{n}"] == pytest.approx(s.score, abs=1e-9), n
    np.testing.assert_allclose(ours["precisions"], s.precisions, atol=1e-9)
