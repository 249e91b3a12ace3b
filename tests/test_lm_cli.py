"""`rnnkit train lm`, `rnnkit sample`, `rnnkit eval` end to end on a tiny text, and their bad input."""

import json

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.train import load_checkpoint

TEXT = ("the quick brown fox jumps over the lazy dog.\n" * 40)
TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch", "4", "--seq-len", "16",
        "--eval-every", "5", "--checkpoint-every", "5", "--no-progress"]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return p


def _train(corpus, out, *extra):
    return main(["train", "lm", "--data", str(corpus), "--out", str(out), *TINY, *extra])


def test_train_sample_eval(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert _train(corpus, out, "--steps", "12", "--dropout", "0.1", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 12 and res["val_loss"] > 0
    for f in ("last.json", "best.json", "metrics.jsonl", "loss.png"):
        assert (out / f).exists(), f
    assert main(["sample", str(out), "--prime", "the ", "--length", "30", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the ") and len(text) == 4 + 30 + 1 and set(text) <= set(TEXT)
    assert main(["sample", str(out), "--length", "20", "--temperature", "0", "--top-k", "3"]) == 0
    assert len(capsys.readouterr().out) == 21
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "lm" and ev["split"] == "validation" and ev["chars"] > 0
    assert abs(ev["bits_per_char"] - ev["loss_nats_per_char"] / np.log(2)) < 1e-9
    assert main(["eval", str(out), "--data", str(corpus)]) == 0
    assert "nats/char" in capsys.readouterr().out


def test_resume_equals_a_straight_run(tmp_path, corpus, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(corpus, a, "--steps", "14", "--dropout", "0.2") == 0
    assert _train(corpus, b, "--steps", "7", "--dropout", "0.2") == 0
    assert _train(corpus, b, "--steps", "14", "--resume") == 0
    wa, ma, _ = load_checkpoint(a, "last", "lm")
    wb, mb, _ = load_checkpoint(b, "last", "lm")
    assert ma["step"] == mb["step"] == 14
    for k in wa:
        if k.startswith("model."):
            np.testing.assert_allclose(wb[k], wa[k], rtol=0, atol=1e-6, err_msg=k)


def _err(capsys, code):
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_input(tmp_path, corpus, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("caf\u00e9 " * 200).encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("too short")
    cases = [
        (["--data", str(tmp_path / "missing.txt")], "missing.txt: no such file"),
        (["--data", str(empty)], "empty.txt: the file is empty"),
        (["--data", str(binary)], "bin.dat: looks like a binary file"),
        (["--data", str(latin)], "not valid utf-8 at line 1"),
        (["--data", str(short)], "shorter than one chunk"),
        (["--data", str(corpus), "--encoding", "nope"], "--encoding: unknown text encoding"),
        (["--data", str(corpus), "--hidden", "0"], "--hidden: expected a positive integer"),
        (["--data", str(corpus), "--lr", "-1"], "--lr: expected a positive number"),
        (["--data", str(corpus), "--dropout", "1.5"], "--dropout: expected a number in [0, 1)"),
    ]
    for i, (args, msg) in enumerate(cases):
        code = main(["train", "lm", "--out", str(tmp_path / f"r{i}"), *TINY, "--steps", "2", *args])
        assert msg in _err(capsys, code), args
    # latin-1 works with the right encoding, and with raw bytes
    assert main(["train", "lm", "--data", str(latin), "--encoding", "latin-1", "--out",
                 str(tmp_path / "ok1"), *TINY, "--steps", "2"]) == 0
    assert main(["train", "lm", "--data", str(latin), "--bytes", "--out", str(tmp_path / "ok2"),
                 *TINY, "--steps", "2"]) == 0
    capsys.readouterr()


def test_run_dir_rules(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert _train(corpus, out, "--steps", "3") == 0
    assert "directory exists and is not empty; use --resume" in _err(capsys, _train(corpus, out, "--steps", "3"))
    assert _train(corpus, out, "--steps", "3", "--force") == 0
    assert "--hidden 32 differs from the run's 16" in _err(
        capsys, _train(corpus, out, "--steps", "5", "--resume", "--hidden", "32"))
    assert "holds no checkpoint" in _err(capsys, _train(corpus, tmp_path / "new", "--steps", "3",
                                                        "--resume"))
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper())
    assert "differs from the one the run was trained on" in _err(
        capsys, main(["train", "lm", "--data", str(other), "--out", str(out), *TINY, "--steps", "5",
                      "--resume"]))
    assert "not in the model's vocabulary" in _err(capsys, main(["sample", str(out), "--prime", "XYZ"]))
    assert "no such run directory" in _err(capsys, main(["sample", str(tmp_path / "none")]))
    assert "--length" in _err(capsys, main(["sample", str(out), "--length", "-1"]))
    # a run directory of another task
    idx = json.loads((out / "last.json").read_text())
    idx["task"] = "classify"
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "last.json").write_text(json.dumps(idx))
    assert "a run of task 'classify', expected 'lm'" in _err(capsys, main(["sample", str(tmp_path / "cls")]))
    assert "a run of task 'classify'" in _err(capsys, main(["train", "lm", "--data", str(corpus), "--out",
                                                            str(tmp_path / "cls"), "--resume", *TINY]))
    assert "other.txt: character 'T'" in _err(
        capsys, main(["eval", str(out), "--data", str(other)]))


def test_bptt_checkpoint_flag_gives_the_same_training(tmp_path, corpus, capsys):
    from rnnkit.layers import LSTM

    if not hasattr(LSTM(2, 2), "recompute"):
        pytest.skip("this version's layers have no recompute option")
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(corpus, a, "--steps", "4") == 0
    assert _train(corpus, b, "--steps", "4", "--bptt-checkpoint", "4") == 0
    wa, _, _ = load_checkpoint(a, "last", "lm")
    wb, mb, _ = load_checkpoint(b, "last", "lm")
    assert mb["config"]["train_extra"]["bptt_checkpoint"] == 4
    for k in wa:
        if k.startswith("model."):
            np.testing.assert_allclose(wb[k], wa[k], rtol=0, atol=1e-6, err_msg=k)
