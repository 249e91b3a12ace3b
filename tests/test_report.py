"""`rnnkit report DIR`: a self-contained page with the loss curves, the gradient flow, the gates and the
activation viewer, for memory-task runs, language models, and runs with metrics only; bad input."""

import base64
import json
import re

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.layers import LSTM, Embedding, Linear, Module
from rnnkit.report.html import _quantize, build_report, telling_units
from rnnkit.report.probe import text_features, text_probe

TEXT = ('He said "hello (there)" and left.\nShe said "bye [now, ok]" twice.\n'
        'Then (after a while) they met "again".\n') * 6


class TinyLM(Module):
    """A next-character model assembled from layers: what the report needs of a language model."""

    def __init__(self, V, E=6, H=8, layers=2):
        super().__init__()
        self.embed = Embedding(V, E, seed=0)
        self.rnn = LSTM(E, H, num_layers=layers, seed=1)
        self.head = Linear(H, V, seed=2)


def lm_report(tmp_path, view_chars=200):
    """Write the report of a tiny (untrained) LM over TEXT; returns (path, page, H)."""
    chars = sorted(set(TEXT))
    ids = np.array([chars.index(c) for c in TEXT])
    model = TinyLM(len(chars))
    probe = text_probe(model, ids, lambda i: chars[i], title="tiny LM", flow_len=40, flow_batch=4,
                       view_chars=view_chars)
    records = [{"kind": "train", "step": s, "loss": 3.0 / s} for s in range(1, 30)]
    records.append({"kind": "eval", "step": 29, "val_loss": 0.2, "bits_per_char": 0.3})
    page = build_report(tmp_path, records, "lm", {"step": 29, "config": {"model": {"cell": "lstm"}}},
                        probe)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, page, model.rnn.hidden_size


def payload(page):
    m = re.search(r'<script type="application/json" id="rnnkit-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def assert_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "<script src" not in page and "@import" not in page and "url(http" not in page
    assert "data:image/png;base64," in page


def test_lm_report_has_every_section_and_decodable_activations(tmp_path):
    _, page, H = lm_report(tmp_path)
    assert_self_contained(page)
    for section in ("Loss curves", "Gradient flow", "Gates", "Activations", "Most telling units"):
        assert section in page
    data = payload(page)
    assert len(data["tokens"]) == 200 and "".join(data["tokens"]) == TEXT[:200]
    names = [(c["layer"], c["kind"]) for c in data["channels"]]
    assert names == [(f"layer {k}", g) for k in (0, 1) for g in ("h", "c", "i", "f", "o", "g")]
    for c in data["channels"]:
        assert len(base64.b64decode(c["data"])) == 200 * H == c["T"] * c["H"]
    assert {"inside double quotes", "inside brackets", "position in line"} <= set(data["features"])
    assert data["telling"] and all(abs(d["r"]) <= 1 for d in data["telling"])
    assert abs(data["telling"][0]["r"]) >= abs(data["telling"][-1]["r"])


def test_text_features():
    f = text_features(list('a "b(c)" d\nxy'))
    assert list(f["inside double quotes"]) == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert list(f["inside brackets"]) == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert list(f["position in line"]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1]
    assert "digit" not in f  # constant features are dropped


def test_telling_units_finds_the_unit_that_tracks_a_feature(rng):
    T, H = 50, 5
    feature = (np.arange(T) % 7 < 3).astype(float)
    h = rng.standard_normal((T, 1, H))
    h[:, 0, 3] = 0.8 * feature - 0.1
    c = rng.standard_normal((T, 1, H))
    c[:, 0, 1] = -2 * np.arange(T)
    acts = [("layer 0", {"h": h, "c": c})]
    top = telling_units(acts, {"in span": feature, "step": np.arange(T, dtype=float)}, top=2)
    assert top[0]["r"] == pytest.approx(1.0) or top[0]["r"] == pytest.approx(-1.0)
    best = {d["feature"]: d for d in top if abs(d["r"]) > 0.999}
    assert (best["in span"]["channel"], best["in span"]["unit"]) == (0, 3)
    assert (best["step"]["channel"], best["step"]["unit"], best["step"]["r"]) == (1, 1, -1.0)


def test_quantized_activations_round_trip(rng):
    a = rng.standard_normal((20, 6)) * np.array([0.1, 1, 5, 20, 0.5, 2])
    data, scale = _quantize(a, signed=True)
    q = np.frombuffer(data, np.uint8).reshape(20, 6)
    back = (q / 127.5 - 1) * scale
    assert np.all(np.abs(back - a) <= scale / 127 + 1e-12)
    g = rng.uniform(0, 1, (20, 6))
    data, scale = _quantize(g, signed=False)
    assert scale is None and np.all(np.abs(np.frombuffer(data, np.uint8).reshape(20, 6) / 255 - g) <= 1 / 255)


@pytest.mark.parametrize("task", ["adding", "copy"])
def test_report_of_a_memory_task_run(task, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", task, "--cell", "lstm", "--length", "12", "--hidden", "6", "--batch", "8",
                 "--steps", "4", "--eval-every", "2", "--test-size", "16", "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["report", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    page = (run / "report.html").read_text()
    assert out["report"] == str(run / "report.html")
    assert_self_contained(page)
    assert f"lstm on the {task} task, T=12" in page and "Gradient flow" in page and "Gates" in page
    data = payload(page)
    if task == "adding":
        assert len(data["tokens"]) == 12 and sum(data["marks"]) == 2
        assert "markers seen" in data["features"]
    else:  # 10 symbols, T-1 blanks, the delimiter (marked), 10 blanks
        assert len(data["tokens"]) == 32 and data["marks"].index(True) == 21
        assert data["tokens"][21] == ":" and "recall phase" in data["features"]


def test_report_of_a_language_model_run(tmp_path, capsys):
    pytest.importorskip("rnnkit.cli.lm")
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3, encoding="utf-8")
    run = tmp_path / "lm"
    assert main(["train", "lm", "--data", str(text), "--hidden", "8", "--layers", "1", "--embed", "4",
                 "--seq-len", "8", "--batch", "2", "--steps", "3", "--eval-every", "3", "--out", str(run),
                 "--no-progress"]) == 0
    out = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(out), "--chars", "50"]) == 0
    page = out.read_text()
    assert_self_contained(page)
    assert "character language model" in page
    data = payload(page)
    assert len(data["tokens"]) == 50 and {c["kind"] for c in data["channels"]} == set("hcifog")


def test_report_of_a_mamba_language_model_shows_its_state_and_step_sizes(tmp_path):
    """A cell whose state is not h (Mamba's conv and SSM state): the gradient flow of its SSM state,
    the viewer's channels from what the cell declares (its state parts, dt, the gate), its options."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3, encoding="utf-8")
    run = tmp_path / "lm"
    assert main(["train", "lm", "--cell", "mamba", "--state-size", "4", "--data", str(text),
                 "--hidden", "8", "--layers", "1", "--embed", "8", "--seq-len", "8", "--batch", "2",
                 "--steps", "3", "--eval-every", "3", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(out), "--chars", "50"]) == 0
    page = out.read_text()
    assert_self_contained(page)
    assert "Mamba cell's ssm state" in page and "cell_options.state_size" in page
    assert {c["kind"] for c in payload(page)["channels"]} == {"conv", "ssm", "dt", "gate"}


def test_report_of_an_rwkv_language_model_shows_its_decays_and_state_norms(tmp_path):
    """RWKV-7: the gradient flow of its matrix state, the viewer's channels its state norms, token
    shifts, decays w and in-context learning rates a, across two layers (the value residual)."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT * 3, encoding="utf-8")
    run = tmp_path / "lm"
    assert main(["train", "lm", "--cell", "rwkv", "--head-size", "4", "--data", str(text),
                 "--hidden", "8", "--layers", "2", "--embed", "8", "--seq-len", "8", "--batch", "2",
                 "--steps", "3", "--eval-every", "3", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(out), "--chars", "50"]) == 0
    page = out.read_text()
    assert_self_contained(page)
    assert "RWKV7 cell's wkv state" in page and "cell_options.head_size" in page
    assert {c["kind"] for c in payload(page)["channels"]} == {"tshift", "wkv", "cshift", "w", "a"}


def test_run_with_metrics_but_no_checkpoint_gets_the_loss_curves(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"kind": "train", "step": s, "loss": 1 / s}) for s in range(1, 5)) + "\n")
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Loss curves" in page and "Activations" not in page
    assert payload(page)["channels"] == []


@pytest.mark.parametrize("setup, message", [
    (None, "no such run directory"),
    ("empty dir", "no metrics.jsonl"),
    ("empty metrics", "no metrics recorded"),
    ("bad metrics", "malformed JSON at line 2"),
    ("a file", "not a directory"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, setup, message):
    target = tmp_path / "run"
    if setup == "a file":
        target.write_text("x")
    elif setup is not None:
        target.mkdir()
        if setup == "empty metrics":
            (target / "metrics.jsonl").write_text("\n")
        if setup == "bad metrics":
            (target / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\n{"step": 2,\n')
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_chars_must_be_sensible(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--chars", "3"]) == 2
    assert "--chars" in capsys.readouterr().err
