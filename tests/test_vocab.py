"""Vocab: reserved ids, min_freq / max_size, deterministic order, JSON round trip, bad files."""

import json

import pytest

from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError

SENTS = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "cat", "ran"], ["a", "bird"]]


def test_reserved_ids_and_unknown():
    v = Vocab.build(SENTS)
    assert v.itos[:2] == ["<pad>", "<unk>"] and v.pad_id == 0 and v.unk_id == 1
    assert v.bos_id is None and v.eos_id is None
    assert v.encode(["the", "zebra"]) == [v.stoi["the"], 1]
    assert v.itos[2] == "the"  # most frequent first
    with pytest.raises(ValueError):
        v.encode(["the"], add_bos=True)


def test_bos_eos():
    v = Vocab.build(SENTS, bos_eos=True)
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    ids = v.encode(["cat"], add_bos=True, add_eos=True)
    assert ids[0] == v.bos_id == 2 and ids[-1] == v.eos_id == 3
    assert v.decode(ids, strip_specials=True) == ["cat"]
    assert v.decode(ids) == ["<bos>", "cat", "<eos>"]


def test_min_freq_and_max_size_are_deterministic():
    v = Vocab.build(SENTS, min_freq=2)
    assert v.itos == ["<pad>", "<unk>", "the", "cat", "sat"]  # ties broken alphabetically
    v = Vocab.build(SENTS, max_size=4)
    assert len(v) == 4 and v.itos[2:] == ["the", "cat"]
    # the same counts in another order give the same table
    assert Vocab.build(list(reversed(SENTS))) == Vocab.build(SENTS)
    with pytest.raises(ValueError):
        Vocab.build(SENTS, max_size=1)
    with pytest.raises(ValueError):
        Vocab.build(SENTS, min_freq=0)


def test_literal_special_in_corpus_is_not_duplicated():
    v = Vocab.build([["<unk>", "x", "<pad>"]])
    assert v.itos == ["<pad>", "<unk>", "x"]


def test_json_round_trip(tmp_path):
    v = Vocab.build(SENTS + [["café", "naïve"]], bos_eos=True)
    assert Vocab.from_json(v.to_json()) == v
    path = tmp_path / "vocab.json"
    v.save(path)
    w = Vocab.load(path)
    assert w == v and w.stoi["café"] == v.stoi["café"] and w.bos_eos


def test_bad_vocab_files(tmp_path):
    p = tmp_path / "v.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="v.json: malformed JSON at line 1"):
        Vocab.load(p)
    p.write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(UserError, match="not an rnnkit vocabulary"):
        Vocab.load(p)
    p.write_text(json.dumps({"format": "rnnkit-vocab", "tokens": ["a", "a"]}))
    with pytest.raises(UserError, match="duplicate token"):
        Vocab.load(p)
    with pytest.raises(UserError, match="no such vocabulary file"):
        Vocab.load(tmp_path / "missing.json")
