"""The captioner: whole-model gradients checked numerically (float64, random upstream gradient), decoding,
and the standard sanity check of overfitting 20 real images. (The attention and normalisation functions
it is built from are checked in test_image_attention.py and test_norms.py.)"""

import contextlib

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.models.captioner import Captioner, CaptionerConfig


def _tiny(cell, attention, encoder="conv"):
    cfg = CaptionerConfig(vocab_size=9, cell=cell, embed=5, hidden=6, encoder=encoder, image_size=8,
                          channels=(3, 4), attention=attention,
                          feature_shape=(4, 2, 2) if encoder == "features" else None, seed=3)
    return Captioner(cfg, bos_id=2, eos_id=3, dtype=np.float64)


@pytest.mark.parametrize("cell,attention,encoder", [("lstm", "none", "conv"), ("gru", "luong", "conv"),
                                                    ("lstm", "luong", "features"), ("lstm", "sat", "conv"),
                                                    ("gru", "sat", "features")])
def test_captioner_gradients(rng, cell, attention, encoder):
    """Every parameter's gradient of the loss, from the word logits down through the LSTM/GRU, the
    attention and the projection into the conv encoder, equals the numerical one."""
    model = _tiny(cell, attention, encoder)
    N = 2
    images = rng.standard_normal((N, 3, 8, 8)) if encoder == "conv" else rng.standard_normal((N, 4, 2, 2))
    ids = np.array([[2, 2, 2], [5, 6, 4], [7, 3, 3], [3, 0, 0]])  # <bos> w .. <eos> <pad>
    rows = np.array([0, 1, 0])  # image 0 has two captions: its encoding's gradients add up
    mask = ids[1:] != 0  # no gradient flows from padded targets
    logits = model.forward(images, ids, rows)
    dlogits = rng.standard_normal(logits.shape) * mask[..., None]
    model.zero_grad()
    model.backward(dlogits)
    f = lambda: model.forward(images, ids, rows)  # noqa: E731
    checked = 0
    for name, p, g in model.named_parameters():
        if p.size > 60:  # big tables: check a random subset of entries for speed
            idx = rng.choice(p.size, 40, replace=False)
            flat = p.reshape(-1)
            num = []
            for i in idx:
                old = flat[i]
                flat[i] = old + 1e-6
                fp = np.sum(f() * dlogits)
                flat[i] = old - 1e-6
                fm = np.sum(f() * dlogits)
                flat[i] = old
                num.append((fp - fm) / 2e-6)
            err = rel_error(np.array(num), g.reshape(-1)[idx])
        else:
            err = rel_error(numerical_grad(f, p, dlogits), g)
        assert err < 1e-6, f"{name}: relative error {err:.2e}"
        checked += 1
    assert checked >= 8


def test_sat_decoding_matches_teacher_forcing(rng):
    """Show-attend-tell: the step-by-step decoder (greedy) computes the same log-probabilities as the
    teacher-forced sequence forward on the words it chose."""
    model = _tiny("lstm", "sat")
    images = rng.standard_normal((2, 3, 8, 8))
    model.eval()
    out = model.greedy(images, max_len=5)
    for n in range(2):
        seq = np.array([2] + out[n] + ([3] if len(out[n]) < 5 else []))[:, None]
        logits = model.forward(images[n:n + 1], seq)[:, 0]
        logits[:, [0, 1, 2]] = -np.inf
        assert list(logits.argmax(axis=1)[:len(out[n])]) == out[n]


def test_beam_matches_greedy_at_width_one_and_scores_no_worse(rng):
    model = _tiny("lstm", "luong")
    images = rng.standard_normal((3, 3, 8, 8))
    g = model.greedy(images, max_len=6)
    assert model.beam_search(images, beam=1, max_len=6) == g
    b = model.beam_search(images, beam=4, max_len=6)

    def logprob(ids, n):
        seq = [2] + ids + ([3] if len(ids) < 6 else [])
        arr = np.array(seq)[:, None]
        model.eval()
        logits = model.forward(images[n:n + 1], arr)
        model.train()
        logits = logits[:, 0].copy()
        logits[:, [0, 1, 2]] = -np.inf
        lp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - logits.max(1, keepdims=True)
        return sum(lp[t, arr[t + 1, 0]] for t in range(len(seq) - 1))

    for n in range(3):
        assert logprob(b[n], n) >= logprob(g[n], n) - 1e-9
        assert all(i not in (0, 1, 2) for i in b[n])


def _one_blas_thread():
    """Small matrices on a shared 2-core machine: threaded OpenBLAS spins and runs ~10x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def test_overfit_twenty_real_images(data_dir):
    """The standard sanity check: a small model trained on 20 Flickr8k pictures (32x32 pixels, one
    caption each, cut to 6 words) reproduces every training caption word for word with greedy decoding."""
    npz = data_dir / "flickr8k_mini" / "images_64x64.npz"
    tsv = data_dir / "flickr8k_mini" / "captions.tsv"
    if not npz.exists():
        pytest.skip("flickr8k_mini not available")
    from rnnkit.data.captions import build_caption_vocab, encode_captions, read_captions
    from rnnkit.data.images import load_images, normalise
    from rnnkit.optim import Adam, collect_params

    caps = read_captions(tsv)
    names = caps.images(["train"])[:20]
    first = {}
    for c in caps.captions:
        if c.image in names and c.image not in first:
            first[c.image] = c.tokens[:6]
    tokens = [first[n] for n in names]
    vocab = build_caption_vocab(tokens, min_freq=1)
    ids = encode_captions(tokens, vocab, max_len=6)
    imgs = load_images(npz, names, size=32)
    x = normalise(imgs.data[imgs.rows(names)])
    cfg = CaptionerConfig(vocab_size=len(vocab), cell="lstm", embed=32, hidden=64, image_size=32,
                          channels=(8, 16), seed=0)
    model = Captioner(cfg, vocab.bos_id, vocab.eos_id)
    opt = Adam(collect_params(m=model), lr=1e-2)
    with _one_blas_thread():
        for step in range(400):
            opt.zero_grad()
            loss, _ = model.loss_and_backward(x, ids)
            opt.step()
            if loss < 0.02:
                break
        out = model.greedy(x, max_len=8)
    got = [vocab.decode(o) for o in out]
    correct = sum(g == t for g, t in zip(got, tokens))
    assert loss < 0.1, f"training loss {loss:.3f} after {step + 1} steps"
    assert correct == 20, f"{correct}/20 captions reproduced; e.g. {got[0]} vs {tokens[0]}"


def test_training_updates_the_running_feature_statistics(rng):
    model = _tiny("gru", "none")
    model.forward(rng.standard_normal((3, 3, 8, 8)), np.array([[2, 2, 2], [5, 3, 4], [3, 0, 3]]))
    assert not np.allclose(model.norm_mean, 0)  # training updated the running mean
