"""Text readers, the character vocabulary, the split and the embedded corpus; random input to the readers
gives text or the documented one-line UserError, nothing else."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data.text import CharVocab, decode_bytes, read_text, split_ids, stdlib_corpus
from rnnkit.errors import UserError

FAST = settings(max_examples=50, deadline=None)


def _write(data: bytes):
    fd, path = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@FAST
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "latin-1", "ascii", "utf-16"]))
def test_random_bytes_give_text_or_one_line_error(data, encoding):
    path = _write(data)
    try:
        text = read_text(path, encoding)
    except UserError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith(path)
        assert any(w in msg for w in ("empty", "binary", "not valid"))
    else:
        assert isinstance(text, str) and text and "\x00" not in text
    finally:
        os.unlink(path)


@FAST
@given(st.text(max_size=200))
def test_random_text_round_trips(text):
    path = _write(text.encode("utf-8"))
    try:
        got = read_text(path)
    except UserError as e:
        assert "\n" not in str(e)
        assert text in ("", "\ufeff") or "\x00" in text
    else:
        assert got == (text[1:] if text.startswith("\ufeff") else text)
        vocab = CharVocab.from_text(got)
        assert vocab.decode(vocab.encode(got)) == got
        assert CharVocab.from_json(vocab.to_json()).chars == vocab.chars
    finally:
        os.unlink(path)


@FAST
@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=20))
def test_unknown_characters_are_a_user_error(corpus, query):
    vocab = CharVocab.from_text(corpus)
    if set(query) <= set(corpus):
        assert vocab.decode(vocab.encode(query)) == query
    else:
        with pytest.raises(UserError, match=r"--prime: character .* is not in the model's vocabulary"):
            vocab.encode(query, "--prime")


def test_messages(tmp_path):
    with pytest.raises(UserError, match=r"nope.txt: no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(UserError, match=r"is a directory"):
        read_text(tmp_path)
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(UserError, match=r"e.txt: the file is empty"):
        read_text(tmp_path / "e.txt")
    (tmp_path / "b.bin").write_bytes(b"abc\n\x00\x01\x02")
    with pytest.raises(UserError, match=r"binary file \(NUL byte at line 2"):
        read_text(tmp_path / "b.bin")
    (tmp_path / "l.txt").write_bytes("one\ntwo\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"l.txt: not valid utf-8 at line 3 .*--encoding"):
        read_text(tmp_path / "l.txt")
    assert read_text(tmp_path / "l.txt", "latin-1").endswith("caf\u00e9\n")
    with pytest.raises(UserError, match=r"--encoding: unknown text encoding 'klingon'"):
        read_text(tmp_path / "l.txt", "klingon")
    assert decode_bytes(b"\xef\xbb\xbfhi", "x") == "hi"  # a BOM is dropped


def test_byte_vocabulary_takes_anything():
    v = CharVocab.from_text("", "byte")
    ids = v.encode(bytes(range(256)))
    assert len(v) == 256 and ids.tolist() == list(range(256))
    assert v.encode("é").tolist() == [0xC3, 0xA9]
    dec = v.decoder()
    assert dec(0xC3) + dec(0xA9) == "é"  # streamed bytes are decoded once a character is complete
    assert CharVocab.from_json(v.to_json()).mode == "byte"
    for bad in (None, {}, {"format": "rnnkit-charvocab", "mode": "char", "chars": "aa"}):
        with pytest.raises(UserError):
            CharVocab.from_json(bad)


def test_split_is_the_last_fraction():
    ids = np.arange(100)
    tr, va = split_ids(ids)
    assert tr.tolist() == list(range(90)) and va.tolist() == list(range(90, 100))
    assert len(split_ids(ids, 0.0)[1]) == 0
    with pytest.raises(UserError, match="--val-frac"):
        split_ids(ids, 1.0)


def test_stdlib_corpus_is_deterministic_python():
    a, info = stdlib_corpus(max_chars=50_000)
    b, _ = stdlib_corpus(max_chars=50_000)
    assert a == b and len(a) == 50_000 and info["files"] > 1
    assert "def " in a and "import " in a

