"""Many-to-one sentence classifier: read a whole (padded) sentence, give one answer.

    idx (T, N) -> [word dropout] -> Embedding [+ mean of the word's n-gram vectors] -> Dropout
               -> (bi)RNN/GRU/LSTM -> pooling over valid steps -> Dropout -> Linear -> logits (N, C)

With subwords (`subword_buckets` > 0), each position's input is its word's embedding plus the mean of
its character n-grams' vectors (`rnnkit.data.subwords`), so a word outside the vocabulary (embedded as
<unk>) still carries its pieces; word dropout replaces the word id only, as an unknown word would be.

Dimensions, declared once for this module:
    T  time steps    N  batch size    E  embedding size    H  hidden size    K  directions (1 or 2)
    F  pooled features, K*H          C  classes            V  vocabulary size
    U  distinct words in a batch     B  n-gram buckets

Pooling (`rnnkit.functional.pooling`: last, mean or max) reads only the valid steps of each sentence
(mask (T, N), a prefix of ones per column).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from rnnkit import cells
from rnnkit.backend import DEFAULT_DTYPE, get_array_module
from rnnkit.data.subwords import SubwordBag, SubwordHasher
from rnnkit.functional import (
    POOLINGS,
    embedding_backward_into,
    pool_backward,
    pool_forward,
    softmax,
    softmax_cross_entropy,
)
from rnnkit.layers import BagEmbedding, Dropout, Embedding, Linear, Module, make_recurrent
from rnnkit.models.cell_options import recurrent_options



# --- the model -----------------------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int
    embed_dim: int = 128  # E
    hidden: int = 128  # H per direction
    cell: str = "lstm"  # any registered cell: rnnkit.cells.names()
    layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"  # last | mean | max (over valid steps)
    embed_dropout: float = 0.3  # on the embeddings
    word_dropout: float = 0.0  # training only: each word becomes <unk> with this probability
    dropout: float = 0.3  # on the pooled features, before the output layer
    layer_dropout: float = 0.0  # between stacked recurrent layers
    forget_bias: float | None = 1.0  # LSTM forget-gate bias at initialisation
    embed_init_std: float = 1.0  # N(0, std^2) embeddings (1.0 is PyTorch's default)
    subword_buckets: int = 0  # B: rows of the character n-gram table; 0: no subwords
    subword_min: int = 3  # shortest n-gram (with the "<" ">" word markers)
    subword_max: int = 5  # longest n-gram
    seed: int = 0
    # the cell's own options (rnnkit.cells.options(cell)) over forget_bias; empty: the defaults
    cell_options: dict = field(default_factory=dict)

    @property
    def subwords(self) -> SubwordHasher | None:
        """The n-gram hasher of this configuration, or None without subwords."""
        if not self.subword_buckets:
            return None
        return SubwordHasher(self.subword_buckets, self.subword_min, self.subword_max)

    def validate(self):
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.cell not in cells.names():
            raise ValueError(f"cell must be one of {', '.join(cells.names())}; got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        for name in ("embed_dropout", "word_dropout", "dropout", "layer_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("embed_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.subword_buckets < 0:
            raise ValueError(f"subword_buckets must be >= 0 (0: off), got {self.subword_buckets}")
        if self.subword_buckets:
            SubwordHasher(self.subword_buckets, self.subword_min, self.subword_max)  # checks the n range
        return self

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class WordDropout(Module):
    """Training only: replace each word id by `unk_id` with probability p (no gradient to pass: the
    embedding of <unk> simply receives the gradient of the replaced words). Padding ids are left alone."""

    def __init__(self, p=0.0, unk_id=1, pad_id=0, seed=0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"word dropout p must be in [0, 1), got {p}")
        self.p, self.unk_id, self.pad_id = p, unk_id, pad_id
        self.rng = np.random.default_rng(seed)

    def forward(self, idx):
        if not self.training or self.p == 0.0:
            return idx
        drop = (self.rng.random(idx.shape) < self.p) & (idx != self.pad_id)
        return np.where(drop, self.unk_id, idx)


class SentenceClassifier(Module):
    """Embedding [+ n-grams] -> dropout -> recurrent -> pooling -> dropout -> linear. Parameters:
    `emb.W`, `sub.W` (with subwords), `rnn.l{k}[_reverse].*`, `head.W`, `head.b`."""

    def __init__(self, cfg: ClassifierConfig, dtype=DEFAULT_DTYPE):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        s = cfg.seed
        self.word_drop = WordDropout(cfg.word_dropout, unk_id=1, seed=s + 5)
        self.emb = Embedding(cfg.vocab_size, cfg.embed_dim, dtype=dtype, seed=s)
        if cfg.embed_init_std != 1.0:
            self.emb.params["W"] *= cfg.embed_init_std
        self.sub = None
        if cfg.subword_buckets:
            self.sub = BagEmbedding(cfg.subword_buckets, cfg.embed_dim, std=cfg.embed_init_std,
                                    dtype=dtype, seed=s + 6)
        self.emb_drop = Dropout(cfg.embed_dropout, seed=s + 1)
        self.rnn = make_recurrent(cfg.cell, cfg.embed_dim, cfg.hidden, num_layers=cfg.layers,
                                  bidirectional=cfg.bidirectional, dropout=cfg.layer_dropout,
                                  dtype=dtype, seed=s + 2,
                                  **recurrent_options(cfg.cell, cfg.cell_options,
                                                      forget_bias=cfg.forget_bias))
        self.drop = Dropout(cfg.dropout, seed=s + 3)
        K = 2 if cfg.bidirectional else 1
        self.head = Linear(K * cfg.hidden, cfg.num_classes, dtype=dtype, seed=s + 4)
        self._pool_cache = None
        self._surf = None  # (bag.surf, U) of the last forward with subwords

    @property
    def num_directions(self):
        return 2 if self.cfg.bidirectional else 1

    def embed(self, idx, bag: SubwordBag | None = None):
        """idx: (T, N) word ids [, the batch's words as n-gram bags] -> (T, N, E), before dropout."""
        x = self.emb.forward(self.word_drop.forward(idx))  # (T, N, E)
        if self.sub is None:
            return x
        if bag is None:
            raise ValueError("this classifier reads character n-grams: pass the batch's SubwordBag")
        self._surf = (bag.surf, bag.offsets.shape[0])
        return x + self.sub.forward(bag.grams, bag.offsets)[bag.surf]  # x_tn += mean_g S[g], (U, E)

    def embed_backward(self, dx):
        """dx: (T, N, E) -> adds into `emb.W` (and `sub.W`)."""
        self.emb.backward(dx)
        if self.sub is not None:
            surf, U = self._surf
            xp = get_array_module(dx)
            dword = embedding_backward_into(xp.zeros((U, dx.shape[-1]), dtype=dx.dtype), dx, (surf, U))
            self.sub.backward(dword)  # (U, E): each distinct word's share, then its n-grams'

    def forward(self, idx, mask=None, bag: SubwordBag | None = None):
        """idx: (T, N) word ids; mask: (T, N) bool, a prefix per column (None: all valid); bag: the
        batch's words as n-gram bags (needed with subwords) -> logits (N, C)."""
        x = self.emb_drop.forward(self.embed(idx, bag))  # (T, N, E)
        out, _ = self.rnn.forward(x, mask=mask)  # (T, N, K*H); the state is carried through padding
        feat, self._pool_cache = pool_forward(out, mask, self.cfg.pooling, self.num_directions)
        return self.head.forward(self.drop.forward(feat))  # (N, C)

    def backward(self, dlogits):
        """Adds every parameter's gradient; the forward read bottom-up."""
        dfeat = self.drop.backward(self.head.backward(dlogits))
        dout = pool_backward(dfeat, self._pool_cache)
        dx, _ = self.rnn.backward(dout)
        self.embed_backward(self.emb_drop.backward(dx))

    def loss(self, idx, mask, y, bag: SubwordBag | None = None):
        """Mean cross-entropy over the batch and its backward, in one call: returns (loss, logits)."""
        logits = self.forward(idx, mask, bag)
        loss, dlogits = softmax_cross_entropy(logits, y)
        self.backward(dlogits)
        return loss, logits

    def predict_proba(self, idx, mask=None, bag: SubwordBag | None = None):
        """Class probabilities (N, C) in eval mode (no dropout); the training mode is restored."""
        was = self.training
        self.eval()
        try:
            logits = self.forward(idx, mask, bag)
        finally:
            self.train(was)
        return softmax(logits)


# --- language-model pretraining of the encoder ---------------------------------------------------


class EncoderLM(Module):
    """Pretrains a classifier's embedding and recurrent layer as a language model on text alone (Dai and
    Le 2015, "Semi-supervised sequence learning"), before it learns the labels.

        idx (T, N) -> the classifier's Embedding -> Dropout -> its recurrent layer (the same weights)
        forward direction:  out[t, :, :H] -> Dropout -> Linear -> logits of word t+1
        reverse direction:  out[t, :, H:] -> Dropout -> Linear -> logits of word t-1

    Each direction has read only the words on its own side of the word it predicts, so nothing leaks.
    That holds for one bidirectional layer; above it, each direction reads both directions of the layer
    below, which has seen the answer, so a stacked bidirectional encoder is refused. The output layers
    run only at the positions that have a word to predict (R of them, a row per position). Parameters:
    the classifier's `emb.*` and `rnn.*` (shared arrays, updated in place) plus `next.*` (and `prev.*`).
    """

    def __init__(self, classifier: SentenceClassifier, dropout=0.1):
        super().__init__()
        cfg = classifier.cfg
        if cfg.subword_buckets:
            raise ValueError("language-model pretraining does not train the character n-grams yet; "
                             "pretrain without them (--subwords 0)")
        if cfg.bidirectional and cfg.layers > 1:
            raise ValueError("language-model pretraining needs one layer when bidirectional: a second "
                             "layer's directions would see the words they predict")
        dtype = classifier.emb.params["W"].dtype
        self.H, self.K = cfg.hidden, classifier.num_directions
        self.emb, self.rnn = classifier.emb, classifier.rnn
        # one rate for the embeddings and the features: a language model needs less than a classifier
        self.emb_drop = Dropout(dropout, seed=cfg.seed + 11)
        self.next_drop = Dropout(dropout, seed=cfg.seed + 12)
        self.next = Linear(cfg.hidden, cfg.vocab_size, dtype=dtype, seed=cfg.seed + 14)
        # (head, its dropout, the steps and features it reads, the steps its words are at)
        self._sides = [(self.next, self.next_drop, np.s_[:-1, :, :self.H], np.s_[1:])]
        if self.K == 2:
            self.prev_drop = Dropout(dropout, seed=cfg.seed + 13)
            self.prev = Linear(cfg.hidden, cfg.vocab_size, dtype=dtype, seed=cfg.seed + 15)
            self._sides.append((self.prev, self.prev_drop, np.s_[1:, :, self.H:], np.s_[:-1]))

    def loss(self, idx, mask=None, backward=True):
        """Mean cross-entropy over every predicted word (both directions), and with `backward` the
        gradients added into every parameter. Returns (loss, number of predictions)."""
        T, N = idx.shape
        H = self.H
        if mask is None:
            mask = np.ones((T, N), dtype=bool)
        x = self.emb_drop.forward(self.emb.forward(idx))  # (T, N, E)
        out, _ = self.rnn.forward(x, mask=mask)  # (T, N, K*H)
        rows = np.flatnonzero(mask[1:].reshape(-1))  # positions t+1 < L: a next (and a previous) word
        R = rows.size
        if R == 0:
            return 0.0, 0
        # forward direction at t -> word t+1; reverse direction at t+1 -> word t
        logits = np.concatenate([head.forward(drop.forward(out[feat].reshape(-1, H)[rows]))
                                 for head, drop, feat, _ in self._sides])
        targets = np.concatenate([idx[words].reshape(-1)[rows] for _, _, _, words in self._sides])
        loss, dlogits = softmax_cross_entropy(logits, targets)
        count = len(self._sides) * R
        if not backward:
            return loss, count
        # backward: the forward read bottom-up
        dout = np.zeros(out.shape, dtype=out.dtype)
        for k, (head, drop, feat, _) in enumerate(self._sides):
            full = np.zeros(((T - 1) * N, H), dtype=out.dtype)
            full[rows] = drop.backward(head.backward(dlogits[k * R:(k + 1) * R]))
            dout[feat] += full.reshape(T - 1, N, H)
        dx, _ = self.rnn.backward(dout)
        self.emb.backward(self.emb_drop.backward(dx))
        return loss, count
