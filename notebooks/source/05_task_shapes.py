# %% [markdown]
# # 5. The task shapes: one-to-many, many-to-one, many-to-many
#
# *Follows section 2 of the lecture guide, "problems an RNN can solve".*
#
# The same recurrence serves three shapes of problem, told apart by where the input goes in and where
# the loss reads the output:
#
# | shape | task here | data | model |
# |---|---|---|---|
# | one-to-many | image captioning | flickr8k_mini (1000 pictures, 64x64) | conv encoder -> LSTM decoder |
# | many-to-one | sentiment | SST-2 | LSTM over the words -> last state -> 2 classes |
# | many-to-many | translation | eng-fra (French -> English) | biLSTM encoder -> LSTM decoder with attention |
#
# Each is trained here for a minute or so on the CPU: enough to see the shape work, far from what
# longer training gives (`rnnkit train caption|classify|translate`, figures in docs/RESULTS.md).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from rnnkit.data.captions import build_caption_vocab, decode_ids, encode_captions, read_captions
from rnnkit.data.images import load_images, normalise
from rnnkit.data.parallel import build_vocabs, collate, encode_pairs, read_parallel, split_by_source
from rnnkit.data.tsv import read_labelled_tsv
from rnnkit.data.vocab import Vocab
from rnnkit.data.words import Tokenizer, pad_batch
from rnnkit.models.captioner import Captioner, CaptionerConfig
from rnnkit.models.classifier import ClassifierConfig, SentenceClassifier
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.optim import Adam, clip_grad_norm, collect_params

SMALL = os.environ.get("RNNKIT_NOTEBOOK_SMALL") == "1"  # the quick setting CI runs
# the lecture's data: $RNNKIT_DATA, else ../shared/data beside the repository (notebooks run in notebooks/)
DATA = Path(os.environ.get("RNNKIT_DATA", Path.cwd().parent.parent / "shared" / "data"))
rng = np.random.default_rng(0)


def make_optimizer(model, lr):
    params = collect_params(model=model)
    return params, Adam(params, lr=lr)

# %% [markdown]
# ## One-to-many: a caption from one image
#
# The image is read once: a small convolutional encoder (trained from the pixels, end to end) gives a
# vector, and that vector sets the decoder's initial state, $h_0 = \tanh(v W_p + b_p)$. From there the
# LSTM writes one word per step, reading its previous word (the true one during training: teacher
# forcing), until it writes `<eos>`.

# %%
caps = read_captions(DATA / "flickr8k_mini" / "captions.tsv")
train_caps = caps.by_image(["train"])  # image -> its (five) token lists
test_caps = caps.by_image(["test"])
images = load_images(DATA / "flickr8k_mini" / "images_64x64.npz", caps.images())
pixels = normalise(images.data)  # (N, 3, 64, 64), ImageNet's channel statistics
cvocab = build_caption_vocab([t for ts in train_caps.values() for t in ts], min_freq=3)
print(f"{len(train_caps)} training images, {len(test_caps)} test images; {len(cvocab)} words")

cap = Captioner(CaptionerConfig(vocab_size=len(cvocab), embed=64, hidden=128, channels=(16, 32, 32)),
                bos_id=cvocab.bos_id, eos_id=cvocab.eos_id, pad_id=cvocab.pad_id, unk_id=cvocab.unk_id)
params, opt = make_optimizer(cap, 2e-3)
names = list(train_caps)
for it in range(30 if SMALL else 150):
    batch = rng.choice(len(names), 32, replace=False)
    img_rows, tokens, owner = [], [], []
    for j, b in enumerate(batch):  # every caption of each image, the image encoded once
        img_rows.append(images.index[names[b]])
        tokens += train_caps[names[b]]
        owner += [j] * len(train_caps[names[b]])
    ids = encode_captions(tokens, cvocab, max_len=16)  # (T+1, M): <bos> w1 .. <eos> <pad>..
    opt.zero_grad()
    loss, _ = cap.loss_and_backward(pixels[img_rows], ids, rows=np.array(owner))
    clip_grad_norm(params, 5.0)
    opt.step()
    if it % 50 == 0:
        print(f"update {it:4d}: loss {loss:.2f} nats/word")
print(f"update {it:4d}: loss {loss:.2f} nats/word")

cap.eval()
show = list(test_caps)[:4]
hyps = cap.greedy(pixels[images.rows(show)], max_len=16)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, name, hyp in zip(axes, show, hyps):
    ax.imshow(images.data[images.index[name]])
    ax.set_title(" ".join(decode_ids(hyp, cvocab)), fontsize=8, wrap=True)
    ax.axis("off")
plt.tight_layout()
plt.show()
for name in show[:2]:
    print("a reference:", " ".join(test_caps[name][0]))

# %% [markdown]
# ## Many-to-one: the sentiment of a sentence
#
# The LSTM reads the whole sentence; only its state after the last word (`pooling="last"`) goes to the
# classifier. Sentences of different lengths share a batch with a mask (notebook 1).

# %%
tok = Tokenizer()
train = read_labelled_tsv(DATA / "sst2" / "train.tsv")
dev = read_labelled_tsv(DATA / "sst2" / "dev.tsv", known_labels={"0", "1"})
order = rng.permutation(len(train.examples))[: 3000 if SMALL else 15000]
texts = [tok(train.texts[i]) for i in order]
y_train = np.array([int(train.labels[i]) for i in order])
wvocab = Vocab.build(texts, min_freq=2)
ids = [np.array(wvocab.encode(t)) for t in texts]
print(f"{len(ids)} training phrases, {len(dev.examples)} dev sentences, {len(wvocab)} words")

clf = SentenceClassifier(ClassifierConfig(vocab_size=len(wvocab), num_classes=2, embed_dim=64,
                                          hidden=64, pooling="last", seed=0))
params, opt = make_optimizer(clf, 3e-3)
for epoch in range(1):
    for start in range(0, len(ids), 64):
        sel = np.arange(start, min(start + 64, len(ids)))
        idx, mask = pad_batch([ids[i] for i in sel])
        opt.zero_grad()
        loss, _ = clf.loss(idx, mask, y_train[sel])  # forward, cross-entropy and backward
        clip_grad_norm(params, 5.0)
        opt.step()

dev_ids = [np.array(wvocab.encode(tok(t) or ["<unk>"])) for t in dev.texts]
idx, mask = pad_batch(dev_ids)
probs = clf.predict_proba(idx, mask)  # eval mode: no dropout
y_dev = np.array([int(label) for label in dev.labels])
print(f"dev accuracy {np.mean(probs.argmax(1) == y_dev):.1%} (always guessing the larger class: "
      f"{max(np.mean(y_dev), 1 - np.mean(y_dev)):.1%})")

# %% [markdown]
# Reading a sentence word by word: the probability of "positive" after each prefix (the classifier
# applied to the state after each word). The verdict can turn on one word.

# %%
for sentence in ["the acting is wonderful , but the plot is a mess .",
                 "not a single moment of this film is boring ."]:
    words = tok(sentence)
    prefixes = [np.array(wvocab.encode(words[:k + 1])) for k in range(len(words))]
    idx, mask = pad_batch(prefixes)
    p = clf.predict_proba(idx, mask)[:, 1]
    print("  ".join(f"{w}:{q:.2f}" for w, q in zip(words, p)))

# %% [markdown]
# ## Many-to-many: translation with attention
#
# The encoder (a bidirectional LSTM) reads the French sentence; the decoder starts from its final state
# and writes English one word at a time. At every output step, Luong's "general" attention scores each
# source position against the decoder's state, and the softmax of those scores weights an average of
# the encoder's outputs: the decoder looks back at the source instead of carrying it all in one vector.
# Here: sentences of at most 5 words.

# %%
pairs, _ = read_parallel(DATA / "eng-fra" / "fra.txt", reverse=True, max_words=5)  # French -> English
split = split_by_source(pairs, dev_frac=0.0, test_frac=0.02, seed=0)
train_pairs = split.train[: 6000 if SMALL else 30000]
src_vocab, tgt_vocab = build_vocabs(train_pairs, min_freq=2)
items = encode_pairs(train_pairs, src_vocab, tgt_vocab)
print(f"{len(items)} training pairs; {len(src_vocab)} French and {len(tgt_vocab)} English words")

s2s = Seq2Seq(Seq2SeqConfig(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab), emb=96, hidden=128,
                            attention="general", seed=0))
params, opt = make_optimizer(s2s, 3e-3)
for it in range(60 if SMALL else 400):
    b = collate([items[i] for i in rng.choice(len(items), 64, replace=False)], bos=tgt_vocab.bos_id)
    opt.zero_grad()
    loss, dlogits = s2s.loss(b["src"], b["src_mask"], b["tgt_in"], b["tgt_out"], b["tgt_mask"])
    s2s.backward(dlogits)
    clip_grad_norm(params, 5.0)
    opt.step()
    if it % 100 == 0:
        print(f"update {it:4d}: loss {loss:.2f} nats/word")
print(f"update {it:4d}: loss {loss:.2f} nats/word")

# %%
s2s.eval()
tests = [src for src, _ in split.test[:(50 if SMALL else 200)]]
exact = 0
src, smask = pad_batch([src_vocab.encode(s) for s in tests])
hyps, atts = s2s.greedy(src, smask, max_len=12, return_attention=True)
for s, (_, refs), h in zip(tests, split.test, hyps):
    exact += tgt_vocab.decode(h, strip_specials=True) in refs
print(f"exact match with one of the references on {len(tests)} held-out sentences: {exact / len(tests):.0%}")
for s, (_, refs), h in list(zip(tests, split.test, hyps))[:5]:
    print(f"{' '.join(s):32s} -> {' '.join(tgt_vocab.decode(h, strip_specials=True)):28s} "
          f"(ref: {' '.join(refs[0])})")

# %% [markdown]
# The attention weights of two of them: each row is one English word written, each column one French
# word read; a bright cell is where the decoder looked.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for ax, k in zip(axes, (0, 1)):
    out_words = tgt_vocab.decode(hyps[k], strip_specials=True) + ["<eos>"]
    a = atts[k][:len(out_words), :len(tests[k])]
    ax.imshow(a, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks(range(len(tests[k])))
    ax.set_xticklabels(tests[k], rotation=45, ha="right")
    ax.set_yticks(range(len(out_words)))
    ax.set_yticklabels(out_words)
plt.tight_layout()
plt.show()
