"""Multi-query associative recall (Zoology's MQAR): the generator's invariants, the model's loss at the
query steps for every registered cell, the evaluation, the CLI verb and `rnnkit eval --lengths`, and the
flags it refuses."""

import json
import math

import numpy as np
import pytest

from cli_checks import assert_refused, make_old_run
from gradcheck import numerical_grad, rel_error
from rnnkit import cells
from rnnkit.cli import main
from rnnkit.data.synthetic import (
    RECALL_IGNORE,
    RECALL_POWER,
    SyntheticSource,
    make_batch,
    recall_answers,
    recall_baseline,
    recall_batch,
    recall_pairs_at,
    test_set as make_test_set,
)
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.memory import MemoryConfig, MemoryModel, evaluate_model
from rnnkit.tasks import load_memory_run

# --- the generator ---------------------------------------------------------------------------------


def test_pairs_come_first_keys_from_the_lower_half_values_from_the_upper(rng):
    T, N, P, V = 40, 300, 6, 32
    x, y = recall_batch(N, T, P, V, rng)
    assert x.shape == y.shape == (T, N) and x.dtype == y.dtype == np.int64
    keys, values = x[0:2 * P:2], x[1:2 * P:2]
    assert np.all((keys >= 1) & (keys < V // 2)) and np.all((values >= V // 2) & (values < V))
    for n in range(N):  # distinct within a sequence: each key names one value
        assert len(set(keys[:, n])) == P and len(set(values[:, n])) == P
    assert set(np.unique(keys)) == set(range(1, V // 2))  # every key and value drawn
    assert set(np.unique(values)) == set(range(V // 2, V))
    assert np.all(y[:2 * P] == RECALL_IGNORE)  # no answer among the pairs
    assert np.all((x >= 0) & (x < V))


def test_every_query_is_a_key_seen_before_and_its_answer_the_keys_value(rng):
    T, N, P, V = 36, 200, 5, 24
    x, y = recall_batch(N, T, P, V, rng)
    answer = y != RECALL_IGNORE
    assert np.all(answer.sum(axis=0) == P)  # one answer per pair
    steps, due = recall_answers(y)
    assert steps.shape == due.shape == (P, N) and np.all(np.diff(steps, axis=0) > 0)
    assert np.all(steps >= 2 * P) and np.all(steps <= T - 2) and np.all((steps - 2 * P) % 2 == 0)
    for n in range(N):
        pairs = dict(zip(x[0:2 * P:2, n], x[1:2 * P:2, n]))
        queried = x[steps[:, n], n]
        assert sorted(queried) == sorted(pairs)  # every key queried once
        assert [pairs[k] for k in queried] == list(due[:, n])
        assert np.array_equal(np.flatnonzero(answer[:, n]), steps[:, n])
    # the steps between the queries are noise from the whole vocabulary, not blanks
    rest = np.ones((T, N), bool)
    rest[:2 * P] = False
    rest[steps, np.arange(N)] = False
    assert len(np.unique(x[rest])) == V


def test_query_slots_follow_zoologys_power_law():
    """The slots of the queries, drawn at once with Gumbel noise, are distributed as Zoology's P
    successive draws without replacement (np.random.choice(replace=False, p))."""
    T, P, N = 40, 4, 6000
    slots = (T - 2 * P) // 2
    p = np.arange(1, slots + 1) ** (RECALL_POWER - 1)
    p /= p.sum()
    ref = np.random.default_rng(1)
    drawn = np.concatenate([ref.choice(slots, size=P, replace=False, p=p) for _ in range(N)])
    expected = np.bincount(drawn, minlength=slots) / drawn.size
    steps, _ = recall_answers(recall_batch(N, T, P, 256, np.random.default_rng(2))[1])
    got = np.bincount(((steps - 2 * P) // 2).ravel(), minlength=slots) / steps.size
    # each share's standard error is below sqrt(0.25 / 24000) = 0.0032 on either side
    assert np.abs(got - expected).max() < 0.015
    assert got[0] > 2 * got[3] > 0 and got[-1] > 0  # short gaps most often, every gap possible


def test_recall_is_seeded_and_its_test_set_fixed():
    a = make_batch("recall", 8, 24, np.random.default_rng(3), pairs=3, vocab=16)
    b = make_batch("recall", 8, 24, np.random.default_rng(3), pairs=3, vocab=16)
    c = make_batch("recall", 8, 24, np.random.default_rng(4), pairs=3, vocab=16)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    t1 = make_test_set("recall", 24, size=8, seed=0, pairs=3, vocab=16)
    t2 = make_test_set("recall", 24, size=8, seed=0, pairs=3, vocab=16)
    train = SyntheticSource("recall", 24, batch_size=8, seed=0, pairs=3, vocab=16).next_batch()
    assert np.array_equal(t1[0], t2[0]) and np.array_equal(t1[1], t2[1])
    assert not np.array_equal(t1[0], train[0])  # held out: not the training stream's first batch


def test_source_state_round_trips_through_json():
    src = SyntheticSource("recall", 20, batch_size=3, seed=5, pairs=2, vocab=12)
    src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    a = src.next_batch()
    other = SyntheticSource("recall", 20, batch_size=3, seed=99, pairs=2, vocab=12)
    other.load_state_dict(state)
    b = other.next_batch()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("T, P, V, message", [
    (15, 4, 64, "T >= 4P = 16"),
    (64, 8, 16, "P <= V // 2 - 1 = 7"),
    (64, 0, 16, "P >= 1"),
])
def test_generator_refuses_what_it_cannot_make(T, P, V, message, rng):
    with pytest.raises(ValueError, match=message):
        recall_batch(2, T, P, V, rng)


def test_generator_makes_what_is_at_its_limits(rng):
    x, y = recall_batch(3, 16, 4, 10, rng)  # T = 4P, P = V/2 - 1: each key once, every slot a query
    assert np.all((y != RECALL_IGNORE).sum(axis=0) == 4)
    assert np.array_equal(recall_answers(y)[0], np.tile(np.arange(8, 16, 2)[:, None], (1, 3)))


def test_pairs_scale_with_the_length_and_chance():
    assert [recall_pairs_at(4, 64, L) for L in (64, 128, 256, 512, 16)] == [4, 8, 16, 32, 1]
    assert recall_baseline(256) == (math.log(128), 1 / 128)


# --- the model -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", cells.names())
def test_model_gradients_at_the_query_steps(cell, rng):
    cfg = MemoryConfig(task="recall", length=10, pairs=2, vocab=8, embed=3, cell=cell, hidden=3)
    model = MemoryModel(cfg, np.float64)
    x, y = make_batch("recall", 2, 10, rng, np.float64, **cfg.data_options())
    model.zero_grad()
    loss, dpred = model.loss(x, y)
    assert dpred.shape == (2, 2, 8)
    model.backward(dpred)
    nums, grads = [], []
    for name, p, g in model.named_parameters():
        num = numerical_grad(lambda: np.array(model.loss(x, y)[0]), p, np.array(1.0))
        # the differences' round-off (~1e-10) is up to 1e-3 of Mamba's dt gradients (~1e-7) here; a
        # loss reaching the wrong steps is wrong by the gradients' own size
        assert rel_error(num, g) < 1e-4 or np.abs(num - g).max() < 1e-9, name
        nums.append(num.ravel())
        grads.append(g.ravel())
    assert rel_error(np.concatenate(nums), np.concatenate(grads)) < 1e-7
    assert any(name.startswith("embed.") for name, _, _ in model.named_parameters())


@pytest.mark.parametrize("embed", [0, 5])
def test_loss_is_the_cross_entropy_at_the_query_steps_alone(embed, rng):
    cfg = MemoryConfig(task="recall", length=16, pairs=3, vocab=10, embed=embed, hidden=6)
    model = MemoryModel(cfg, np.float64)
    x, y = make_batch("recall", 5, 16, rng, **cfg.data_options())
    every = model.forward(x)  # (T, N, V): the logits at every step
    assert every.shape == (16, 5, 10)
    answer = y != RECALL_IGNORE
    expected, _ = softmax_cross_entropy(every, np.where(answer, y, 0), answer)
    loss, _ = model.loss(x, y)
    assert math.isclose(loss, expected, rel_tol=1e-12)
    # the loss reads no step after the last query: a model that looked at the future would change
    last = int(recall_answers(y)[0].max())
    x2 = x.copy()
    x2[last + 1:] = (x2[last + 1:] + 1) % 10
    assert math.isclose(model.loss(x2, y)[0], loss, rel_tol=1e-12)


def test_evaluation_counts_the_queries_and_the_whole_sequences(rng):
    cfg = MemoryConfig(task="recall", length=16, pairs=3, vocab=12, hidden=2)
    model = MemoryModel(cfg, np.float64)
    x, y = make_batch("recall", 10, 16, rng, **cfg.data_options())

    def oracle(xb, at):
        """The value of each query's key, read from the pairs; the second answer wrong where the
        sequence's first key is odd."""
        cols = np.arange(xb.shape[1])
        keys, values = xb[0:6:2], xb[1:6:2]  # (P, N)
        which = (keys[None] == xb[at, cols][:, None]).argmax(axis=1)  # (K, N): the pair queried
        pred = values[which, cols]
        pred[1] = np.where(xb[0] % 2 == 1, 6 + (pred[1] - 5) % 6, pred[1])
        return np.eye(12)[pred]

    model.forward = oracle
    odd = int((x[0] % 2 == 1).sum())
    assert 0 < odd < 10
    fig = evaluate_model(model, x, y, batch=4)  # three batches, the last of two sequences
    assert math.isclose(fig["test_acc"], (30 - odd) / 30)
    assert math.isclose(fig["test_seq_acc"], (10 - odd) / 10)
    assert fig["pairs"] == 3 and math.isclose(fig["chance_acc"], 1 / 6)
    assert math.isclose(fig["baseline"], math.log(6))


# --- command line ----------------------------------------------------------------------------------

SMALL = ["--hidden", "4", "--batch", "4", "--test-size", "6", "--eval-every", "2", "--no-progress"]


def test_train_eval_and_resume(tmp_path, capsys):
    out = tmp_path / "ar"
    args = ["train", "recall", "--cell", "gru", "--length", "24", "--pairs", "3", "--vocab", "16",
            "--embed", "5", *SMALL, "--out", str(out), "--json"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args + ["--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["step"] == straight["step"] == 4
    assert math.isclose(resumed["test_loss"], straight["test_loss"], rel_tol=1e-12)
    assert main(["eval", str(out)]) == 0
    said = capsys.readouterr().out
    assert "associative recall, T=24, 3 pairs, V=16" in said and "(chance 0.1250)" in said
    assert "length     48 (2x),   6 pairs" in said  # 1x-8x as far as 7 keys allow: 24 and 48
    assert "length     96" not in said
    assert main(["eval", str(out), "--json", "--lengths", "12,40"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["task"] == "recall" and ev["config"]["pairs"] == 3 and ev["config"]["embed"] == 5
    assert [(r["length"], r["pairs"]) for r in ev["lengths"]] == [(12, 1), (40, 5)]
    assert 0 <= ev["test_seq_acc"] <= ev["test_acc"] <= 1 and math.isclose(ev["chance_acc"], 1 / 8)
    task, meta = load_memory_run(out)
    assert task.cfg.vocab == 16 and meta["step"] == 4


def test_the_defaults_are_zoologys_small_configuration(tmp_path, capsys):
    out = tmp_path / "ar"
    assert main(["train", "recall", *SMALL, "--steps", "1", "--out", str(out), "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert (cfg["length"], cfg["vocab"], cfg["pairs"], cfg["embed"]) == (64, 256, 4, 32)


@pytest.mark.parametrize("cell", cells.names())
def test_every_registered_cell_trains(cell, tmp_path):
    assert main(["train", "recall", "--cell", cell, "--length", "8", "--pairs", "2", "--vocab", "8",
                 "--embed", "3", *SMALL, "--steps", "1", "--out", str(tmp_path / cell)]) == 0


@pytest.mark.parametrize("argv, msg", [
    (["train", "recall", "--length", "63", "--pairs", "16"],
     "--length 63: too short for --pairs 16; recall needs at least 4 x pairs = 64 steps"),
    (["train", "recall", "--pairs", "8", "--vocab", "16"],
     "--pairs 8: too many for --vocab 16; the keys are distinct, from 1..vocab/2 - 1, so at most 7"),
    (["train", "recall", "--vocab", "3", "--pairs", "1"], "--vocab 3: expected at least 4"),
    (["train", "recall", "--length", "3", "--pairs", "1", "--vocab", "8"],
     "--length 3: too short for --pairs 1"),
])
def test_bad_recall_flags_are_refused_before_the_run_is_touched(argv, msg, tmp_path, capsys):
    out = make_old_run(tmp_path / "old")
    assert_refused(capsys, argv + ["--force", "--out", str(out)], msg, out)


def test_bad_eval_lengths(tmp_path, capsys):
    out = tmp_path / "ar"
    assert main(["train", "recall", "--length", "16", "--pairs", "2", "--vocab", "12", *SMALL,
                 "--steps", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    for lengths, msg in (("16,3", "--lengths: length 3 is too short for its 1 pairs"),
                         ("48", "--lengths: length 48 scales to 6 pairs: too many for --vocab 12")):
        assert main(["eval", str(out), "--lengths", lengths]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rnnkit: error: {msg}") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:
        main(["train", "recall", "--tokens", "4"])  # selective copying's flag
    assert e.value.code == 2 and "--tokens" in capsys.readouterr().err
