"""`Vocab`: a token <-> id table with reserved entries, built from counted tokens.

Ids are dense, 0..len-1, in this order: `<pad>` (always 0, so zero-filled index arrays are padding),
`<unk>` (always 1), then `<bos>` and `<eos>` when asked for, then the kept tokens by falling frequency
(ties broken alphabetically, so the same corpus always gives the same ids). It saves to and loads from
plain JSON, never pickle.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from rnnkit.errors import UserError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
FORMAT = "rnnkit-vocab"


class Vocab:
    """Token table. `stoi` maps token -> id, `itos` id -> token; unknown tokens map to `<unk>`."""

    def __init__(self, tokens: Iterable[str] = (), bos_eos: bool = False):
        """`tokens`: the ordinary tokens, in id order (the reserved ones are added in front)."""
        specials = [PAD, UNK] + ([BOS, EOS] if bos_eos else [])
        self.bos_eos = bos_eos
        self.itos: list[str] = list(specials)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(specials)}
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"vocabulary tokens must be strings, got {type(t).__name__}")
            if t in self.stoi:
                if t in specials:
                    continue  # a corpus may contain the literal text "<unk>"; it is the reserved entry
                raise ValueError(f"duplicate token {t!r} in the vocabulary")
            self.stoi[t] = len(self.itos)
            self.itos.append(t)

    # --- building -------------------------------------------------------------------------------

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_freq: int = 1, max_size: int | None = None,
              bos_eos: bool = False) -> "Vocab":
        """Count tokens over `token_lists` (e.g. one list per sentence) and keep the frequent ones.

        min_freq: keep tokens seen at least this many times. max_size: the largest total size,
        reserved entries included (None: no limit); the most frequent tokens are kept.
        """
        counts = Counter()
        for toks in token_lists:
            counts.update(toks)
        return cls.from_counts(counts, min_freq=min_freq, max_size=max_size, bos_eos=bos_eos)

    @classmethod
    def from_counts(cls, counts: Counter | dict, min_freq: int = 1, max_size: int | None = None,
                    bos_eos: bool = False) -> "Vocab":
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        n_special = 4 if bos_eos else 2
        if max_size is not None and max_size < n_special:
            raise ValueError(f"max_size must be at least {n_special} (the reserved entries), got {max_size}")
        specials = {PAD, UNK, BOS, EOS}
        kept = [(t, c) for t, c in counts.items() if c >= min_freq and t not in specials]
        kept.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            kept = kept[: max_size - n_special]
        return cls([t for t, _ in kept], bos_eos=bos_eos)

    # --- lookup ---------------------------------------------------------------------------------

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.itos == other.itos and self.bos_eos == other.bos_eos

    def __repr__(self):
        return f"Vocab(size={len(self)}, bos_eos={self.bos_eos})"

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int | None:
        return self.stoi[BOS] if self.bos_eos else None

    @property
    def eos_id(self) -> int | None:
        return self.stoi[EOS] if self.bos_eos else None

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token list -> id list; unknown tokens become `<unk>`."""
        if (add_bos or add_eos) and not self.bos_eos:
            raise ValueError("this vocabulary has no <bos>/<eos> entries (build it with bos_eos=True)")
        unk = self.unk_id
        ids = [self.stoi.get(t, unk) for t in tokens]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], strip_specials: bool = False) -> list[str]:
        """Id list -> token list. strip_specials drops `<pad>`, `<bos>`, `<eos>` (never `<unk>`)."""
        drop = {PAD, BOS, EOS} if strip_specials else set()
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary [0, {len(self.itos)})")
            t = self.itos[i]
            if t not in drop:
                out.append(t)
        return out

    def unknown_rate(self, token_lists: Iterable[Iterable[str]]) -> float:
        """Fraction of tokens that would map to `<unk>`."""
        n = unk = 0
        for toks in token_lists:
            for t in toks:
                n += 1
                unk += t not in self.stoi
        return unk / n if n else 0.0

    # --- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        n_special = 4 if self.bos_eos else 2
        return {"format": FORMAT, "version": 1, "bos_eos": self.bos_eos, "tokens": self.itos[n_special:]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "vocabulary") -> "Vocab":
        if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("tokens"), list):
            raise UserError(f"{source}: not an rnnkit vocabulary (format field missing or wrong)")
        try:
            return cls(d["tokens"], bos_eos=bool(d.get("bos_eos", False)))
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: invalid vocabulary ({e})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary") -> "Vocab":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: malformed JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(d, source)

    def save(self, path):
        from rnnkit.train.checkpoint import write_bytes_atomic

        write_bytes_atomic(path, (self.to_json() + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path) -> "Vocab":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: no such vocabulary file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read vocabulary ({e.__class__.__name__})") from None
        return cls.from_json(text, str(path))
