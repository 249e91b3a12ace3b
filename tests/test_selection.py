"""The selection tasks, selective copying and induction heads: their generators, baselines, the model's
loss at the answer steps for every registered cell, the CLI verbs, `rnnkit eval` at other lengths, and
the flags they refuse."""

import json
import math

import numpy as np
import pytest

from cli_checks import assert_refused, make_old_run
from gradcheck import numerical_grad, rel_error
from rnnkit import cells
from rnnkit.cli import main
from rnnkit.data.synthetic import (
    SyntheticSource,
    induction_batch,
    make_batch,
    selection_baseline,
    selective_copy_batch,
    test_set as make_test_set,
)
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.memory import MemoryConfig, MemoryModel, evaluate_model
from rnnkit.tasks import load_memory_run

# --- generators ------------------------------------------------------------------------------------


def test_selective_copy_puts_the_data_tokens_in_order_among_noise_then_the_markers(rng):
    T, N, M, V = 20, 300, 5, 9
    x, y = selective_copy_batch(N, T, M, V, rng)
    assert x.shape == (T, N) and y.shape == (M, N) and x.dtype == y.dtype == np.int64
    assert np.all(x[T - M:] == V - 1)  # the markers, at the answer steps
    data = x[:T - M]
    assert np.all(data != V - 1)
    assert np.all((data != 0).sum(axis=0) == M)  # M data tokens, noise elsewhere
    assert np.all((y >= 1) & (y <= V - 2))
    for n in range(N):
        assert np.array_equal(data[:, n][data[:, n] != 0], y[:, n])  # in order
    first = (data != 0).argmax(axis=0)
    assert len(set(first.tolist())) > 5  # positions differ between sequences: selection by content
    assert set(np.unique(y)) == set(range(1, V - 1))  # every symbol drawn


def test_induction_target_is_the_token_after_the_first_trigger(rng):
    T, N, V = 12, 400, 7
    x, y = induction_batch(N, T, V, rng)
    assert x.shape == (T, N) and y.shape == (1, N)
    assert np.all(x[T - 1] == V - 1)
    assert np.all((x == V - 1).sum(axis=0) == 2)  # one trigger in the body, one at the end
    assert np.all((x >= 1) & (x <= V - 1))  # 0 (the no-op) never drawn
    p = (x[:T - 1] == V - 1).argmax(axis=0)
    assert p.max() <= T - 3
    assert np.array_equal(y[0], x[p + 1, np.arange(N)])
    assert np.all(y != V - 1)
    assert len(set(p.tolist())) == T - 2  # every trigger position 0..T-3 occurs


@pytest.mark.parametrize("task", ["selective-copy", "induction"])
def test_generators_are_seeded_and_give_the_length(task):
    opts = {"tokens": 3, "vocab": 6}
    a = make_batch(task, 4, 10, np.random.default_rng(3), **opts)
    b = make_batch(task, 4, 10, np.random.default_rng(3), **opts)
    c = make_batch(task, 4, 10, np.random.default_rng(4), **opts)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    for T in (7, 33):
        x, y = make_test_set(task, T, size=5, seed=1, **opts)
        assert x.shape == (T, 5) and y.shape == (3 if task == "selective-copy" else 1, 5)


def test_source_with_options_round_trips_through_json():
    src = SyntheticSource("selective-copy", 12, batch_size=3, seed=5, tokens=4, vocab=8)
    src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    a = src.next_batch()
    other = SyntheticSource("selective-copy", 12, batch_size=3, seed=99, tokens=4, vocab=8)
    other.load_state_dict(state)
    b = other.next_batch()
    assert a[1].shape == (4, 3) and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("call, message", [
    (lambda r: selective_copy_batch(2, 8, 4, 16, r), "T >= 2M \\+ 1"),
    (lambda r: selective_copy_batch(2, 9, 4, 3, r), "V >= 4"),
    (lambda r: induction_batch(2, 2, 16, r), "T >= 3"),
    (lambda r: induction_batch(2, 5, 3, r), "V >= 4"),
])
def test_generators_refuse_what_they_cannot_make(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(rng)


def test_a_uniform_guess_has_the_chance_baseline(rng):
    V = 16
    _, y = selective_copy_batch(50, 24, 6, V, rng)
    logits = np.full(y.shape + (V,), -1e4)
    logits[..., 1:V - 1] = 0.0  # a uniform guess among the V-2 symbols
    loss, _ = softmax_cross_entropy(logits, y)
    assert math.isclose(loss, selection_baseline(V)[0], rel_tol=1e-9)
    assert selection_baseline(V) == (math.log(14), 1 / 14)


# --- the model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["selective-copy", "induction"])
@pytest.mark.parametrize("cell", cells.names())
def test_model_gradients_at_the_answer_steps(task, cell, rng):
    cfg = MemoryConfig(task=task, length=7, tokens=2, vocab=5, cell=cell, hidden=3)
    model = MemoryModel(cfg, np.float64)
    x, y = make_batch(task, 2, 7, rng, np.float64, **cfg.data_options())
    model.zero_grad()
    loss, dpred = model.loss(x, y)
    assert dpred.shape == (cfg.answers(), 2, 5)
    model.backward(dpred)
    nums, grads = [], []
    for name, p, g in model.named_parameters():
        num = numerical_grad(lambda: np.array(model.loss(x, y)[0]), p, np.array(1.0))
        # the differences' round-off, ~1e-10 on a loss of ~2.6, is up to 1e-5 of a cell's smallest
        # gradients at init; a loss reaching the wrong steps is wrong by far more
        assert rel_error(num, g) < 1e-4, name
        nums.append(num.ravel())
        grads.append(g.ravel())
    assert rel_error(np.concatenate(nums), np.concatenate(grads)) < 1e-7


def test_evaluation_counts_the_answers_and_the_whole_sequences(rng):
    cfg = MemoryConfig(task="selective-copy", length=9, tokens=3, vocab=6, hidden=2)
    model = MemoryModel(cfg, np.float64)
    x, y = make_batch("selective-copy", 10, 9, rng, **cfg.data_options())
    guess = y.copy()
    guess[0, :4] = (y[0, :4] % 4) + 1  # 4 of the first answers wrong: 4 sequences wrong
    model.forward = lambda xb: np.eye(6)[guess[:, :xb.shape[1]]]
    fig = evaluate_model(model, x, y)
    assert math.isclose(fig["test_acc"], 26 / 30) and math.isclose(fig["test_seq_acc"], 6 / 10)
    assert math.isclose(fig["chance_acc"], 1 / 4) and math.isclose(fig["baseline"], math.log(4))


# --- command line ----------------------------------------------------------------------------------

SMALL = ["--hidden", "4", "--batch", "4", "--test-size", "6", "--eval-every", "2", "--no-progress"]


def test_train_eval_and_resume_selective_copy(tmp_path, capsys):
    out = tmp_path / "sc"
    args = ["train", "selective-copy", "--cell", "gru", "--length", "11", "--tokens", "3",
            "--vocab", "7", *SMALL, "--out", str(out), "--json"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args + ["--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] == straight["step"] == 4
    assert math.isclose(resumed["test_loss"], straight["test_loss"], rel_tol=1e-12)
    assert main(["eval", str(out)]) == 0
    said = capsys.readouterr().out
    assert "selective copying, T=11, M=3, V=7" in said and "(chance 0.200)" in said
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "selective-copy" and ev["config"]["tokens"] == 3
    assert 0 <= ev["test_seq_acc"] <= ev["test_acc"] <= 1 and math.isclose(ev["chance_acc"], 1 / 5)
    task, meta = load_memory_run(out)
    assert task.cfg.vocab == 7 and meta["step"] == 4


def test_train_induction_and_eval_at_longer_lengths(tmp_path, capsys):
    out = tmp_path / "ih"
    assert main(["train", "induction", "--length", "8", *SMALL, "--steps", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "induction heads, T=8, V=16" in said and "(chance 0.071)" in said
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [r["length"] for r in ev["lengths"]] == [8, 16, 32, 64, 128]  # 1x to 16x by default
    assert ev["lengths"][0]["test_acc"] == ev["test_acc"]
    assert main(["eval", str(out), "--lengths", "16,200"]) == 0
    said = capsys.readouterr().out
    assert "length     16 (2x)" in said and "length    200 (25x)" in said
    assert main(["train", "induction", "--length", "8", *SMALL, "--steps", "2", "--out",
                 str(tmp_path / "rnn"), "--cell", cells.names()[-1]]) == 0  # any registered cell


@pytest.mark.parametrize("argv, msg", [
    (["train", "selective-copy", "--length", "8", "--tokens", "4"],
     "--length 8: too short for --tokens 4; selective copying needs at least 2 x tokens + 1 = 9"),
    (["train", "selective-copy", "--vocab", "3"], "--vocab 3: expected at least 4"),
    (["train", "induction", "--vocab", "2"], "--vocab 2: expected at least 4"),
    (["train", "induction", "--length", "2"], "--length 2: expected at least 3"),
])
def test_bad_selection_flags_are_refused_before_the_run_is_touched(argv, msg, tmp_path, capsys):
    out = make_old_run(tmp_path / "old")
    assert_refused(capsys, argv + ["--force", "--out", str(out)], msg, out)


def test_bad_eval_lengths(tmp_path, capsys):
    out = tmp_path / "sc"
    assert main(["train", "selective-copy", "--length", "9", "--tokens", "2", *SMALL, "--steps", "1",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--lengths", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: --lengths: only for induction and recall runs")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        main(["eval", str(out), "--lengths", "16,x"])
    assert e.value.code == 2
    assert "--lengths: expected comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "induction", "--tokens", "4"])  # selective copying's flag alone
    assert e.value.code == 2 and "--tokens" in capsys.readouterr().err
