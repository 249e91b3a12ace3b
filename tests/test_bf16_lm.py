"""A short character-LM training in bf16-mixed follows float32's loss curve; the flags of `rnnkit
train lm` and `rnnkit bench`. On a CPU without a bf16 unit the same tests run the float32 fallback.

Margin: 0.03 nats/char at every logged step of 60 (measured within 0.007 here: bf16's rounding of
the products is 2^-9 relative, small beside the loss's own step-to-step change of ~0.05).
"""

import json

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.kernels import bf16
from rnnkit.train import load_checkpoint

TEXT = "".join(f"{w} " for w in np.random.default_rng(0).choice(
    "the quick brown fox jumps over a lazy dog and then runs far away into woods".split(), 3000))
SMALL = ["--hidden", "64", "--layers", "2", "--embed", "16", "--batch", "16", "--seq-len", "32",
         "--steps", "60", "--lr", "0.01", "--eval-every", "20", "--checkpoint-every", "60", "--no-progress"]
MARGIN = 0.03


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return p


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {(r["kind"], r["step"]): r.get("loss", r.get("val_loss")) for r in rows
            if r["kind"] in ("train", "eval")}


def test_bf16_mixed_training_follows_float32(tmp_path, corpus, capsys):
    runs = {}
    for precision in ("32", "bf16-mixed"):
        runs[precision] = tmp_path / precision
        assert main(["train", "lm", "--data", str(corpus), "--out", str(runs[precision]), *SMALL,
                     "--precision", precision, "--json"]) == 0
    capsys.readouterr()
    ref, mixed = _losses(runs["32"]), _losses(runs["bf16-mixed"])
    assert ref.keys() == mixed.keys() and len(ref) >= 6
    diffs = {k: abs(mixed[k] - ref[k]) for k in ref}
    assert max(diffs.values()) < MARGIN, diffs
    first, last = min(k for k in ref if k[0] == "train"), max(k for k in ref if k[0] == "train")
    assert mixed[last] < mixed[first] - 0.5  # it learned
    if bf16.tier() != "none":
        assert max(diffs.values()) > 0  # and the products were not float32's
    # the checkpoint is float32, the run says its precision, and it evaluates and samples in either
    arrays, meta, _ = load_checkpoint(runs["bf16-mixed"], "last", "lm")
    assert {a.dtype for a in arrays.values()} == {np.dtype(np.float32)}
    assert meta["config"]["model"]["precision"] == "bf16-mixed"
    assert main(["eval", str(runs["bf16-mixed"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss_nats_per_char"] == pytest.approx(
        mixed[("eval", 60)], abs=MARGIN)
    assert main(["sample", str(runs["bf16-mixed"]), "--length", "20", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) == 21
    # a resumed run may change the precision
    assert main(["train", "lm", "--out", str(runs["bf16-mixed"]), "--data", str(corpus), "--resume",
                 "--steps", "70", "--precision", "32", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 70
    _, meta, _ = load_checkpoint(runs["bf16-mixed"], "last", "lm")
    assert meta["config"]["model"]["precision"] == "32"


def test_precision_flags_refuse_a_cell_without_bf16(tmp_path, corpus, capsys):
    argv = ["train", "lm", "--data", str(corpus), "--out", str(tmp_path / "r"), "--cell", "gru",
            "--precision", "bf16-mixed", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--precision bf16-mixed: the gru cell has no bf16 path" in err
    assert not (tmp_path / "r").exists()
    assert main(["bench", "--precision", "bf16-mixed", "--cells", "lstm,gru"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cells: gru has no bf16 path yet" in err


def test_bench_bf16_rows(monkeypatch, capsys):
    from rnnkit import bench

    monkeypatch.setattr(bench, "CONFIGS", [(5, 4, 8, 8)])
    monkeypatch.setattr("rnnkit.cli.bench.CONFIGS", [(5, 4, 8, 8)])
    assert main(["bench", "--precision", "bf16-mixed", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["cell"] for r in rows] == ["lstm"]
    row = rows[0]
    assert (row["T"], row["N"], row["D"], row["H"], row["precision"]) == (5, 4, 8, 8, "bf16-mixed")
    if bench.have_torch():
        assert row["ratio"] > 0 and row["ratio_torch_bf16"] > 0
        assert row["torch_autocast_ms"] > 0 and row["torch_bf16_module_ms"] > 0
