"""Captions TSV reading and the command line: train caption, caption, eval (BLEU, baselines, HTML), and
bad input (bad rows, missing and corrupt images) reported by name, exit status 2, or skipped and counted."""

import json

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.data.captions import (
    build_caption_vocab,
    decode_ids,
    encode_captions,
    read_captions,
    tokenize_caption,
)
from rnnkit.errors import UserError

HEADER = "image\tcaption_id\tsplit\tcaption\n"


def test_tokenize_and_encode():
    assert tokenize_caption("A dog , running ; in the T-shirt .") == ["a", "dog", "running", "in", "the",
                                                                      "t-shirt"]
    vocab = build_caption_vocab([["a", "dog"], ["a", "cat"]], min_freq=2)
    assert vocab.decode(vocab.encode(["a", "dog"])) == ["a", "<unk>"]
    ids = encode_captions([["a", "a", "a"], ["a"]], vocab, max_len=2)
    assert ids.shape == (4, 2)
    assert list(ids[:, 0]) == [vocab.bos_id, vocab.stoi["a"], vocab.stoi["a"], vocab.eos_id]  # cut to 2
    assert list(ids[:, 1]) == [vocab.bos_id, vocab.stoi["a"], vocab.eos_id, vocab.pad_id]
    assert decode_ids(list(ids[1:, 1]), vocab) == ["a"]


def test_read_captions_bad_rows(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text(HEADER + "a.jpg\t0\ttrain\tA dog .\n"
                 "b.jpg\t0\tholdout\tA cat .\n"  # unknown split
                 "c.jpg\t0\ttrain\n"  # missing field
                 "d.jpg\t0\ttest\t . \n"  # no words
                 "e.jpg\t1\tdev\tA bird .\r\n")
    with pytest.raises(UserError, match=r"c.tsv:3: split 'holdout'"):
        read_captions(p)
    s = read_captions(p, skip_bad_rows=True)
    assert [c.image for c in s.captions] == ["a.jpg", "e.jpg"]
    assert [line for line, _ in s.skipped] == [3, 4, 5]
    assert "skipped 3 bad rows" in s.skipped_summary()
    assert s.images(["dev"]) == ["e.jpg"] and s.by_image(["train"]) == {"a.jpg": [["a", "dog"]]}
    (tmp_path / "h.tsv").write_text("file\ttext\nx\ty\n")
    with pytest.raises(UserError, match="lacks the columns"):
        read_captions(tmp_path / "h.tsv")


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@pytest.fixture
def toy(tmp_path):
    """12 tiny PNGs of three colours, captioned by their colour; 6 train, 3 dev, 3 test."""
    Image = pytest.importorskip("PIL.Image")
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    rows = [HEADER]
    for i in range(12):
        colour = list(COLOURS)[i % 3]
        a = np.zeros((20, 20, 3), np.uint8) + np.array(COLOURS[colour], np.uint8)
        Image.fromarray(a).save(img_dir / f"{i}.png")
        split = "train" if i < 6 else "dev" if i < 9 else "test"
        for k in range(2):
            rows.append(f"{i}.png\t{k}\t{split}\tA {colour} picture{' here' if k else ''} .\n")
    (tmp_path / "caps.tsv").write_text("".join(rows))
    return tmp_path


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small matrices on a shared 2-core machine: threaded OpenBLAS spins and runs several times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def _train(toy, out, *extra):
    return main(["train", "caption", "--images", str(toy / "img"), "--captions", str(toy / "caps.tsv"),
                 "--out", str(out), "--size", "8", "--channels", "4", "--hidden", "16", "--embed", "8",
                 "--min-count", "1", "--dropout", "0", "--steps", "60", "--lr", "0.02", "--batch", "6",
                 "--eval-every", "30", "--no-progress", "--json", *extra])


def test_train_caption_eval_end_to_end(toy, capsys):
    out = toy / "run"
    assert _train(toy, out, "--attention") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["step"] == 60 and res["bad_images"] == 0 and res["val_loss"] < 2.0
    assert (out / "best.json").exists() and (out / "metrics.jsonl").exists()
    from rnnkit.tasks.caption import load_run

    model, _, _ = load_run(out)  # the image vector's running statistics come back with the weights
    assert not model.training and not np.allclose(model.norm_var, 1.0)

    assert main(["caption", str(out), str(toy / "img" / "9.png"), str(toy / "img" / "10.png"), "--json"]) == 0
    caps = json.loads(capsys.readouterr().out)
    assert caps[str(toy / "img" / "9.png")].startswith("a red picture")
    assert caps[str(toy / "img" / "10.png")].startswith("a green picture")

    assert main(["eval", str(out), "--json", "--beam", "3"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "caption" and ev["images"] == 3 and ev["references"] == 6 and ev["beam"] == 3
    assert ev["bleu1"] > 80 and ev["bleu4"] >= ev["baseline_most_frequent"]["bleu4"]
    assert set(ev["baseline_nearest_image"]) == {"bleu1", "bleu2", "bleu3", "bleu4"}
    page = (out / "test_captions.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "a blue picture" in page


def test_missing_and_corrupt_images(toy, capsys):
    with open(toy / "caps.tsv", "a") as f:
        f.write("gone.png\t0\ttrain\tA lost picture .\n")
    (toy / "img" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert _train(toy, toy / "r1") == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and "3.png" in err and "--skip-bad-rows" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _train(toy, toy / "r2", "--skip-bad-rows", "--steps", "2") == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["bad_images"] == 2 and res["captions_dropped"] == 3
    assert "2 images unusable" in cap.err


def test_bad_arguments(toy, capsys):
    assert main(["train", "caption", "--images", str(toy / "nope"), "--captions", str(toy / "caps.tsv"),
                 "--out", str(toy / "r"), "--no-progress"]) == 2
    assert "nope: no such file or directory" in capsys.readouterr().err
    assert _train(toy, toy / "r3", "--channels", "4,x") == 2
    assert "--channels" in capsys.readouterr().err
    assert main(["caption", str(toy / "none"), "x.png"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_resume_reaches_the_same_weights(toy, capsys):
    """4 steps + --resume 4 more == 8 straight: weights, optimizer, dropout RNGs, batch order and the
    image vector's running statistics all come back from the checkpoint."""
    from rnnkit.tasks.caption import load_run

    common = ["--steps", "8", "--dropout", "0.2", "--eval-every", "4", "--checkpoint-every", "4"]
    assert _train(toy, toy / "straight", *common) == 0
    assert _train(toy, toy / "split", "--steps", "4", "--dropout", "0.2", "--eval-every", "4",
                  "--checkpoint-every", "4") == 0
    assert main(["train", "caption", "--images", str(toy / "img"), "--captions", str(toy / "caps.tsv"),
                 "--out", str(toy / "split"), "--resume", "--steps", "8", "--no-progress", "--json"]) == 0
    capsys.readouterr()
    a, _, _ = load_run(toy / "straight", "last")
    b, _, _ = load_run(toy / "split", "last")
    for (name, p, _), (_, q, _) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(a.norm_mean, b.norm_mean, rtol=1e-6, atol=1e-7)


def test_precomputed_features_npz(toy, capsys):
    """--images FEATURES.npz: the decoder reads precomputed feature maps (here one colour-coded map per
    picture), trains with attention over them, and `rnnkit caption` looks images up by name."""
    names = [f"{i}.png" for i in range(12)]
    feats = np.zeros((12, 3, 2, 2), np.float32)
    for i in range(12):
        feats[i, i % 3] = 1.0  # the colour, one channel each
    np.savez(toy / "feats.npz", features=feats, filenames=np.array(names))
    out = toy / "frun"
    assert main(["train", "caption", "--images", str(toy / "feats.npz"), "--captions", str(toy / "caps.tsv"),
                 "--out", str(out), "--hidden", "16", "--embed", "8", "--min-count", "1", "--dropout", "0",
                 "--steps", "60", "--lr", "0.02", "--batch", "6", "--attention", "sat", "--no-progress",
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["caption", str(out), "11.png", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["11.png"].startswith("a blue picture")
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["bleu1"] > 80 and "(no image)" in (out / "test_captions.html").read_text()
