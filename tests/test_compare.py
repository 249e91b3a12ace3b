"""`rnnkit compare`: the runs and the files it writes, the parameter matching, a failing cell's row, the
speed table and the flags it refuses. Tiny budgets: a few updates on a small test set."""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from rnnkit import cells
from rnnkit.cells.rnn import RNNCell
from rnnkit.cli import main
from rnnkit.report.compare import plot_curves, write_page
from rnnkit.tasks import load_lm_run, load_memory_run
from rnnkit.tasks.compare import CompareConfig, count_parameters, match_hidden, run_compare, \
    sized_spec, speed_table, cell_spec, TASKS

# the parameter matching's stated tolerance at the selection tasks' ~21.5K parameters: the closest
# count lies within half a step of H of the target, which is under 3% for every built-in cell
TOLERANCE = 0.03


def tiny(**kw):
    return CompareConfig(**{"updates": 3, "eval_every": 2, "test_size": 40, "gen_seconds": 0.01,
                            "progress": False, **kw})


def test_two_cells_write_runs_and_files(tmp_path):
    out = tmp_path / "cmp"
    result = run_compare(tiny(cells=["lstm", "mingru"]), out)
    png = plot_curves(result, out / "loss.png")
    page = write_page(out, result)

    saved = json.loads((out / "compare.json").read_text())
    assert [r["cell"] for r in saved["rows"]] == ["lstm", "mingru"]
    for row in saved["rows"]:
        assert row["status"] == "ok", row
        assert row["steps"] == 3 and 0 <= row["test_acc"] <= 1 and row["val_loss"] > 0
        assert row["train_tokens_per_s"] > 0 and row["gen_tokens_per_s"] > 0
        assert [p[0] for p in saved["curves"][row["cell"]]] == [2, 3]  # an evaluation each 2, and last
        # an ordinary run directory: `rnnkit eval` opens it, at the size the row reports
        task, meta = load_memory_run(out / row["cell"])
        assert (task.cfg.cell, task.cfg.layers, task.cfg.hidden) == (row["cell"], row["layers"],
                                                                     row["hidden"])
        assert task.model.num_parameters() == row["params"]
        assert meta["step"] == 3
    lstm = saved["rows"][0]
    assert lstm["state_floats"] == 2 * 2 * lstm["hidden"]  # h and c of each of the 2 layers
    md = (out / "compare.md").read_text()
    assert md.count("| lstm | 2 x") == 1 and md.count("| mingru | 2 x") == 1
    text = page.read_text()
    assert "<table>" in text and "http" not in text.replace("http-equiv", "")  # nothing fetched
    if png is not None:  # matplotlib installed: the picture is inlined, not linked
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "src='data:image/png;base64," in text


def test_an_earlier_comparison_is_kept_without_force(tmp_path):
    out = tmp_path / "cmp"
    run_compare(tiny(cells=["rnn"], updates=1), out)
    before = (out / "compare.json").read_bytes()
    with pytest.raises(Exception, match="holds an earlier comparison"):
        run_compare(tiny(cells=["rnn"], updates=1), out)
    assert (out / "compare.json").read_bytes() == before
    run_compare(tiny(cells=["rnn"], updates=2, force=True), out)
    assert json.loads((out / "compare.json").read_text())["rows"][0]["steps"] == 2


@pytest.mark.parametrize("layers", [1, 2])
def test_hidden_sizes_match_the_target(layers):
    cfg = CompareConfig(layers=layers)
    P = cfg.target()
    entry = TASKS[cfg.task]

    def count(cell, h):
        return count_parameters(entry.build(cell_spec(cfg, cell, h), cfg, None))

    for cell in cells.names():
        spec, n = sized_spec(cfg, cell, None)
        assert n == count(cell, spec.hidden) and spec.layers == layers
        assert abs(n - P) <= TOLERANCE * P, (cell, spec.hidden, n)
        for other in (spec.hidden - 1, spec.hidden + 1):  # no neighbouring size is closer
            assert abs(n - P) <= abs(count(cell, other) - P), (cell, spec.hidden, other)


def test_match_hidden_is_the_closest_of_all_sizes():
    def count(h):  # monotone, with a flat stretch, as a rounded dt_rank makes Mamba's
        return 7 * h * h + 30 * h + 11 * (h // 5)

    for target in (1, 40, 41, 500, 12_345, 99_999, 1_000_003):
        h, n = match_hidden(count, target)
        assert n == count(h)
        best = min(range(1, 2000), key=lambda k: (abs(count(k) - target), k))
        assert h == best, target


@dataclass
class _DivergingCell(RNNCell):
    """The RNN with every output NaN: its first forward fails (the head refuses the NaN)."""

    name = "diverges"
    summary = "test cell: NaN outputs"

    def forward(self, x, state, p, mask=None, **kw):
        y, final, cache = super().forward(x, state, p, mask, **kw)
        return y * np.nan, final, cache


def test_a_failing_cell_is_marked_and_the_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(cells, "_REGISTRY", dict(cells._REGISTRY))  # registered for this test only
    cells.register(_DivergingCell)
    result = run_compare(tiny(cells=["diverges", "gru"]), tmp_path / "cmp")
    bad, good = result["rows"]
    assert bad["status"] == "failed" and "NaN" in bad["error"] and bad["hidden"] >= 1
    assert good["status"] == "ok" and good["steps"] == 3
    assert "| diverges |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert "failed: ValueError" in (tmp_path / "cmp" / "compare.md").read_text()


def test_lm_task_on_a_small_text(tmp_path):
    text = tmp_path / "t.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(list("abc de\n"), 6000)))
    out = tmp_path / "cmp"
    result = run_compare(tiny(task="lm", cells=["gru"], params=3000, data=str(text)), out)
    row = result["rows"][0]
    assert row["status"] == "ok" and row["steps"] == 3 and row["test_acc"] is None
    assert row["metric"] == row["val_loss"] > 0
    assert abs(row["params"] - 3000) <= TOLERANCE * 3000
    model, vocab, meta, _ = load_lm_run(out / "gru")  # `rnnkit sample` opens it
    assert model.num_parameters() == row["params"] and len(vocab) == 7


def test_speed_table(tmp_path):
    cfg = tiny(cells=["lstm", "mingru"], lengths=[8, 32], speed_batch=2)
    result = speed_table(cfg, tmp_path)
    assert set(result["tokens_per_s"]) == {"lstm", "mingru"}
    for by_length in result["tokens_per_s"].values():
        assert set(by_length) == {"8", "32"} and min(by_length.values()) > 0
    md = (tmp_path / "speed.md").read_text()
    assert "| T = 8 | T = 32 |" in md and md.count("| lstm | 2 x") == 1
    assert json.loads((tmp_path / "speed.json").read_text()) == result


def test_the_verb_writes_its_files(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--cells", "rnn", "--updates", "2", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"][0]["steps"] == 2
    assert {p.rsplit("/", 1)[-1] for p in printed["files"]} >= {"compare.json", "compare.md",
                                                                "compare.html"}


@pytest.mark.parametrize("argv, message", [
    (["--cells", "lstm,nosuch"], "rnnkit: error: --cells: unknown cell 'nosuch'"),
    (["--params", "0"], "rnnkit: error: --params: expected a positive parameter count, got 0"),
    (["--minutes", "0"], "rnnkit: error: --minutes: expected a positive number"),
    (["--speed", "--updates", "5"], "rnnkit: error: --speed times the stacks"),
    (["--task", "lm", "--data", "/nonexistent/t.txt"], "rnnkit: error: --task lm: no text at"),
    (["--data", "t.txt"], "rnnkit: error: --data: --task selective-copy generates its data"),
    (["--layers", "2,nosuch=1"], "rnnkit: error: --layers: unknown cell 'nosuch'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main(["compare", *argv, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()  # refused before anything was written


@pytest.mark.parametrize("argv, message", [
    (["--minutes", "1", "--updates", "5"], "argument --updates: not allowed with argument --minutes"),
    (["--layers", "2,lstm=0"], "argument --layers: expected positive layer counts"),
    (["--updates", "0"], "argument --updates: expected a positive integer"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["compare", *argv, "--out", str(tmp_path / "c")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("task", [t for t, entry in TASKS.items() if not entry.reads_data])
def test_every_generated_task_runs(tmp_path, task):
    row = run_compare(tiny(task=task, cells=["rnn"], updates=1), tmp_path)["rows"][0]
    assert row["status"] == "ok" and row["steps"] == 1 and 0 <= row["test_acc"] <= 1
