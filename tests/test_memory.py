"""The long-range memory tasks: generators, baselines, the models' gradients, the CLI and its errors."""

import json
import math

import numpy as np
import pytest

from gradcheck import numerical_grad, rel_error
from rnnkit.cli import main
from rnnkit.data.synthetic import (
    SyntheticSource,
    adding_baseline,
    adding_batch,
    copy_baseline,
    copy_batch,
)
from rnnkit.functional import mse_forward, softmax_cross_entropy
from rnnkit.models.memory import MemoryConfig, MemoryModel


# --- generators ------------------------------------------------------------------------------------


def test_adding_batch_structure(rng):
    T, N = 12, 50
    x, y = adding_batch(N, T, rng)
    assert x.shape == (T, N, 2) and y.shape == (N,)
    marks = x[:, :, 1]
    assert np.all(marks.sum(axis=0) == 2)
    assert np.all(marks[: T // 2].sum(axis=0) == 1)  # one marker in each half
    assert np.allclose((x[:, :, 0] * marks).sum(axis=0), y, atol=1e-6)
    assert x[:, :, 0].min() >= 0 and x[:, :, 0].max() <= 1


def test_adding_mean_predictor_has_the_baseline_mse(rng):
    _, y = adding_batch(40000, 10, rng, np.float64)
    assert abs(float(((y - 1.0) ** 2).mean()) - adding_baseline()) < 0.005
    assert abs(adding_baseline() - 0.167) < 0.001


def test_copy_batch_structure(rng):
    T, N = 7, 4
    x, y = copy_batch(N, T, rng)
    assert x.shape == y.shape == (T + 20, N)
    assert np.all((x[:10] >= 1) & (x[:10] <= 8))
    assert np.all(x[10:T + 9] == 0) and np.all(x[T + 9] == 9) and np.all(x[T + 10:] == 0)
    assert np.all(y[:T + 10] == 0) and np.array_equal(y[T + 10:], x[:10])


def test_copy_memoryless_predictor_has_the_baseline_loss(rng):
    T, N = 15, 8
    _, y = copy_batch(N, T, rng)
    logits = np.full((T + 20, N, 10), -1e4)
    logits[:T + 10, :, 0] = 0.0  # blanks are certain ...
    logits[T + 10:, :, 1:9] = 0.0  # ... the symbols a uniform guess among 8
    loss, _ = softmax_cross_entropy(logits, y)
    assert math.isclose(loss, copy_baseline(T), rel_tol=1e-9)
    assert math.isclose(copy_baseline(T), 10 * math.log(8) / (T + 20))


def test_source_state_round_trips_through_json():
    src = SyntheticSource("adding", 9, batch_size=3, seed=5)
    src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    a = src.next_batch()
    other = SyntheticSource("adding", 9, batch_size=3, seed=99)
    other.load_state_dict(state)
    b = other.next_batch()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="not copy"):
        SyntheticSource("copy", 9, 3).load_state_dict(state)


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["adding", "copy"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_model_gradients(task, cell, rng):
    cfg = MemoryConfig(task=task, length=4, cell=cell, hidden=3, layers=2 if cell == "lstm" else 1)
    model = MemoryModel(cfg, np.float64)
    from rnnkit.data.synthetic import make_batch

    x, y = make_batch(task, 2, 4, rng, np.float64)
    model.zero_grad()
    _, dpred = model.loss(x, y)
    model.backward(dpred)
    for name, p, g in model.named_parameters():
        num = numerical_grad(lambda: np.array(model.loss(x, y)[0]), p, np.array(1.0))
        assert rel_error(num, g) < 1e-6, name


@pytest.mark.parametrize("task", ["adding", "copy"])
def test_last_step_grad_is_the_gradient_of_the_last_steps_loss(task, rng):
    cfg = MemoryConfig(task=task, length=3, cell="gru", hidden=4)
    model = MemoryModel(cfg, np.float64)
    from rnnkit.data.synthetic import make_batch

    _, y = make_batch(task, 3, 3, rng, np.float64)
    out_last = rng.standard_normal((3, 4))
    W, b = model.head.params["W"], model.head.params["b"]

    def loss():
        logits = out_last @ W + b
        if task == "adding":
            return np.array(mse_forward(logits[:, 0], y)[0])
        return np.array(softmax_cross_entropy(logits, y[-1])[0])

    num = numerical_grad(loss, out_last, np.array(1.0))
    assert rel_error(num, model.last_step_grad(out_last, y)) < 1e-7


# --- command line ----------------------------------------------------------------------------------


def test_train_eval_adding_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "adding", "--cell", "lstm", "--length", "6", "--hidden", "5", "--batch", "8",
            "--test-size", "16", "--eval-every", "2", "--out", str(out), "--json"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args + ["--steps", "4", "--force", "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] == straight["step"] == 4
    assert math.isclose(resumed["test_mse"], straight["test_mse"], rel_tol=1e-12)
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "adding" and ev["config"]["length"] == 6
    assert math.isclose(ev["baseline"], 1 / 6) and ev["solved"] is False


def test_train_eval_copy(tmp_path, capsys):
    out = tmp_path / "copy"
    assert main(["train", "copy", "--cell", "gru", "--length", "3", "--hidden", "6", "--batch", "4",
                 "--steps", "2", "--eval-every", "2", "--test-size", "8", "--out", str(out),
                 "--no-progress"]) == 0
    assert "copy task, T=3" in capsys.readouterr().out
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "copy" and 0 <= ev["test_acc"] <= 1
    assert math.isclose(ev["baseline"], 10 * math.log(8) / 23)


def test_experiment_vanishing_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "van"
    assert main(["experiment", "vanishing", "--lengths", "4,6", "--cells", "rnn,lstm", "--steps", "2",
                 "--eval-every", "1", "--hidden", "3", "--batch", "4", "--test-size", "8",
                 "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [(r["cell"], r["length"]) for r in res["rows"]] == [("rnn", 4), ("rnn", 6), ("lstm", 4),
                                                               ("lstm", 6)]
    assert all(r["solved"] == (r["test_mse"] < 0.01) for r in res["rows"])
    saved = json.loads((out / "vanishing.json").read_text())
    assert len(saved["curves"]["lstm/6"]["init"]["dh"]) == 7  # h_0 .. h_6
    assert "dc" in saved["curves"]["lstm/6"]["init"]
    md = (out / "vanishing.md").read_text()
    assert "| rnn | 4 |" in md and "| lstm | 6 |" in md
    for cell in ("rnn", "lstm"):
        assert (out / f"gradient_flow_{cell}.png").read_bytes()[:4] == b"\x89PNG"
    # a second experiment into the same folder is refused, leaving the first, unless --force
    argv = ["experiment", "vanishing", "--lengths", "4", "--cells", "rnn", "--steps", "1",
            "--hidden", "2", "--batch", "2", "--test-size", "4", "--out", str(out)]
    assert main(argv) == 2
    assert "holds an earlier experiment" in capsys.readouterr().err
    assert json.loads((out / "vanishing.json").read_text()) == saved
    assert main(argv + ["--force"]) == 0
    assert json.loads((out / "vanishing.json").read_text())["settings"]["cells"] == ["rnn"]


@pytest.mark.parametrize("argv, message", [
    (["train", "adding", "--length", "0"], "--length/-T: expected a positive integer"),
    (["train", "copy", "--steps", "x"], "--steps: invalid int value: 'x'"),
    (["train", "adding", "--optimizer", "lion"], "--optimizer: invalid choice: 'lion'"),
    (["experiment", "vanishing", "--cells", "rnn,tcn"], "--cells: expected a comma-separated subset"),
    (["experiment", "vanishing", "--lengths", "50,1"], "--lengths: expected comma-separated integers"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_run_directories(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1
    out = tmp_path / "run"
    main(["train", "adding", "--length", "3", "--hidden", "2", "--steps", "1", "--test-size", "4",
          "--out", str(out), "--no-progress"])
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "x.txt"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "adding", "--length", "3", "--steps", "1", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


# --- the shared training flags (rnnkit.cli._training) -----------------------------------------------

SMALL = ["--length", "3", "--hidden", "2", "--batch", "4", "--test-size", "4", "--no-progress"]
TINY = ["train", "adding", *SMALL]


def _train_meta(out):
    return json.loads((out / "last.json").read_text())["meta"]["train"]


def test_defaults_of_the_training_flags(tmp_path):
    out = tmp_path / "run"
    assert main(TINY + ["--steps", "1", "--out", str(out)]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["lr"], t["clip"], t["weight_decay"], t["schedule"]) == \
        ("adam", 1e-2, 1.0, 0.0, "constant")
    assert (t["eval_every"], t["checkpoint_every"], t["patience"], t["ema"]) == (200, 200, 0, 0.0)


@pytest.mark.parametrize("task", ["adding", "copy"])
def test_shared_flags_reach_the_run_and_a_resumed_run_keeps_them(task, tmp_path):
    out = tmp_path / "run"
    base = ["train", task, *SMALL, "--out", str(out)]
    assert main(base + ["--steps", "2", "--eval-every", "2", "--optimizer", "adamw", "--weight-decay",
                        "0.01", "--lr", "0.005", "--ema", "0.9"]) == 0
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["lr"], t["ema"]) == ("adamw", 0.01, 0.005, 0.9)
    assert (t["eval_every"], t["checkpoint_every"]) == (2, 2)  # follows --eval-every
    assert main(base + ["--steps", "4", "--resume"]) == 0  # flags not given: the run's own
    t = _train_meta(out)
    assert (t["optimizer"], t["weight_decay"], t["lr"], t["ema"], t["steps"]) == \
        ("adamw", 0.01, 0.005, 0.9, 4)
    assert t["eval_every"] == 2
    assert main(base + ["--steps", "6", "--resume", "--lr", "0.002", "--checkpoint-every", "3"]) == 0
    t = _train_meta(out)  # a flag given wins
    assert (t["optimizer"], t["lr"], t["steps"], t["checkpoint_every"]) == ("adamw", 0.002, 6, 3)


def test_resume_refuses_a_model_flag_that_differs_from_the_run(tmp_path, capsys):
    """A resumed run keeps its model and data: a flag that says otherwise is one line, not ignored;
    the same value again is accepted."""
    out = tmp_path / "run"
    base = ["train", "adding", *SMALL, "--out", str(out), "--eval-every", "2"]
    assert main(base + ["--steps", "2"]) == 0
    assert main(["train", "adding", "--out", str(out), "--resume", "--steps", "3", "--hidden", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: --hidden 7 differs from the run's") and err.count("\n") == 1
    assert _train_meta(out)["steps"] == 2  # nothing trained
    assert main(base + ["--steps", "3", "--resume"]) == 0  # the run's own values again: fine
    assert _train_meta(out)["steps"] == 3


def test_vanishing_summary_says_what_each_cell_learned():
    from rnnkit.cli.memory import markdown_table

    row = dict(flow_ratio_init=1e-3, flow_ratio_trained=0.5, seconds=1.0, steps=5, test_mse=0.005,
               diverged=False)
    rows = [dict(row, cell="gru", length=50, solved=True, solved_at=5),
            dict(row, cell="gru", length=100, solved=True, solved_at=5),
            dict(row, cell="rnn", length=50, solved=False, solved_at=None)]
    settings = {"steps": 5, "batch": 4, "lr": 0.01, "hidden": 4, "threshold": 0.01}
    text = markdown_table({"settings": settings, "rows": rows, "seconds": 2.0})
    assert "- gru: learns at T = 50, 100\n" in text
    assert "- rnn: learns at no length; not within the budget at T = 50\n" in text
