"""The generic training loop on a toy task: it learns, resumes exactly, checkpoints, logs, stops."""

import json

import numpy as np
import pytest

from rnnkit.errors import UserError
from rnnkit.functional import softmax_cross_entropy
from rnnkit.layers import LSTM, Dropout, Embedding, Linear
from rnnkit.train import IndexBatches, LengthBatches, StreamBatches, TrainConfig, fit, load_checkpoint


class ToyStreamTask:
    """Next-token prediction on a periodic stream with truncated BPTT, dropout and a carried state."""

    task = "toy"

    def __init__(self, V=7, seed=0, dropout=0.3):
        self.emb = Embedding(V, 8, seed=seed)
        self.rnn = LSTM(8, 16, num_layers=2, dropout=dropout, seed=seed + 1)
        self.drop = Dropout(dropout, seed=seed + 2)
        self.head = Linear(16, V, seed=seed + 3)
        self.modules = {"emb": self.emb, "rnn": self.rnn, "drop": self.drop, "head": self.head}
        self.state = None
        self.evals = 0

    def train_step(self, batch):
        if batch.reset or self.state is None:
            self.state = self.rnn.init_state(batch.x.shape[1])
        out, self.state = self.rnn.forward(self.emb.forward(batch.x), self.state)
        loss, dlogits = softmax_cross_entropy(self.head.forward(self.drop.forward(out)), batch.y)
        dx, _ = self.rnn.backward(self.drop.backward(self.head.backward(dlogits)))
        self.emb.backward(dx)
        return {"loss": loss, "tokens": batch.x.size}

    def evaluate(self):
        self.evals += 1
        x = np.tile(np.arange(7), 6)[:, None]
        out, _ = self.rnn.forward(self.emb.forward(x[:-1]))
        loss, _ = softmax_cross_entropy(self.head.forward(out), x[1:])
        return {"val_loss": loss, "bumpy": float(self.evals % 2)}

    def extra_state(self):
        if self.state is None:
            return {}, {"has_state": False}
        return {"h": self.state[0], "c": self.state[1]}, {"has_state": True}

    def load_extra_state(self, arrays, obj):
        self.state = (arrays["h"].copy(), arrays["c"].copy()) if obj["has_state"] else None


def _source(seed=0):
    ids = np.tile(np.arange(7), 60)
    return StreamBatches(ids, batch_size=4, seq_len=9, seed=seed)


def _weights(task):
    return {f"{n}.{k}": v.copy() for n, m in task.modules.items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_reaches_the_same_weights(tmp_path, optimizer):
    N = 24
    kw = dict(optimizer=optimizer, lr=0.01, eval_every=5, checkpoint_every=7, log_every=3, momentum=0.9)
    straight = ToyStreamTask()
    fit(straight, _source(), TrainConfig(steps=N, **kw), tmp_path / "a", {"toy": 1}, progress=False)

    half = ToyStreamTask()
    fit(half, _source(), TrainConfig(steps=N // 2, **kw), tmp_path / "b", {"toy": 1}, progress=False)
    resumed = ToyStreamTask(seed=99)  # different initial weights and generators: all must be restored
    summary = fit(resumed, _source(seed=5), TrainConfig(steps=N, **kw), tmp_path / "b", {"toy": 1},
                  resume=True, progress=False)
    assert summary["step"] == N
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    # the metrics file of the resumed run holds the same train lines as the straight one
    la = [json.loads(s) for s in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    ta = [(r["step"], round(r["loss"], 5)) for r in la if r["kind"] == "train"]
    tb = [(r["step"], round(r["loss"], 5)) for r in lb if r["kind"] == "train"]
    assert ta == tb


def test_weight_average_resumes_exactly_and_is_what_best_holds(tmp_path):
    N = 20
    kw = dict(lr=0.01, eval_every=5, checkpoint_every=7, ema=0.9)
    straight = ToyStreamTask()
    fit(straight, _source(), TrainConfig(steps=N, **kw), tmp_path / "a", {}, progress=False)
    fit(ToyStreamTask(), _source(), TrainConfig(steps=N // 2, **kw), tmp_path / "b", {}, progress=False)
    resumed = ToyStreamTask(seed=99)
    fit(resumed, _source(seed=5), TrainConfig(steps=N, **kw), tmp_path / "b", {}, resume=True,
        progress=False)
    la, _, _ = load_checkpoint(tmp_path / "a", "last", "toy")
    lb, _, _ = load_checkpoint(tmp_path / "b", "last", "toy")
    averages = [k for k in la if k.startswith("ema/")]
    assert averages and sorted(averages) == sorted(k for k in lb if k.startswith("ema/"))
    for k in averages:
        np.testing.assert_allclose(lb[k], la[k], rtol=0, atol=1e-6, err_msg=k)
    # the raw weights train on; the average differs from them, and the last eval saw the average
    w = _weights(straight)
    assert not np.allclose(la["ema/rnn.l0.Wh"], w["rnn.l0.Wh"])
    np.testing.assert_array_equal(la["rnn.l0.Wh"], w["rnn.l0.Wh"])
    best, meta, _ = load_checkpoint(tmp_path / "a", "best", "toy")
    if meta["step"] == N:  # the best checkpoint's model weights are the average at that step
        np.testing.assert_array_equal(best["rnn.l0.Wh"], la["ema/rnn.l0.Wh"])
    assert not any(k.startswith("ema/") for k in best)


def test_weight_average_follows_its_formula():
    from rnnkit.train.loop import WeightAverage

    p, g = np.array([1.0, 2.0]), np.zeros(2)
    avg = WeightAverage([("w", p, g)], decay=0.5)
    expected = p.copy()
    for step, value in enumerate([3.0, 5.0, -1.0], start=1):
        p[...] = value
        avg.update(step)
        d = min(0.5, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * p
        np.testing.assert_allclose(avg.average["w"], expected)
    with avg.swapped_in():
        np.testing.assert_allclose(p, expected)
    assert (p == -1.0).all()


def test_fit_learns_and_writes_the_run_dir(tmp_path):
    task = ToyStreamTask(dropout=0.0)
    cfg = TrainConfig(steps=60, lr=0.02, eval_every=20, checkpoint_every=20, log_every=10)
    s = fit(task, _source(), cfg, tmp_path, {"V": 7}, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    evals = [r for r in lines if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert all(r["tokens_per_s"] > 0 and "grad_norm" in r for r in train)
    assert s["best"] == min(r["val_loss"] for r in evals) and s["stopped"] == "steps"
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays, meta, t = load_checkpoint(tmp_path, "last", "toy")
    assert t == "toy" and meta["step"] == 60 and meta["config"] == {"V": 7}
    assert "optim/rnn.l0.Wx/m" in arrays and "extra/h" in arrays
    _, bmeta, _ = load_checkpoint(tmp_path, "best", "toy")
    assert bmeta["step"] == s["best_step"]


def test_early_stopping_on_max_monitor(tmp_path):
    # "bumpy" goes 1, 0, 1, 0...; with mode max it never beats the first eval, so patience 2 stops at
    # the third eval.
    task = ToyStreamTask()
    cfg = TrainConfig(steps=100, eval_every=2, monitor="bumpy", monitor_mode="max", patience=2)
    s = fit(task, _source(), cfg, tmp_path, {}, progress=False)
    assert s["stopped"] == "early_stopping" and s["step"] == 6 and s["best_step"] == 2


def test_time_budget_stops(tmp_path):
    s = fit(ToyStreamTask(), _source(), TrainConfig(steps=None, minutes=1e-9), tmp_path, {},
            progress=False)
    assert s["stopped"] == "minutes" and s["step"] == 0


def test_cosine_follows_the_clock_without_steps(tmp_path, monkeypatch):
    """--minutes alone with a cosine: the learning rate falls with the time spent (a fake clock that
    moves 1 s a call), from lr to its floor at the end of the budget."""
    from rnnkit.train import loop

    clock = iter(range(10**6))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    cfg = TrainConfig(steps=None, minutes=1.0, schedule="cosine", lr=0.1, log_every=1, eval_every=10**6,
                      checkpoint_every=10**6)
    s = fit(ToyStreamTask(), _source(), cfg, tmp_path, {}, progress=False)
    assert s["stopped"] == "minutes"
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["kind"] == "train"]
    assert len(lrs) > 5 and lrs[0] > 0.09 and lrs[-1] < 0.02
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_diverging_loss_is_a_user_error(tmp_path):
    class Nan(ToyStreamTask):
        def train_step(self, batch):
            return {"loss": float("nan"), "tokens": 1}

    with pytest.raises(UserError, match="diverged.*step 1"):
        fit(Nan(), _source(), TrainConfig(steps=3), tmp_path, {}, progress=False)


@pytest.mark.parametrize("field,value,flag", [("lr", -1.0, "--lr"), ("optimizer", "lbfgs", "--optimizer"),
                                              ("schedule", "linear", "--schedule"), ("steps", 0, "--steps"),
                                              ("ema", 1.0, "--ema")])
def test_bad_config_names_the_flag(tmp_path, field, value, flag):
    with pytest.raises(UserError, match=flag):
        fit(ToyStreamTask(), _source(), TrainConfig(**{field: value}), tmp_path, {}, progress=False)


def test_resume_refuses_another_task(tmp_path):
    fit(ToyStreamTask(), _source(), TrainConfig(steps=2), tmp_path, {}, progress=False)

    class Other(ToyStreamTask):
        task = "other"

    with pytest.raises(UserError, match="task 'toy', expected 'other'"):
        fit(Other(), _source(), TrainConfig(steps=4), tmp_path, {}, resume=True, progress=False)


def test_progress_bar_draws_on_a_tty(tmp_path):
    import io

    from rnnkit.train.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress(total_steps=10, stream=out, interval=0)
    bar.update(5, 2.0, 1234.0, 10.0)
    bar.message("step 5: val_loss 1.9")
    bar.close()
    text = out.getvalue()
    assert "5/10" in text and "loss 2.0000" in text and "1,234 tok/s" in text and "left 00:10" in text
    assert "val_loss 1.9\n" in text
    silent = Tty()
    off = Progress(total_steps=10, stream=silent, enabled=False)
    off.update(1, 1.0, 1.0, 1.0)
    off.message("x")
    assert silent.getvalue() == ""
    pipe = io.StringIO()  # not a tty: no bar, messages only
    p = Progress(total_steps=10, stream=pipe)
    p.update(1, 1.0, 1.0, 1.0)
    p.message("eval")
    assert pipe.getvalue() == "eval\n"


def test_stream_batches_cover_the_streams_and_resume():
    ids = np.arange(103)
    src = StreamBatches(ids, batch_size=4, seq_len=5, seed=1, shuffle_offset=False)
    b = src.next_batch()
    assert b.reset and b.x.shape == (5, 4)
    np.testing.assert_array_equal(b.x[:, 1], np.arange(25, 30))
    np.testing.assert_array_equal(b.y, b.x + 1)
    b2 = src.next_batch()
    assert not b2.reset and b2.x[0, 0] == 5
    src = StreamBatches(ids, batch_size=4, seq_len=5, seed=1)
    seen = [src.next_batch() for _ in range(7)]
    state = json.loads(json.dumps(src.state_dict()))
    nxt = [src.next_batch() for _ in range(9)]
    other = StreamBatches(ids, batch_size=4, seq_len=5, seed=2)
    other.load_state_dict(state)
    again = [other.next_batch() for _ in range(9)]
    assert any(b.reset for b in seen + nxt)
    for u, v in zip(nxt, again):
        np.testing.assert_array_equal(u.x, v.x)
        assert u.reset == v.reset
    with pytest.raises(ValueError, match="too short"):
        StreamBatches(np.arange(10), batch_size=4, seq_len=5)


def test_index_batches_reshuffle_and_resume():
    src = IndexBatches(10, 4, seed=3)
    first = [src.next_batch() for _ in range(3)]
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    nxt = [src.next_batch() for _ in range(5)]
    other = IndexBatches(10, 4, seed=9)
    other.load_state_dict(state)
    for u, v in zip(nxt, [other.next_batch() for _ in range(5)]):
        np.testing.assert_array_equal(u, v)


def test_length_batches_cover_each_item_with_little_padding_and_resume():
    """Every item once per epoch; batches hold items of similar length (ordered by the first column,
    ties by the second), so the padded length falls well below random batches'; the epoch's batch
    order is random; the state round-trips through JSON."""
    rng = np.random.default_rng(0)
    lengths = np.stack([rng.integers(1, 12, 2000), rng.integers(1, 14, 2000)], axis=1)
    src = LengthBatches(lengths, 32, seed=4, pool=10)
    epoch = [src.next_batch() for _ in range(63)]  # ceil(2000 / 32)
    assert sorted(np.concatenate(epoch).tolist()) == list(range(2000))
    padded = np.mean([lengths[b, 0].max() for b in epoch])
    rand = np.mean([lengths[b, 0].max() for b in IndexBatches(2000, 32, seed=4).epoch_batches(rng)])
    assert padded < 0.7 * rand
    spread = [lengths[b, 0].max() - lengths[b, 0].min() for b in epoch]
    assert np.median(spread) <= 1
    firsts = [lengths[b, 0].min() for b in epoch]
    assert firsts != sorted(firsts)  # batches shuffled, not a length ramp
    within = lengths[epoch[0]]
    keys = within[:, 0] * 100 + within[:, 1]
    assert np.all(np.diff(keys) >= 0)  # source length, then target length
    src.next_batch()
    state = json.loads(json.dumps(src.state_dict()))
    nxt = [src.next_batch() for _ in range(70)]
    other = LengthBatches(lengths, 32, seed=99, pool=10)
    other.load_state_dict(state)
    for u, v in zip(nxt, [other.next_batch() for _ in range(70)]):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="positive"):
        LengthBatches(lengths, 0)


def test_interrupt_keeps_the_last_checkpoint(tmp_path, capsys):
    class Stops(ToyStreamTask):
        def train_step(self, batch):
            if self.calls == 7:
                raise KeyboardInterrupt
            self.calls += 1
            return super().train_step(batch)

    task = Stops()
    task.calls = 0
    with pytest.raises(KeyboardInterrupt):
        fit(task, _source(), TrainConfig(steps=20, checkpoint_every=5), tmp_path, {})
    assert "interrupted at step 7; " in capsys.readouterr().err
    _, meta, _ = load_checkpoint(tmp_path, "last", "toy")
    assert meta["step"] == 5
