"""Parallel text for translation: a TSV reader (source<TAB>target, extra columns ignored), a Unicode-aware
word tokenizer, a length filter, a vocabulary per side and a deterministic split by distinct source
sentence (every translation of a test source is a reference of that one test item and none is trained on).

Tokenizer (`tokenize`): Unicode NFC; curly / modifier apostrophes -> "'"; non-breaking and other unusual
spaces -> " "; lowercase; words are runs of letters/digits (accents included) joined by inner hyphens or
apostrophes ("aujourd'hui", "don't", "peut-être"), every other non-space character is a token of its own;
a French elided article or pronoun is split after its apostrophe ("l'alcool" -> "l'" "alcool",
"qu'il" -> "qu'" "il"). A sentence's length is its number of words (punctuation not counted).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError

_APOSTROPHES = dict.fromkeys(map(ord, "\u2019\u2018\u02bc\u02bb\u0060\u00b4\u2032"), "'")
_SPACES = re.compile(r"[\u00a0\u2000-\u200b\u202f\u205f\u3000\t]+")
_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")
# Elided French words: split after the apostrophe ("l'homme" -> "l'" "homme"); other apostrophes stay.
_ELISIONS = {"c", "d", "j", "l", "m", "n", "s", "t", "qu", "jusqu", "lorsqu", "puisqu", "quoiqu", "presqu"}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    return _SPACES.sub(" ", text).strip().lower()


def _split_elision(tok: str, out: list):
    while "'" in tok:
        head, rest = tok.split("'", 1)
        if head in _ELISIONS and rest:
            out.append(head + "'")
            tok = rest
        else:
            break
    out.append(tok)


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens (see the module docstring)."""
    out: list[str] = []
    for tok in _TOKEN.findall(normalize(text)):
        _split_elision(tok, out)
    return out


def tokenize_chars(text: str) -> list[str]:
    """Character tokens (the date task): lowercased, spaces normalised and kept as tokens."""
    return list(normalize(text))


TOKENIZERS = {"word": tokenize, "char": tokenize_chars}


def detokenize(tokens: list[str], kind: str = "word") -> str:
    return "".join(tokens) if kind == "char" else " ".join(tokens)


def num_words(tokens: list[str]) -> int:
    return sum(1 for t in tokens if any(ch.isalnum() for ch in t))


@dataclass
class ReadReport:
    """What `read_parallel` kept and skipped, by reason."""

    kept: int = 0
    missing_side: int = 0  # fewer than two columns
    empty_side: int = 0  # a side with no tokens
    too_long: int = 0  # a side longer than max_words
    first_bad: dict = field(default_factory=dict)  # reason -> first line number

    @property
    def skipped(self):
        return self.missing_side + self.empty_side + self.too_long

    def summary(self, path) -> str:
        parts = [f"{k.replace('_', ' ')} {getattr(self, k)} (first at line {self.first_bad[k]})"
                 for k in ("missing_side", "empty_side", "too_long") if getattr(self, k)]
        return f"{path}: kept {self.kept} pairs, skipped {self.skipped}" + (
            ": " + ", ".join(parts) if parts else "")


def read_parallel(path, reverse=False, max_words=None, tokenizer="word", encoding="utf-8"):
    """Read source<TAB>target pairs (extra columns ignored; --reverse swaps the first two).

    Returns (pairs, report): pairs is a list of (src_tokens, tgt_tokens). Rows with a missing side, an
    empty side or a side over `max_words` words are skipped and counted in the report.
    """
    path = Path(path)
    tok = TOKENIZERS[tokenizer]
    try:
        f = open(path, encoding=encoding, newline="")
    except FileNotFoundError:
        raise UserError(f"--data {path}: no such file") from None
    except OSError as e:
        raise UserError(f"--data {path}: cannot read ({e.__class__.__name__})") from None
    pairs, rep = [], ReadReport()

    def skip(reason, lineno):
        setattr(rep, reason, getattr(rep, reason) + 1)
        rep.first_bad.setdefault(reason, lineno)

    lineno = 0
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue  # blank lines are not rows
                cols = line.split("\t")
                if len(cols) < 2:
                    skip("missing_side", lineno)
                    continue
                a, b = (cols[1], cols[0]) if reverse else (cols[0], cols[1])
                s, t = tok(a), tok(b)
                if not s or not t:
                    skip("empty_side", lineno)
                    continue
                if max_words is not None and max(num_words(s), num_words(t)) > max_words:
                    skip("too_long", lineno)
                    continue
                pairs.append((s, t))
        except UnicodeDecodeError:
            raise UserError(f"--data {path}: line {lineno + 1}: not valid {encoding} text "
                            f"(use --encoding)") from None
    rep.kept = len(pairs)
    if not pairs:
        raise UserError(f"--data {path}: no usable source<TAB>target pairs ({rep.summary(path)})")
    return pairs, rep


@dataclass
class Split:
    """Train and dev pairs; test items are (source tokens, [reference token lists])."""

    train: list
    dev: list
    test: list  # [(src, [ref, ...])]
    dev_refs: list  # dev grouped like test: [(src, [ref, ...])]


def split_by_source(pairs, dev_frac=0.05, test_frac=0.05, seed=0, max_test=None, max_dev=None) -> Split:
    """Deterministic shuffled split by distinct source sentence: every pair of one source goes to the
    same part, so a test sentence's translations are all references and none is seen in training."""
    groups: dict[tuple, list] = {}
    for s, t in pairs:
        groups.setdefault(tuple(s), []).append(t)
    keys = sorted(groups)  # the file's order does not matter (fra.txt is sorted by length)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    n = len(keys)
    n_test = int(round(n * test_frac))
    n_dev = int(round(n * dev_frac))
    if max_test is not None:
        n_test = min(n_test, max_test)
    if max_dev is not None:
        n_dev = min(n_dev, max_dev)
    if n - n_test - n_dev < 1:
        raise UserError(f"only {n} distinct source sentences: too few to split into train/dev/test")
    test_k = [keys[i] for i in order[:n_test]]
    dev_k = [keys[i] for i in order[n_test:n_test + n_dev]]
    train_k = [keys[i] for i in order[n_test + n_dev:]]
    train = [(list(k), t) for k in train_k for t in groups[k]]
    dev = [(list(k), t) for k in dev_k for t in groups[k]]
    return Split(train, dev, [(list(k), groups[k]) for k in test_k], [(list(k), groups[k]) for k in dev_k])


def build_vocabs(train_pairs, min_freq=1, max_size=None, tgt_min_freq=None):
    """(source, target) vocabularies of the words seen at least `min_freq` times in training
    (`tgt_min_freq` for the target side when given)."""
    tgt_min_freq = min_freq if tgt_min_freq is None else tgt_min_freq
    src = Vocab.build((s for s, _ in train_pairs), min_freq=min_freq, max_size=max_size, bos_eos=True)
    tgt = Vocab.build((t for _, t in train_pairs), min_freq=tgt_min_freq, max_size=max_size,
                      bos_eos=True)
    return src, tgt


def pad_batch(seqs, dtype=np.int64):
    """Lists of ids -> (T, N) array padded with 0 and the (T, N) bool mask."""
    N = len(seqs)
    T = max(1, max(len(s) for s in seqs))
    out = np.zeros((T, N), dtype=dtype)
    for n, s in enumerate(seqs):
        out[:len(s), n] = s
    lengths = np.array([len(s) for s in seqs])
    return out, np.arange(T)[:, None] < lengths[None, :]


def encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab):
    """Token pairs -> (src ids, tgt ids with <eos>) lists."""
    return [(src_vocab.encode(s), tgt_vocab.encode(t, add_eos=True)) for s, t in pairs]


def collate(items, bos):
    """(src ids, tgt ids + <eos>) items -> a batch dict of time-major arrays for `Seq2Seq`."""
    src, src_mask = pad_batch([s for s, _ in items])
    tgt, tgt_mask = pad_batch([t for _, t in items])
    tgt_in = np.concatenate([np.full((1, tgt.shape[1]), bos, dtype=tgt.dtype), tgt[:-1]], axis=0)
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt, "tgt_mask": tgt_mask}


def warn(msg):
    print(f"rnnkit: {msg}", file=sys.stderr)
