"""Vocab: reserved ids, min_freq / max_size, deterministic order, JSON round trip, bad files; character
n-gram buckets of words (subwords)."""

import json

import numpy as np
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


def test_subword_grams_and_batch_bags():
    """fastText's n-grams of '<word>', hashed into buckets; padding is surface id 0; a batch's bags
    hold each distinct word once."""
    from rnnkit.data.subwords import SubwordHasher, SurfaceTable

    h = SubwordHasher(buckets=1000, n_min=3, n_max=4)
    assert h.grams("cat") == ["<ca", "cat", "at>", "<cat", "cat>"]
    assert h.grams("") == ["<>"]  # too short for any n-gram: the word is its own
    assert all(0 <= b < 1000 for b in h.buckets_of("naïve"))
    with pytest.raises(ValueError):
        SubwordHasher(n_min=4, n_max=3)
    t = SurfaceTable(h)
    assert t.ids(["cat", "dog", "cat"]) == [1, 2, 1] and len(t) == 3
    bag = t.bag(np.array([[1, 2], [1, 0]]))
    assert bag.surf.shape == (2, 2) and bag.surf[0, 0] == bag.surf[1, 0]
    assert len(bag.offsets) == 3  # padding, cat, dog
    starts = list(bag.offsets) + [len(bag.grams)]
    k = bag.surf[0, 0]
    assert list(bag.grams[starts[k]:starts[k + 1]]) == h.buckets_of("cat")
