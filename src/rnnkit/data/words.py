"""Word tokenizer: text -> list of word and punctuation tokens.

Rules, in order (English-leaning, no external dependency):
  - optional Unicode lower-casing (`str.lower`) and NFKC normalisation (so full-width letters, ligatures
    and compatibility forms become their plain versions);
  - clitics split the way the Penn Treebank does: "don't" -> "do n't", "it's" -> "it 's", "we'll" ->
    "we 'll", so already-tokenized corpora such as SST ("it 's", "does n't") keep their tokens;
  - `` and '' (Treebank quotes) stay whole;
  - a token is a run of letters/digits (with inner hyphens, apostrophes handled above, and decimal
    numbers like 3.5 kept whole), or one punctuation character; "--" and "..." stay whole.

The `whitespace` mode only splits on whitespace, for text that is tokenized already.

Also here: `pad_batch` (id lists -> padded (T, N) array and mask); sentences of similar length are
batched by `rnnkit.train.LengthBatches`. Dimensions: T time steps, N batch size.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np


# A clitic at the end of a word: n't, 's, 're, 've, 'll, 'd, 'm (straight or curly apostrophe).
_CLITIC = re.compile(r"(?i)(\w)(n['\u2019]t|['\u2019](?:s|re|ve|ll|d|m))\b")
_TOKEN = re.compile(
    r"""
    n['\u2019]t(?!\w)              # n't (after the clitic split)
    | ['\u2019](?:s|re|ve|ll|d|m|em)(?!\w)   # 's 're 've 'll 'd 'm 'em
    | \d+(?:[.,]\d+)+              # 3.5, 1,000
    | \w+(?:-\w+)*                 # words, numbers, hyphenated compounds
    | -{2,} | \.{2,} | `` | ''     # -- ... and the Treebank's quotes `` ''
    | [^\w\s]                      # any other single symbol
    """,
    re.VERBOSE | re.IGNORECASE,
)

MODES = ("word", "whitespace")


@dataclass(frozen=True)
class Tokenizer:
    """Callable text -> tokens; its settings go into a run's config so prediction tokenizes the same."""

    lowercase: bool = True  # fold case (SST-2 is lower-cased already)
    mode: str = "word"  # "word" (rules above) or "whitespace"
    normalize: bool = True  # Unicode NFKC before anything else

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"tokenizer mode must be one of {', '.join(MODES)}; got {self.mode!r}")

    def __call__(self, text: str) -> list[str]:
        return tokenize(text, lowercase=self.lowercase, mode=self.mode, normalize=self.normalize)

    def to_dict(self) -> dict:
        return {"lowercase": self.lowercase, "mode": self.mode, "normalize": self.normalize}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls(lowercase=bool(d.get("lowercase", True)), mode=d.get("mode", "word"),
                   normalize=bool(d.get("normalize", True)))


def tokenize(text: str, lowercase: bool = True, mode: str = "word", normalize: bool = True) -> list[str]:
    """Split `text` into tokens (see the module docstring)."""
    if normalize:
        text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    if mode == "whitespace":
        return text.split()
    if mode != "word":
        raise ValueError(f"tokenizer mode must be one of {', '.join(MODES)}; got {mode!r}")
    text = _CLITIC.sub(r"\1 \2", text)
    return _TOKEN.findall(text)


# --- padded, length-bucketed batches of word ids -------------------------------------------------


def pad_batch(seqs, pad_id: int = 0, dtype=np.int64):
    """Id sequences -> idx (T, N) padded with `pad_id`, mask (T, N) bool; T is the longest length."""
    N = len(seqs)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    T = int(lengths.max()) if N else 0
    idx = np.full((T, N), pad_id, dtype=dtype)
    for n, s in enumerate(seqs):
        idx[: len(s), n] = s
    mask = np.arange(T)[:, None] < lengths[None, :]
    return idx, mask
