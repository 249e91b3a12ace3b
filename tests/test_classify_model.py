"""The sentence classifier: the whole model's gradients, its pooling against the recurrent layer's final
state, and independence from padding. (The pooling functions themselves: test_pooling.py.)"""

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.functional import lengths_to_mask, pool_forward, softmax_cross_entropy
from rnnkit.models.classifier import ClassifierConfig, SentenceClassifier

LENGTHS = np.array([5, 1, 3, 5])  # a one-token sentence and padded ones


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_last_pooling_is_the_final_state(rng, cell):
    """Reading out[L-1] / out[0] gives exactly the recurrent layer's final state (PyTorch's h_n)."""
    cfg = ClassifierConfig(vocab_size=11, num_classes=3, embed_dim=4, hidden=5, cell=cell,
                           bidirectional=True, pooling="last", embed_dropout=0, dropout=0)
    m = SentenceClassifier(cfg, dtype=np.float64)
    T = int(LENGTHS.max())
    idx = rng.integers(2, 11, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    x = m.emb.forward(idx)
    out, final = m.rnn.forward(x, mask=mask)
    h = final[0] if cell == "lstm" else final
    feat, _ = pool_forward(out, mask, "last", 2)
    np.testing.assert_allclose(feat, np.concatenate([h[0], h[1]], axis=1), rtol=0, atol=0)


@pytest.mark.parametrize("cell, bi, pooling, layers", [
    ("lstm", True, "max", 1), ("gru", False, "last", 2), ("rnn", True, "mean", 1), ("lstm", True, "last", 2),
])
def test_model_gradients(rng, cell, bi, pooling, layers):
    cfg = ClassifierConfig(vocab_size=9, num_classes=3, embed_dim=3, hidden=4, cell=cell, layers=layers,
                           bidirectional=bi, pooling=pooling, embed_dropout=0, dropout=0, seed=3)
    m = SentenceClassifier(cfg, dtype=np.float64)
    T = int(LENGTHS.max())
    idx = rng.integers(1, 9, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    y = rng.integers(0, 3, len(LENGTHS))
    m.zero_grad()
    m.loss(idx, mask, y)

    def f():
        return np.array(softmax_cross_entropy(m.forward(idx, mask), y)[0])

    for name, p, g in m.named_parameters():
        num = numerical_grad(f, p, np.array(1.0))
        assert rel_error(g, num) < 1e-6, name


def test_dropout_is_in_the_backward(rng):
    """With dropout on, the analytic gradient still matches (same masks: re-seed before each forward)."""
    cfg = ClassifierConfig(vocab_size=7, num_classes=2, embed_dim=3, hidden=3, cell="lstm",
                           bidirectional=True, pooling="max", embed_dropout=0.4, dropout=0.5)
    m = SentenceClassifier(cfg, dtype=np.float64)
    T = int(LENGTHS.max())
    idx = rng.integers(1, 7, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    y = rng.integers(0, 2, len(LENGTHS))

    def reseed():
        m.emb_drop.rng = np.random.default_rng(5)
        m.drop.rng = np.random.default_rng(6)

    def f():
        reseed()
        return np.array(softmax_cross_entropy(m.forward(idx, mask), y)[0])

    reseed()
    m.zero_grad()
    m.loss(idx, mask, y)
    for name in ("head.W", "rnn.l0_reverse.Wh", "emb.W"):
        p = dict((n, p) for n, p, _ in m.named_parameters())[name]
        g = dict((n, g) for n, _, g in m.named_parameters())[name]
        assert rel_error(g, numerical_grad(f, p, np.array(1.0))) < 1e-6, name


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_prediction_does_not_depend_on_padding(rng, pooling):
    """A sentence gets the same probabilities alone or padded inside a batch of longer ones."""
    cfg = ClassifierConfig(vocab_size=20, num_classes=2, embed_dim=6, hidden=5, bidirectional=True,
                           pooling=pooling)
    m = SentenceClassifier(cfg, dtype=np.float64)
    T = int(LENGTHS.max())
    idx = rng.integers(2, 20, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    idx[~mask] = 0
    batch = m.predict_proba(idx, mask)
    assert m.training  # predict_proba restores the mode
    for n, L in enumerate(LENGTHS):
        alone = m.predict_proba(idx[:L, n:n + 1], None)
        np.testing.assert_allclose(batch[n], alone[0], rtol=1e-12)


def test_config_validation():
    with pytest.raises(ValueError, match="pooling"):
        ClassifierConfig(10, 2, pooling="sum").validate()
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierConfig(10, 1).validate()
    with pytest.raises(ValueError, match="dropout"):
        ClassifierConfig(10, 2, dropout=1.0).validate()
    cfg = ClassifierConfig(10, 2, cell="gru", bidirectional=True)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg


def test_classification_report_figures():
    from rnnkit.report.classification import classification_report, confusion_matrix, format_report

    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 0, 1]  # class 2 never predicted
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [1, 1, 0], [0, 1, 0]])
    rep = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert rep["accuracy"] == pytest.approx(3 / 6)
    a, b, c = (rep["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert (b["precision"], b["recall"]) == pytest.approx((1 / 3, 1 / 2))
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)
    assert b["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert rep["macro_f1"] == pytest.approx((2 / 3 + b["f1"] + 0) / 3)
    text = format_report(rep)
    assert "accuracy  0.5000" in text and "confusion matrix" in text
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_word_dropout_replaces_words_not_padding(rng):
    from rnnkit.models.classifier import WordDropout

    wd = WordDropout(0.5, unk_id=1, seed=0)
    idx = rng.integers(2, 50, (40, 30))
    idx[30:] = 0  # padding
    out = wd.forward(idx)
    dropped = out != idx
    assert np.all(out[dropped] == 1) and not dropped[30:].any()
    assert 0.4 < dropped[:30].mean() < 0.6
    assert wd.eval().forward(idx) is idx  # identity at test time


# --- language-model pretraining of the encoder ---------------------------------------------------


@pytest.mark.parametrize("cell, bi", [("lstm", True), ("gru", False)])
def test_encoder_lm_gradients(rng, cell, bi):
    from rnnkit.models.classifier import EncoderLM

    cfg = ClassifierConfig(vocab_size=9, num_classes=2, embed_dim=3, hidden=4, cell=cell,
                           bidirectional=bi, seed=4)
    clf = SentenceClassifier(cfg, dtype=np.float64)
    lm = EncoderLM(clf, dropout=0.0)
    T = int(LENGTHS.max())
    idx = rng.integers(1, 9, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    lm.zero_grad()
    loss, count = lm.loss(idx, mask)
    assert count == (2 if bi else 1) * int((LENGTHS - 1).sum())  # a prediction per valid neighbour
    names = {n for n, _, _ in lm.named_parameters()}
    assert "emb.W" in names and ("prev.W" in names) == bi
    assert lm.emb.params["W"] is clf.emb.params["W"]  # the classifier's own arrays are trained

    def f():
        return np.array(lm.loss(idx, mask, backward=False)[0])

    for name, p, g in lm.named_parameters():
        num = numerical_grad(f, p, np.array(1.0))
        assert rel_error(g, num) < 1e-6, name


def test_encoder_lm_predicts_each_word_from_the_other_side(rng):
    """The loss equals an explicit loop: the forward direction's state after word t scores word t+1,
    the reverse direction's state after word t+1 (reading right to left) scores word t, each within
    the sentence only; neither state has read the word it scores (it is a recurrent state of the
    words on one side)."""
    from rnnkit.models.classifier import EncoderLM

    cfg = ClassifierConfig(vocab_size=9, num_classes=2, embed_dim=3, hidden=4, bidirectional=True, seed=5)
    lm = EncoderLM(SentenceClassifier(cfg, dtype=np.float64), dropout=0.0)
    T, H = int(LENGTHS.max()), cfg.hidden
    idx = rng.integers(1, 9, (T, len(LENGTHS)))
    mask = lengths_to_mask(LENGTHS, T)
    loss, count = lm.loss(idx, mask, backward=False)
    nll = []
    for n, L in enumerate(LENGTHS):
        out, _ = lm.rnn.forward(lm.emb.forward(idx[:L, n:n + 1]))  # the sentence alone, no padding
        for t in range(L - 1):
            for head, state, word in ((lm.next, out[t, :, :H], idx[t + 1, n]),
                                      (lm.prev, out[t + 1, :, H:], idx[t, n])):
                z = head.forward(state)[0]
                nll.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[word])
    assert count == len(nll)
    assert loss == pytest.approx(np.mean(nll), rel=1e-12)
    with pytest.raises(ValueError, match="one layer"):
        EncoderLM(SentenceClassifier(ClassifierConfig(vocab_size=9, num_classes=2, layers=2,
                                                      bidirectional=True)))


def test_bag_mean_gradient(rng):
    """Mean of rows per bag: the backward against central differences (float64, random upstream
    gradient), with a gram repeated inside a bag and shared between bags."""
    from rnnkit.functional import bag_mean_backward_into, bag_mean_forward

    W = rng.standard_normal((6, 4))
    grams = np.array([1, 1, 3, 0, 3, 5, 2, 4, 1])
    offsets = np.array([0, 3, 4, 8])  # bags of 3, 1, 4 and 1 grams
    out, cache = bag_mean_forward(grams, offsets, W)
    np.testing.assert_allclose(out[0], (2 * W[1] + W[3]) / 3)
    dout = rng.standard_normal(out.shape)
    dW = np.zeros_like(W)
    bag_mean_backward_into(dW, dout, cache)
    num = numerical_grad(lambda: bag_mean_forward(grams, offsets, W)[0], W, dout)
    assert rel_error(dW, num) < 1e-9
    with pytest.raises(ValueError, match="non-empty bags"):
        bag_mean_forward(grams, np.array([0, 3, 3]), W)
    with pytest.raises(ValueError, match="expected \\[0, 6\\)"):
        bag_mean_forward(np.array([6]), np.array([0]), W)


def _subword_batch(words_per_sentence):
    """Sentences of words -> (idx, mask, bag) with a vocabulary that knows only 'good' and 'bad'."""
    from rnnkit.data.subwords import SubwordHasher, SurfaceTable
    from rnnkit.data.words import pad_batch

    vocab = {"good": 2, "bad": 3}
    table = SurfaceTable(SubwordHasher(buckets=64, n_min=2, n_max=4))
    idx, mask = pad_batch([[vocab.get(w, 1) for w in s] for s in words_per_sentence])
    surf, _ = pad_batch([table.ids(s) for s in words_per_sentence])
    return idx, mask, table.bag(surf)


def test_subword_model_gradients(rng):
    """With character n-grams every parameter, the n-gram table included, matches central differences."""
    cfg = ClassifierConfig(vocab_size=5, num_classes=2, embed_dim=3, hidden=4, bidirectional=True,
                           pooling="max", embed_dropout=0, dropout=0, subword_buckets=64,
                           subword_min=2, subword_max=4, embed_init_std=0.5, seed=1)
    m = SentenceClassifier(cfg, dtype=np.float64)
    idx, mask, bag = _subword_batch([["good", "film", "goodness"], ["bad"], ["films", "bad", "x"]])
    y = np.array([1, 0, 0])
    m.zero_grad()
    m.loss(idx, mask, y, bag)

    def f():
        return np.array(softmax_cross_entropy(m.forward(idx, mask, bag), y)[0])

    names = [n for n, _, _ in m.named_parameters()]
    assert "sub.W" in names
    for name, p, g in m.named_parameters():
        assert rel_error(g, numerical_grad(f, p, np.array(1.0))) < 1e-6, name
    with pytest.raises(ValueError, match="SubwordBag"):
        m.forward(idx, mask)


def test_unknown_words_keep_their_pieces():
    """Two words outside the vocabulary (both <unk> ids) get different inputs from their n-grams, and a
    word sharing pieces with a known one gets part of its n-gram vector."""
    cfg = ClassifierConfig(vocab_size=5, num_classes=2, embed_dim=3, hidden=2, subword_buckets=64,
                           subword_min=2, subword_max=4)
    m = SentenceClassifier(cfg, dtype=np.float64).eval()
    idx, mask, bag = _subword_batch([["goodish", "dreadful", "good"]])
    assert idx[0, 0] == idx[1, 0] == 1  # both unknown
    x = m.embed(idx, bag)
    assert not np.allclose(x[0, 0], x[1, 0])
    ngram_vecs = m.sub.forward(bag.grams, bag.offsets)  # (U, E)
    np.testing.assert_allclose(x[0, 0], m.emb.params["W"][1] + ngram_vecs[bag.surf[0, 0]], rtol=1e-12)
