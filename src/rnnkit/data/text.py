"""Plain-text corpora for the character-level language model.

`read_text` reads a file and refuses, with one line naming the file, what is not usable text: a missing
file, a directory, an empty file, a binary file (NUL bytes), bytes that are not valid in the given
encoding (with the line number and the hint to pass `--encoding` or `--bytes`). `CharVocab` maps
characters (or raw bytes) to ids; `split_ids` is the deterministic train / validation split (the last 10%
by default); `stdlib_corpus` is the embedded default corpus: a deterministic selection of the running
Python's own standard-library sources, so the language model trains with nothing downloaded.
"""

from __future__ import annotations

import codecs
import hashlib
import sys
import sysconfig
from pathlib import Path

import numpy as np

from rnnkit.errors import UserError

FORMAT = "rnnkit-charvocab"


def check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError, ValueError):
        raise UserError(f"--encoding: unknown text encoding {encoding!r}") from None


def decode_bytes(data: bytes, name: str, encoding: str = "utf-8") -> str:
    """Bytes of a text file -> str, or a UserError naming `name` and what is wrong."""
    check_encoding(encoding)
    if not data:
        raise UserError(f"{name}: the file is empty")
    nul = data.find(b"\x00")
    if nul >= 0 and not encoding.lower().replace("-", "").startswith("utf16") \
            and not encoding.lower().replace("-", "").startswith("utf32"):
        line = data.count(b"\n", 0, nul) + 1
        raise UserError(f"{name}: looks like a binary file (NUL byte at line {line}, byte {nul}); "
                        f"expected a text file")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{name}: not valid {encoding} at line {line} (byte {e.start}); give the file's "
                        f"encoding with --encoding (e.g. latin-1) or train on raw bytes with --bytes") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the text
    if not text:
        raise UserError(f"{name}: the file is empty")
    if "\x00" in text:
        raise UserError(f"{name}: looks like a binary file (NUL character); expected a text file")
    return text


def read_bytes(path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None


def read_text(path, encoding: str = "utf-8") -> str:
    """The text of `path`; anything that is not non-empty text in `encoding` is a one-line UserError."""
    check_encoding(encoding)
    return decode_bytes(read_bytes(path), str(path), encoding)


# --- vocabulary ----------------------------------------------------------------------------------


class CharVocab:
    """Characters <-> ids. mode "char": the sorted distinct characters of the corpus; mode "byte": the
    256 byte values (the text is its UTF-8 / raw bytes, so any file works and nothing is unknown)."""

    def __init__(self, chars=None, mode: str = "char"):
        if mode not in ("char", "byte"):
            raise ValueError(f"mode must be 'char' or 'byte', got {mode!r}")
        self.mode = mode
        if mode == "byte":
            self.chars = None
            self.size = 256
            return
        chars = list(chars or [])
        if len(set(chars)) != len(chars) or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = chars
        self.size = len(chars)
        self.index = {c: i for i, c in enumerate(chars)}
        self._table = None

    @classmethod
    def from_text(cls, text: str, mode: str = "char") -> "CharVocab":
        return cls(None, "byte") if mode == "byte" else cls(sorted(set(text)), "char")

    def __len__(self):
        return self.size

    def __contains__(self, ch):
        return self.mode == "byte" or ch in self.index

    def encode(self, text, what: str = "text") -> np.ndarray:
        """str (or bytes, in byte mode) -> int32 ids; a character outside the vocabulary is a UserError
        naming `what` and the first such character's position."""
        if self.mode == "byte":
            data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            return np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        if self._table is None and self.size and max(map(ord, self.chars)) < 65536:
            table = np.full(65536, -1, dtype=np.int32)
            table[[ord(c) for c in self.chars]] = np.arange(self.size, dtype=np.int32)
            self._table = table
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if self._table is not None and (codes.size == 0 or codes.max() < 65536):
            ids = self._table[codes]
        else:
            ids = np.array([self.index.get(c, -1) for c in text], dtype=np.int32)
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            i = int(bad[0])
            ch = text[i]
            line = text.count("\n", 0, i) + 1
            raise UserError(f"{what}: character {ch!r} (line {line}, position {i}) is not in the model's "
                            f"vocabulary of {self.size} characters")
        return ids

    def decode(self, ids) -> str:
        if self.mode == "byte":
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return "".join(self.chars[int(i)] for i in ids)

    def decoder(self):
        """A function id -> text for streaming output (bytes are decoded incrementally, so a multi-byte
        character appears once it is complete)."""
        if self.mode == "byte":
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            return lambda i: dec.decode(bytes([int(i)]))
        chars = self.chars
        return lambda i: chars[int(i)]

    def to_json(self) -> dict:
        return {"format": FORMAT, "mode": self.mode, "chars": None if self.chars is None else "".join(self.chars)}

    @classmethod
    def from_json(cls, obj, where: str = "vocabulary") -> "CharVocab":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("mode") not in ("char", "byte"):
            raise UserError(f"{where}: not an rnnkit character vocabulary")
        if obj["mode"] == "byte":
            return cls(None, "byte")
        chars = obj.get("chars")
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise UserError(f"{where}: vocabulary characters missing or repeated")
        return cls(list(chars), "char")


def split_ids(ids, val_frac: float = 0.1):
    """The first (1 - val_frac) of the stream for training, the last val_frac for validation."""
    if not 0.0 <= val_frac < 1.0:
        raise UserError(f"--val-frac: expected a number in [0, 1), got {val_frac}")
    n_val = int(round(len(ids) * val_frac))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


# --- the embedded default corpus -------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "encodings",
              "pydoc_data"}


def stdlib_files(root=None):
    """The standard library's .py files outside tests and generated tables, sorted by relative path."""
    root = Path(root or sysconfig.get_path("stdlib"))
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if set(rel.parts[:-1]) & _SKIP_DIRS:
            continue
        files.append((rel.as_posix(), p))
    files.sort()
    return files


def stdlib_corpus(max_chars: int = 3_000_000, root=None):
    """A few MB of Python source from the running interpreter's standard library; deterministic for a
    given Python: the sorted files are taken at an even stride across the library (so the corpus spans
    it rather than the first letters of the alphabet), then concatenated up to `max_chars`.

    Returns (text, info) where info records the Python version, the file count and the text's hash.
    """
    files = stdlib_files(root)
    if not files:
        raise UserError(f"no standard-library sources found under {root or sysconfig.get_path('stdlib')}; "
                        f"give a text file with --data")
    total = sum(p.stat().st_size for _, p in files)
    stride = max(1, round(total / max_chars))
    parts, n, used = [], 0, 0
    for rel, p in files[::stride] + [f for i, f in enumerate(files) if i % stride]:
        if n >= max_chars:
            break
        try:
            t = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\x00" in t or len(t) > 300_000:
            continue
        t = t.replace("\r\n", "\n")
        parts.append(t if t.endswith("\n") else t + "\n")
        n += len(parts[-1])
        used += 1
    text = "".join(parts)[:max_chars]
    info = {"source": "python-stdlib", "python": sys.version.split()[0], "files": used,
            "chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return text, info


def text_sha256(text) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).hexdigest()
