"""`rnnkit train classify`, `rnnkit predict`, `rnnkit eval` end to end on a small generated task, and
the user's mistakes (exit status 2, one line naming file and line)."""

import json

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.data.words import pad_batch
from rnnkit.train import LengthBatches

FILLER = "the a film movie plot actors was is it this and story".split()


def make_tsv(path, n, seed, crlf=False, bom=False):
    """Label 'pos' when the sentence holds 'good' or 'great', 'neg' when it holds 'bad' or 'dull'."""
    rng = np.random.default_rng(seed)
    nl = "\r\n" if crlf else "\n"
    rows = ["text\tlabel"]
    for _ in range(n):
        pos = bool(rng.integers(2))
        words = list(rng.choice(FILLER, int(rng.integers(2, 9))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(["good", "great"] if pos else
                                                                     ["bad", "dull"])))
        rows.append(" ".join(words) + "\t" + ("pos" if pos else "neg"))
    data = (nl.join(rows) + nl).encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    train = make_tsv(d / "train.tsv", 400, 0)
    dev = make_tsv(d / "dev.tsv", 60, 1, crlf=True, bom=True)
    out = d / "run"
    rc = main(["train", "classify", "--train", str(train), "--dev", str(dev), "--out", str(out),
               "--cell", "gru", "--bidirectional", "--embed-dim", "8", "--hidden", "8",
               "--batch-size", "16", "--steps", "120", "--eval-every", "40", "--lr", "0.02",
               "--label-names", "pos=positive", "--quiet", "--json"])
    assert rc == 0
    return d, out


def test_train_writes_run_and_learns(run, capsys):
    d, out = run
    assert (out / "best.json").exists() and (out / "last.json").exists()
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"]
    assert [e["step"] for e in evals] == [40, 80, 120]
    assert max(e["val_acc"] for e in evals) >= 0.9  # an easy task: one keyword decides


def test_eval_report(run, capsys):
    d, out = run
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(d / "dev.tsv"), "--json"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert "byte order mark" in captured.err and "CRLF" in captured.err  # accepted, and said so
    cm = np.array(rep["confusion"]["matrix"])
    assert rep["n"] == 60 == cm.sum()
    assert rep["confusion"]["labels"] == ["neg", "positive"]  # display name from --label-names
    assert rep["accuracy"] == pytest.approx(np.trace(cm) / 60)
    assert rep["accuracy"] >= 0.9
    assert set(rep["per_class"]["neg"]) >= {"precision", "recall", "f1", "support"}
    assert main(["eval", str(out), "--data", str(d / "dev.tsv")]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "macro-F1" in text and "confusion matrix" in text


def test_predict(run, capsys, tmp_path, monkeypatch):
    d, out = run
    f = tmp_path / "in.txt"
    f.write_text("what a great film\nthe plot was dull\n")
    capsys.readouterr()
    assert main(["predict", str(out), str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["positive", "neg"]
    assert all(0.5 <= float(ln.split("\t")[1]) <= 1.0 for ln in lines)
    assert main(["predict", str(out), str(f), "--json"]) == 0
    objs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["line"] for o in objs] == [1, 2]
    assert sum(objs[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # blank lines: an error naming the line, or counted and skipped
    f.write_text("great\n\ndull\n")
    assert main(["predict", str(out), str(f)]) == 2
    assert f"{f}:2: empty line" in capsys.readouterr().err
    assert main(["predict", str(out), str(f), "--skip-bad-rows"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "skipped 1 empty line" in captured.err


@pytest.mark.parametrize("row, reason", [
    ("no tab in this row", "no tab"),
    ("\tpos", "empty text"),
])
def test_bad_training_rows(tmp_path, capsys, row, reason):
    train = make_tsv(tmp_path / "train.tsv", 30, 0)
    lines = train.read_text().splitlines()
    lines.insert(5, row)  # becomes line 6
    train.write_text("\n".join(lines) + "\n")
    dev = make_tsv(tmp_path / "dev.tsv", 10, 1)
    args = ["train", "classify", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "r"),
            "--embed-dim", "4", "--hidden", "4", "--steps", "2", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnkit: error: {train}:6: {reason}") and err.count("\n") == 1
    assert main(args + ["--skip-bad-rows"]) == 0
    assert f"{train}: skipped 1 bad row (first: line 6: {reason}" in capsys.readouterr().err


def test_dev_label_never_seen_in_training(tmp_path, capsys):
    train = make_tsv(tmp_path / "train.tsv", 30, 0)
    dev = make_tsv(tmp_path / "dev.tsv", 10, 1)
    dev.write_text(dev.read_text() + "a neutral film\tneutral\n")
    args = ["train", "classify", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "r"),
            "--embed-dim", "4", "--hidden", "4", "--steps", "2", "--quiet"]
    assert main(args) == 2
    assert f"{dev}:12: label 'neutral' never seen in training" in capsys.readouterr().err
    assert main(args + ["--skip-bad-rows"]) == 0
    assert "skipped 1 bad row" in capsys.readouterr().err


def test_argument_and_run_dir_errors(tmp_path, capsys):
    train = make_tsv(tmp_path / "train.tsv", 20, 0)
    one = tmp_path / "one.tsv"
    one.write_text("text\tlabel\ngood film\tpos\nfine\tpos\n")
    base = ["train", "classify", "--dev", str(train), "--out", str(tmp_path / "r"), "--steps", "1", "--quiet"]
    assert main(base + ["--train", str(one)]) == 2
    assert "only one label ('pos')" in capsys.readouterr().err
    assert main(base + ["--train", str(train), "--label-names", "maybe=x"]) == 2
    assert "--label-names: 'maybe' is not a label" in capsys.readouterr().err
    assert main(base + ["--train", str(train), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nowhere"), "-"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_length_batches_of_one_column_group_lengths_and_resume():
    lengths = np.random.default_rng(0).integers(1, 40, 500)
    src = LengthBatches(lengths, 20, seed=3, pool=5)
    epoch = src.epoch_batches(np.random.default_rng(0))
    assert sorted(np.concatenate(epoch).tolist()) == list(range(500))  # each item once per epoch
    # within a pool the batches are sorted, so a batch spans few lengths
    spread = np.mean([np.ptp(lengths[b]) for b in epoch])
    assert spread < 0.5 * np.mean([np.ptp(lengths[np.arange(i, i + 20)]) for i in range(0, 500, 20)])
    for _ in range(30):  # into the second epoch
        src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    want = [src.next_batch() for _ in range(5)]
    other = LengthBatches(lengths, 20, seed=99, pool=5)
    other.load_state_dict(state)
    got = [other.next_batch() for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_pad_batch():
    idx, mask = pad_batch([np.array([5, 6, 7]), np.array([8])])
    np.testing.assert_array_equal(idx, [[5, 8], [6, 0], [7, 0]])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0], [1, 0]])


def test_eval_refuses_translation_only_flags(run, capsys):
    _, out = run
    assert main(["eval", str(out), "--split", "dev"]) == 2
    assert "--split / --length-penalty: only for translation runs" in capsys.readouterr().err


def test_eval_bad_rows(run, tmp_path, capsys):
    d, out = run
    data = make_tsv(tmp_path / "bad.tsv", 20, 5)
    data.write_text(data.read_text() + "no tab\nan odd film\tmaybe\n")  # lines 22 and 23
    assert main(["eval", str(out), "--data", str(data)]) == 2
    assert f"{data}:22: no tab" in capsys.readouterr().err
    assert main(["eval", str(out), "--data", str(data), "--skip-bad-rows", "--json"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert rep["n"] == 20 and rep["skipped"] == 2
    assert f"{data}: skipped 2 bad rows (first: line 22: no tab" in captured.err


def test_pretraining_as_a_language_model(tmp_path, capsys):
    """--pretrain-epochs trains the embedding and recurrent layer on the training text first (its own
    run in DIR/pretrain, dev loss falling), then the classifier starts from those weights."""
    from rnnkit.train.checkpoint import load_checkpoint

    train = make_tsv(tmp_path / "train.tsv", 200, 0)
    dev = make_tsv(tmp_path / "dev.tsv", 40, 1)
    base = ["train", "classify", "--train", str(train), "--dev", str(dev), "--bidirectional",
            "--embed-dim", "8", "--hidden", "8", "--batch-size", "16", "--steps", "1", "--lr", "0.02",
            "--subwords", "0", "--quiet", "--json"]
    assert main(base + ["--out", str(tmp_path / "pre"), "--pretrain-epochs", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pretrain"]["step"] == 3 * 13  # 13 batches of 16 distinct texts an epoch
    evals = [json.loads(x) for x in (tmp_path / "pre" / "pretrain" / "metrics.jsonl").read_text()
             .splitlines()]
    train_losses = [e["loss"] for e in evals if e["kind"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    w_pre = load_checkpoint(tmp_path / "pre", "last", "classify")[0]["model.emb.W"]
    w_plain = load_checkpoint(tmp_path / "plain", "last", "classify")[0]["model.emb.W"]
    assert not np.allclose(w_pre, w_plain, atol=1e-3)  # same seed: only the pretraining differs
    assert main(base + ["--out", str(tmp_path / "bad"), "--pretrain-epochs", "-1"]) == 2
    assert "--pretrain-epochs: expected a number >= 0" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "bad"), "--layers", "2", "--pretrain-epochs", "1"]) == 2
    assert "--pretrain-epochs: language-model pretraining needs one layer" in capsys.readouterr().err


def test_subwords_train_predict_and_eval(tmp_path, capsys):
    """--subwords: the n-gram table is trained and saved; predict and eval rebuild the words' n-grams
    (unseen words included) and give what the training run's evaluation gave."""
    from rnnkit.train.checkpoint import load_checkpoint

    train = make_tsv(tmp_path / "train.tsv", 300, 0)
    dev = make_tsv(tmp_path / "dev.tsv", 40, 1)
    out = tmp_path / "run"
    assert main(["train", "classify", "--train", str(train), "--dev", str(dev), "--out", str(out),
                 "--embed-dim", "8", "--hidden", "8", "--batch-size", "16", "--steps", "40",
                 "--eval-every", "40", "--lr", "0.02", "--subwords", "500", "--subword-n", "2-4",
                 "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    arrays, meta, _ = load_checkpoint(out, "best", "classify")
    assert arrays["model.sub.W"].shape == (500, 8)
    assert meta["config"]["model"]["subword_min"] == 2
    assert main(["eval", str(out), "--data", str(dev), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(summary["best"])
    text = tmp_path / "in.txt"
    text.write_text("a goodly film\nthe plot was dullish\n")  # words never seen in training
    assert main(["predict", str(out), str(text)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(x.split("\t")[0] in ("pos", "neg") for x in lines)
    base = ["train", "classify", "--train", str(train), "--dev", str(dev), "--steps", "1", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "b1"), "--subwords", "100", "--subword-n", "4"]) == 2
    assert "--subword-n: expected MIN-MAX such as 3-5, got '4'" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b2"), "--subwords", "100", "--pretrain-epochs", "1"]) == 2
    assert "--pretrain-epochs: language-model pretraining does not train the character n-grams" in \
        capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b3"), "--subwords", "-5"]) == 2
    assert "subword_buckets must be >= 0" in capsys.readouterr().err


@pytest.fixture
def tiny(tmp_path):
    """Arguments for a fast run on a small generated task (add --out and the training flags)."""
    train = make_tsv(tmp_path / "train.tsv", 60, 0)
    dev = make_tsv(tmp_path / "dev.tsv", 20, 1)
    return ["train", "classify", "--train", str(train), "--dev", str(dev), "--embed-dim", "4",
            "--hidden", "4", "--batch-size", "16", "--subwords", "0"]


def _train_meta(out):
    return json.loads((out / "last.json").read_text())["meta"]["train"]


@pytest.mark.parametrize("flag", [None, "--quiet", "--no-progress"])
def test_quiet_and_no_progress(tiny, tmp_path, capsys, flag):
    assert main(tiny + ["--out", str(tmp_path / "r"), "--steps", "2"] + ([flag] if flag else [])) == 0
    err = capsys.readouterr().err
    assert ("training sentences" in err) == (flag is None)  # the run's summary line is progress output


def test_checkpoint_every_and_shared_flags_reach_the_run(tiny, tmp_path):
    out = tmp_path / "r"
    assert main(tiny + ["--out", str(out), "--steps", "4", "--eval-every", "2", "--checkpoint-every", "3",
                        "--optimizer", "adamw", "--weight-decay", "0.01", "--quiet"]) == 0
    t = _train_meta(out)
    assert (t["checkpoint_every"], t["eval_every"], t["optimizer"], t["weight_decay"]) == \
        (3, 2, "adamw", 0.01)
    assert (t["monitor"], t["monitor_mode"]) == ("val_acc", "max")
    assert main(tiny + ["--out", str(tmp_path / "d"), "--steps", "2", "--eval-every", "2", "--quiet"]) == 0
    assert _train_meta(tmp_path / "d")["checkpoint_every"] == 2  # --eval-every's unless given


def test_resume_keeps_the_runs_training_settings(tiny, tmp_path):
    out = tmp_path / "r"
    assert main(tiny + ["--out", str(out), "--steps", "2", "--eval-every", "2", "--optimizer", "adamw",
                        "--weight-decay", "0.01", "--lr", "0.01", "--schedule", "cosine", "--quiet"]) == 0
    assert main(tiny + ["--out", str(out), "--steps", "4", "--resume", "--quiet"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["lr"], t["schedule"], t["eval_every"]) == \
        ("adamw", 0.01, 0.01, "cosine", 2)
    assert main(tiny + ["--out", str(out), "--steps", "6", "--resume", "--lr", "0.005", "--quiet"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["lr"], t["steps"]) == ("adamw", 0.005, 6)


def test_patience_stops_the_run(tiny, tmp_path, capsys):
    """An update of 1e-30 leaves every weight as it was, so the dev accuracy never improves after the
    first evaluation: --patience 2 stops at the third."""
    assert main(tiny + ["--out", str(tmp_path / "r"), "--steps", "50", "--eval-every", "1",
                        "--optimizer", "sgd", "--lr", "1e-30", "--patience", "2", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["stopped"], summary["step"]) == ("early_stopping", 3)
