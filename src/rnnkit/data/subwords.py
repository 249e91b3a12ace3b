"""Character n-grams of words (fastText's subword information, Bojanowski et al. 2017).

A word is wrapped as "<word>" and cut into its character n-grams for n in [n_min, n_max] ("where", n 3:
"<wh", "whe", "her", "ere", "re>"); each n-gram is hashed (CRC-32 of its UTF-8 bytes) into one of B
buckets. A model adds the mean of the buckets' vectors to the word's own embedding, so a word never
seen in training ("warmly", "uncomplicated") still gets a vector from the pieces it shares with words
that were ("warm", "-ly", "un-", "complicated"). A word too short to have an n-gram ("" for padding)
is its own single gram "<>".

`SurfaceTable` numbers the distinct words of some texts (surface ids, 0 for padding) and keeps each
one's bucket list, computed once; `SurfaceTable.bag` turns a padded (T, N) batch of surface ids into the
distinct words of that batch as bags of buckets (`SubwordBag`), which `bag_mean_forward` reads.

Dimensions: T time steps, N batch size, U distinct words in a batch, G their n-grams in all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class SubwordHasher:
    buckets: int = 100_000  # B, rows of the n-gram table
    n_min: int = 3  # shortest n-gram, counting the "<" and ">" markers
    n_max: int = 5  # longest n-gram

    def __post_init__(self):
        if self.buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {self.buckets}")
        if not 1 <= self.n_min <= self.n_max:
            raise ValueError(f"need 1 <= n_min <= n_max, got {self.n_min}, {self.n_max}")

    def grams(self, word: str) -> list[str]:
        w = f"<{word}>"
        out = [w[i:i + n] for n in range(self.n_min, self.n_max + 1) for i in range(len(w) - n + 1)]
        return out or [w]

    def buckets_of(self, word: str) -> list[int]:
        return [zlib.crc32(g.encode("utf-8")) % self.buckets for g in self.grams(word)]


class SubwordBag(NamedTuple):
    surf: np.ndarray  # (T, N) int64, each position's row among the batch's U distinct words
    grams: np.ndarray  # (G,) int64 buckets of those U words, one word after another
    offsets: np.ndarray  # (U,) int64 where each word's buckets start in `grams`


class SurfaceTable:
    """Distinct words -> surface ids (0 = padding, the empty word) and their n-gram buckets."""

    def __init__(self, hasher: SubwordHasher):
        self.hasher = hasher
        self._ids: dict[str, int] = {}
        self._buckets: list[np.ndarray] = []
        self.ids([""])

    def __len__(self):
        return len(self._buckets)

    def ids(self, tokens) -> list[int]:
        out = []
        for tok in tokens:
            k = self._ids.get(tok)
            if k is None:
                k = self._ids[tok] = len(self._buckets)
                self._buckets.append(np.asarray(self.hasher.buckets_of(tok), dtype=np.int64))
            out.append(k)
        return out

    def bag(self, surface_idx) -> SubwordBag:
        """surface_idx: (T, N) surface ids (padding 0) -> the batch's distinct words as bags."""
        uniq, surf = np.unique(surface_idx, return_inverse=True)
        parts = [self._buckets[k] for k in uniq.tolist()]
        sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return SubwordBag(surf.reshape(surface_idx.shape).astype(np.int64), np.concatenate(parts),
                          offsets)
