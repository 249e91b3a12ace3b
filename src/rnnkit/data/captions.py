"""Captions: the TSV reader, the official splits, caption tokens and the vocabulary.

File format (Flickr8k as shipped in `flickr8k_mini/captions.tsv`): a header naming the columns `image`
and `caption` (required) and `split`, `caption_id` (optional), in any order, then one caption per line.
Split values: train, dev, test, or extra (images in no official list, used for training).

Bad rows (wrong number of fields, an empty image or caption, an unknown split, undecodable bytes) raise
`UserError` "FILE:LINE: what was expected"; with `skip_bad_rows=True` each is skipped and recorded in
`skipped` as (line, reason) for the caller to report. Line numbers count the header as line 1.

Dimensions: T caption length in tokens (with <bos> and <eos>), M captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pathlib import Path

from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError

SPLITS = ("train", "dev", "test", "extra")
TRAIN_SPLITS = ("train", "extra")  # images in no official list are used for training


def tokenize_caption(text: str) -> list[str]:
    """Lower-case words; punctuation-only tokens dropped (Flickr8k's "." ends most captions and would
    only inflate BLEU-1). Flickr8k text is space-tokenized already, so splitting on spaces suffices."""
    return [w for w in text.lower().split() if any(ch.isalnum() for ch in w)]


@dataclass
class Caption:
    image: str
    text: str
    tokens: list
    split: str
    line: int


@dataclass
class CaptionSet:
    path: str
    captions: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (line, reason)
    notes: list = field(default_factory=list)

    def images(self, splits=None) -> list[str]:
        """Unique image names (first-seen order) of the captions in `splits` (None: all)."""
        return list(dict.fromkeys(c.image for c in self.captions if splits is None or c.split in splits))

    def by_image(self, splits=None) -> dict:
        """image -> list of token lists."""
        out = {}
        for c in self.captions:
            if splits is None or c.split in splits:
                out.setdefault(c.image, []).append(c.tokens)
        return out

    def drop_images(self, names):
        """Remove every caption of the images in `names` (e.g. unreadable pictures); returns how many."""
        names = set(names)
        before = len(self.captions)
        self.captions = [c for c in self.captions if c.image not in names]
        return before - len(self.captions)

    def skipped_summary(self) -> str | None:
        if not self.skipped:
            return None
        line, reason = self.skipped[0]
        n = len(self.skipped)
        return f"{self.path}: skipped {n} bad row{'s' if n != 1 else ''} (first: line {line}: {reason})"


def _read_lines(path, encoding):
    """[(line number, text or None, error or None)], notes; a UTF-8 BOM and CRLF endings accepted."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p}: no such captions file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a captions TSV file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None
    notes = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        notes.append(f"{p}: line 1: UTF-8 byte order mark removed")
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    rows = []
    for i, b in enumerate(raw, start=1):
        try:
            rows.append((i, b.rstrip(b"\r").decode(encoding), None))
        except UnicodeDecodeError as e:
            rows.append((i, None, f"not valid {encoding} (byte {e.start + 1} of the line)"))
        except LookupError:
            raise UserError(f"--encoding: unknown encoding {encoding!r}") from None
    return rows, notes, str(p)


def read_captions(path, skip_bad_rows: bool = False, encoding: str = "utf-8") -> CaptionSet:
    """Read a captions TSV (see the module docstring)."""
    rows, notes, name = _read_lines(path, encoding)
    out = CaptionSet(name, notes=notes)
    if not rows or rows[0][1] is None:
        raise UserError(f"{name}: line 1: expected a header with columns image and caption")
    header = rows[0][1].split("\t")
    cols = {h.strip().lower(): i for i, h in enumerate(header)}
    if "image" not in cols or "caption" not in cols:
        raise UserError(f"{name}: line 1: header {header!r} lacks the columns 'image' and 'caption' "
                        f"(tab-separated)")
    ncol = len(header)

    def bad(line, reason):
        if not skip_bad_rows:
            raise UserError(f"{name}:{line}: {reason} (use --skip-bad-rows to skip such rows)")
        out.skipped.append((line, reason))

    for line, text, err in rows[1:]:
        if err:
            bad(line, err)
            continue
        if not text.strip():
            bad(line, "blank line; expected a caption row")
            continue
        parts = text.split("\t")
        if len(parts) != ncol:
            bad(line, f"{len(parts)} tab-separated fields, expected {ncol} like the header")
            continue
        image, caption = parts[cols["image"]].strip(), parts[cols["caption"]].strip()
        split = parts[cols["split"]].strip().lower() if "split" in cols else "train"
        if not image:
            bad(line, "empty image name")
            continue
        if split not in SPLITS:
            bad(line, f"split {split!r}, expected one of {', '.join(SPLITS)}")
            continue
        tokens = tokenize_caption(caption)
        if not tokens:
            bad(line, "empty caption (no words)")
            continue
        out.captions.append(Caption(image, caption, tokens, split, line))
    if not out.captions:
        raise UserError(f"{name}: no usable caption rows")
    return out


def build_caption_vocab(token_lists, min_freq: int = 2, max_size: int | None = None) -> Vocab:
    """Vocabulary with <pad>, <unk>, <bos>, <eos>; words seen at least `min_freq` times."""
    return Vocab.build(token_lists, min_freq=min_freq, max_size=max_size, bos_eos=True)


def encode_captions(token_lists, vocab: Vocab, max_len: int) -> np.ndarray:
    """Token lists -> ids (T, M) with T = max_len + 2: <bos> w1 .. wk <eos> <pad>...; a caption longer
    than `max_len` words is cut to its first `max_len` (and still ends with <eos>)."""
    M = len(token_lists)
    ids = np.full((max_len + 2, M), vocab.pad_id, dtype=np.int64)
    for m, toks in enumerate(token_lists):
        seq = vocab.encode(toks[:max_len], add_bos=True, add_eos=True)
        ids[:len(seq), m] = seq
    return ids


def decode_ids(ids, vocab: Vocab) -> list[str]:
    """One generated id sequence -> words, stopping at the first <eos>; <pad>/<bos> dropped."""
    words = []
    for i in ids:
        i = int(i)
        if i == vocab.eos_id:
            break
        if i in (vocab.pad_id, vocab.bos_id):
            continue
        words.append(vocab.itos[i])
    return words
