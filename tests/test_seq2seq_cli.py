"""The command line: `rnnkit train translate` (date task and a TSV), `rnnkit translate`, `rnnkit eval`,
and the one-line errors for bad input."""

import json

import numpy as np
import pytest

from rnnkit.cli import main

pytest.importorskip("safetensors")
pytest.importorskip("sacrebleu")

SMALL = ["--steps", "12", "--eval-every", "6", "--emb", "8", "--hidden", "12", "--batch-size", "16",
         "--no-progress", "--beam", "2"]


@pytest.fixture(scope="module")
def date_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dates"
    rc = main(["train", "translate", "--n-train", "300", "--n-test", "20", "--out", str(out), "--json"]
              + SMALL)
    assert rc == 0
    return out


def test_train_dates_writes_a_run(date_run, capsys):
    res = json.loads((date_run / "test.json").read_text())
    assert set(res) == {"train", "test_beam1", "test_beam2"}
    cfg = json.loads((date_run / "last.json").read_text())["meta"]["config"]
    assert cfg["label_smoothing"] == 0.0 and cfg["model"]["dropout"] == 0.0  # the date task's recipe
    assert res["train"]["step"] == 12
    for k in ("test_beam1", "test_beam2"):
        assert res[k]["sentences"] == 20 and 0 <= res[k]["exact"] <= 100
    assert (date_run / "best.json").exists() and (date_run / "metrics.jsonl").exists()
    evals = [json.loads(x) for x in (date_run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in x]
    assert evals and "val_exact" in evals[-1]


def test_translate_keeps_lines_and_draws_heatmap(date_run, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("27/11/26\n\nnov 27 2026\n", encoding="utf-8")
    png = tmp_path / "att.png"
    capsys.readouterr()
    assert main(["translate", str(date_run), str(src), "--beam", "3", "--heatmap", str(png)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # the empty line stays empty
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_json(date_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(date_run), "--beam", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sentences"] == 20 and res["beam"] == 1 and "bleu" in res and "chrf" in res
    # the dev split (20 pairs for this date task: min(500, --n-test)) and a length penalty, to tune on
    assert main(["eval", str(date_run), "--beam", "2", "--split", "dev", "--length-penalty", "0.5",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["data"].startswith("dev split") and res["length_penalty"] == 0.5 and res["sentences"] == 20
    assert main(["eval", str(date_run), "--split", "dev", "--data", str(date_run / "x.tsv")]) == 2
    assert "--split: only without --data" in capsys.readouterr().err


def test_label_smoothing_and_a_cosine_over_the_minutes(tmp_path, capsys):
    """--label-smoothing is kept in the run's config (resume reads it from there); --schedule cosine with
    --minutes alone decays the rate over the clock; a smoothing of 1 is refused."""
    out = tmp_path / "ls"
    args = ["train", "translate", "--n-train", "200", "--n-test", "10", "--emb", "8", "--hidden", "12",
            "--batch-size", "16", "--no-progress", "--beam", "1", "--eval-every", "5"]
    assert main(args + ["--out", str(out), "--steps", "10", "--label-smoothing", "0.1"]) == 0
    cfg = json.loads((out / "last.json").read_text())["meta"]["config"]
    assert cfg["label_smoothing"] == 0.1 and cfg["batching"] == "random"  # the date task's default
    out2 = tmp_path / "cos"
    assert main(args + ["--out", str(out2), "--minutes", "0.05", "--schedule", "cosine"]) == 0
    lrs = [json.loads(x)["lr"] for x in (out2 / "metrics.jsonl").read_text().splitlines()
           if '"train"' in x]
    assert lrs[-1] < lrs[0]
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "bad"), "--label-smoothing", "1"]) == 2
    assert "--label-smoothing: expected a number in [0, 1)" in capsys.readouterr().err


def test_train_tsv_and_eval_other_file(tmp_path, capsys):
    words = ["chat", "chien", "maison", "arbre", "voiture", "livre"]
    eng = ["cat", "dog", "house", "tree", "car", "book"]
    rows = [f"the {e} is {f2}.\tle {f} est {e2}." for f, e in zip(words, eng)
            for f2, e2 in zip(eng, words)]
    data = tmp_path / "pairs.tsv"
    data.write_text("\n".join(rows + ["broken row", "too many words here to keep at all ok\tx"]) + "\n",
                    encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "translate", "--data", str(data), "--reverse", "--max-words", "6",
                 "--min-freq", "1", "--test-frac", "0.2", "--out", str(out), "--attention", "additive",
                 "--cell", "gru", "--teacher-forcing", "0.5"] + SMALL) == 0
    err = capsys.readouterr().err
    assert "missing side 1" in err and "too long 1" in err
    cfg = json.loads((out / "last.json").read_text())["meta"]["config"]
    assert cfg["label_smoothing"] == 0.1 and cfg["model"]["dropout"] == 0.1  # real text's defaults
    assert cfg["batching"] == "length"
    other = tmp_path / "other.tsv"
    other.write_text("the zebra is cat.\tle zèbre est chat.\n", encoding="utf-8")
    assert main(["eval", str(out), "--data", str(other), "--json", "--beam", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sentences"] == 1 and res["unk_rate"] > 0  # "zèbre" was never seen: <unk>
    inp = tmp_path / "in.txt"
    inp.write_text("le zèbre est chat.\n", encoding="utf-8")
    assert main(["translate", str(out), str(inp), "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize("argv,msg", [
    (["train", "translate", "--data", "/nonexistent/x.tsv"], "no such file"),
    (["train", "translate", "--teacher-forcing", "1.5"], "--teacher-forcing"),
    (["train", "translate", "--beam", "0"], "--beam"),
    (["train", "translate", "--tgt-min-freq", "0"], "--tgt-min-freq"),
    (["translate", "/nonexistent/run"], "no such run directory"),
])
def test_bad_input_is_one_line(argv, msg, tmp_path, capsys):
    argv = argv + (["--out", str(tmp_path / "r")] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_translate_bad_beam_and_missing_input(date_run, tmp_path, capsys):
    assert main(["translate", str(date_run), str(tmp_path / "none.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["translate", str(date_run), "-", "--beam", "0"]) == 2
    assert "--beam" in capsys.readouterr().err


def test_resume_continues_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "translate", "--n-train", "200", "--n-test", "10", "--out", str(out), "--emb", "8",
            "--hidden", "8", "--batch-size", "8", "--eval-every", "3", "--no-progress", "--beam", "1"]
    assert main(base + ["--steps", "3"]) == 0
    assert main(base + ["--steps", "3"]) == 2  # an existing run needs --resume or --force
    assert "--resume" in capsys.readouterr().err
    assert main(base + ["--steps", "6", "--resume", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["train"]["step"] == 6


def test_resume_keeps_the_runs_training_settings(tmp_path):
    out = tmp_path / "run"
    base = ["train", "translate", "--n-train", "100", "--n-test", "10", "--out", str(out), "--emb", "8",
            "--hidden", "8", "--batch-size", "8", "--no-progress", "--beam", "1"]
    assert main(base + ["--steps", "4", "--lr", "1e-3", "--schedule", "cosine", "--eval-every", "2",
                        "--clip", "1", "--warmup", "2"]) == 0
    assert main(base + ["--steps", "6", "--resume"]) == 0  # flags not given: the run's own
    train = json.loads((out / "last.json").read_text())["meta"]["train"]
    assert (train["lr"], train["schedule"], train["eval_every"]) == (1e-3, "cosine", 2)
    assert (train["clip"], train["warmup"]) == (1.0, 2)
    assert main(base + ["--steps", "8", "--resume", "--lr", "5e-4"]) == 0  # a flag given wins
    assert json.loads((out / "last.json").read_text())["meta"]["train"]["lr"] == 5e-4


def test_dev_loss_in_length_sorted_batches_equals_one_batch_in_file_order():
    from rnnkit.tasks.translate import TranslateTask
    from rnnkit.data.parallel import collate
    from rnnkit.models.seq2seq import BOS, EOS, Seq2Seq, Seq2SeqConfig

    rng = np.random.default_rng(0)
    items = [([int(w) for w in rng.integers(4, 20, rng.integers(1, 9))],
              [int(w) for w in rng.integers(4, 15, rng.integers(1, 9))] + [EOS]) for _ in range(600)]
    m = Seq2Seq(Seq2SeqConfig(20, 15, emb=8, hidden=12))
    task = TranslateTask(m, items, [], tgt_vocab=None)
    got = task.evaluate()["val_loss"]
    assert len(task._dev_batches()) == 3  # batches of 256
    b = collate(items, BOS)  # the plain reference: every pair at once, as read
    want, _ = m.loss(b["src"], b["src_mask"], b["tgt_in"], b["tgt_out"], b["tgt_mask"])
    assert got == pytest.approx(want, rel=1e-5)


TINY = ["train", "translate", "--n-train", "100", "--n-test", "10", "--emb", "8", "--hidden", "8",
        "--batch-size", "8", "--no-progress", "--beam", "1"]


def _train_meta(out):
    return json.loads((out / "last.json").read_text())["meta"]["train"]


def test_optimizer_weight_decay_ema_and_resume(tmp_path):
    """The shared training flags reach the run; a resumed run keeps them unless given again."""
    out = tmp_path / "run"
    base = TINY + ["--out", str(out)]
    assert main(base + ["--steps", "2", "--eval-every", "2", "--optimizer", "adamw", "--weight-decay",
                        "0.01", "--ema", "0.9", "--patience", "5"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["ema"], t["patience"]) == ("adamw", 0.01, 0.9, 5)
    assert t["checkpoint_every"] == 2  # follows --eval-every
    assert main(base + ["--steps", "4", "--resume"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["ema"], t["patience"]) == ("adamw", 0.01, 0.9, 5)
    assert main(base + ["--steps", "6", "--resume", "--weight-decay", "0.02", "--eval-every", "3"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["steps"]) == ("adamw", 0.02, 6)
    assert (t["eval_every"], t["checkpoint_every"]) == (3, 3)
    assert main(base + ["--steps", "7", "--resume", "--checkpoint-every", "5"]) == 0
    t = _train_meta(out)
    assert (t["eval_every"], t["checkpoint_every"]) == (3, 5)


def test_resume_without_steps_keeps_the_runs_target(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--steps", "3", "--eval-every", "3"]) == 0
    capsys.readouterr()
    assert main(TINY + ["--out", str(out), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["train"]["step"] == 3


def test_patience_stops_the_run(tmp_path, capsys):
    """An update of 1e-30 leaves every weight as it was, so the dev loss never improves after the first
    evaluation: --patience 2 stops at the third."""
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--steps", "50", "--eval-every", "1", "--optimizer", "sgd",
                        "--lr", "1e-30", "--patience", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (res["train"]["stopped"], res["train"]["step"]) == ("early_stopping", 3)
