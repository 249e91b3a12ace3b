"""Parallel TSV reading, the tokenizer, the split by distinct source sentence, and batching."""

import numpy as np
import pytest

from rnnkit.data.parallel import (
    build_vocabs,
    collate,
    encode_pairs,
    num_words,
    read_parallel,
    split_by_source,
    tokenize,
    tokenize_chars,
)
from rnnkit.errors import UserError


def test_tokenizer_french_and_english():
    assert tokenize("À quel point commençons-nous à nous faire du souci ?") == \
        ["à", "quel", "point", "commençons-nous", "à", "nous", "faire", "du", "souci", "?"]
    # curly apostrophe and non-breaking spaces (U+00A0, U+202F) as in fra.txt; elisions split
    assert tokenize("Je n\u2019ai pas l'alcool\u00a0! Qu\u2019il\u202f?") == \
        ["je", "n'", "ai", "pas", "l'", "alcool", "!", "qu'", "il", "?"]
    assert tokenize("I don't know, it's 10:30.") == ["i", "don't", "know", ",", "it's", "10", ":", "30", "."]
    assert tokenize("aujourd'hui Jusqu'à") == ["aujourd'hui", "jusqu'", "à"]
    # NFC: a decomposed é is the same token as the composed one
    assert tokenize("e\u0301te\u0301") == tokenize("été") == ["été"]
    assert tokenize("   \u00a0 ") == []
    assert num_words(tokenize("Va, vite !")) == 2
    assert tokenize_chars("Nov\u00a027") == list("nov 27")


def _write(tmp_path, text, name="p.tsv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_parallel_skips_bad_rows_with_counts(tmp_path):
    text = ("Go.\tVa !\tCC-BY attribution\n"  # extra column ignored
            "no tab here\n"  # missing side
            "\tVide.\n"  # empty source
            "Hello.\t  \n"  # empty target
            "\n"  # blank line: not a row
            "one two three four five\tun deux\n"  # too long (5 words > 4)
            "Run!\tCours !\n")
    pairs, rep = read_parallel(_write(tmp_path, text), max_words=4)
    assert pairs == [(["go", "."], ["va", "!"]), (["run", "!"], ["cours", "!"])]
    assert (rep.kept, rep.missing_side, rep.empty_side, rep.too_long) == (2, 1, 2, 1)
    assert rep.first_bad == {"missing_side": 2, "empty_side": 3, "too_long": 6}
    assert "skipped 4" in rep.summary("p.tsv")
    rev, _ = read_parallel(_write(tmp_path, text), reverse=True, max_words=4)
    assert rev[0] == (["va", "!"], ["go", "."])


def test_read_parallel_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_parallel(tmp_path / "missing.tsv")
    with pytest.raises(UserError, match="no usable"):
        read_parallel(_write(tmp_path, "just one column\n"))
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes("caf\xe9\tcoffee\n".encode("latin-1"))
    with pytest.raises(UserError, match="line 1: not valid utf-8"):
        read_parallel(bad)
    assert read_parallel(bad, encoding="latin-1")[0] == [(["café"], ["coffee"])]


def test_split_by_distinct_source():
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(200):
        for j in range(1 + i % 3):  # up to three translations of the same source
            pairs.append(([f"s{i}", "x"], [f"t{i}", f"v{j}"]))
    rng.shuffle(pairs)
    sp = split_by_source(pairs, dev_frac=0.1, test_frac=0.2, seed=1)
    train_src = {tuple(s) for s, _ in sp.train}
    test_src = {tuple(s) for s, _ in sp.test}
    dev_src = {tuple(s) for s, _ in sp.dev}
    assert len(test_src) == 40 and len(dev_src) == 20 and len(train_src) == 140
    assert not (train_src & test_src) and not (train_src & dev_src) and not (dev_src & test_src)
    # every translation of a test source is one of its references, none left in training
    for s, refs in sp.test:
        i = int(s[0][1:])
        assert sorted(r[1] for r in refs) == [f"v{j}" for j in range(1 + i % 3)]
    assert len(sp.train) + len(sp.dev) + sum(len(r) for _, r in sp.test) == len(pairs)
    # deterministic and independent of the file's order
    again = split_by_source(sorted(pairs), dev_frac=0.1, test_frac=0.2, seed=1)
    assert [s for s, _ in again.test] == [s for s, _ in sp.test]
    other = split_by_source(pairs, dev_frac=0.1, test_frac=0.2, seed=2)
    assert [s for s, _ in other.test] != [s for s, _ in sp.test]
    assert len(split_by_source(pairs, 0.1, 0.2, seed=1, max_test=5).test) == 5


def test_vocab_and_collate():
    pairs = [(["a", "b"], ["x"]), (["a"], ["x", "y", "y"])]
    sv, tv = build_vocabs(pairs, min_freq=1)
    assert sv.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    enc = encode_pairs(pairs + [(["zzz"], ["q"])], sv, tv)
    assert enc[2] == ([sv.unk_id], [tv.unk_id, tv.eos_id])  # unknown words become <unk>
    b = collate(enc[:2], tv.bos_id)
    assert b["src"].shape == (2, 2) and b["tgt_out"].shape == (4, 2)
    assert b["src_mask"].tolist() == [[True, True], [True, False]]
    assert b["tgt_in"][:, 1].tolist() == [tv.bos_id] + b["tgt_out"][:-1, 1].tolist()
    assert b["tgt_out"][:, 0].tolist() == [tv.stoi["x"], tv.eos_id, 0, 0]
    assert b["tgt_mask"][:, 0].tolist() == [True, True, False, False]


def test_vocab_thresholds_per_side():
    pairs = [(["a", "b"], ["x", "y"]), (["a"], ["x"]), (["c"], ["x"])]
    sv, tv = build_vocabs(pairs, min_freq=1, tgt_min_freq=2)
    assert {"a", "b", "c"} <= set(sv.itos) and "y" not in tv.stoi and "x" in tv.stoi
    sv, tv = build_vocabs(pairs, min_freq=2)  # one threshold for both sides
    assert "b" not in sv.stoi and "a" in sv.stoi and "y" not in tv.stoi


def test_real_data_reads(data_dir, tmp_path):
    path = data_dir / "eng-fra" / "fra.txt"
    if not path.exists():
        pytest.skip("eng-fra data not present")
    with open(path, encoding="utf-8") as f:  # the first and some long lines: the whole file is slow here
        lines = [line for i, line in enumerate(f) if i < 1000 or i % 100 == 0]
    sample = tmp_path / "fra_sample.txt"
    sample.write_text("".join(lines), encoding="utf-8")
    pairs, rep = read_parallel(sample, reverse=True, max_words=10)
    assert rep.kept > 1000 and rep.too_long > 0 and rep.kept + rep.skipped == len(lines)
    assert all(num_words(s) <= 10 and num_words(t) <= 10 for s, t in pairs)
    assert pairs[0] == (["va", "!"], ["go", "."])
    assert not any("\u00a0" in w or "\u202f" in w or "\u2019" in w for s, t in pairs for w in s + t)
