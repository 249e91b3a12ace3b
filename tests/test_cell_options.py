"""A cell's options from the registry to the models and the command line (rnnkit.cli._cells):
every verb with --cell has one flag per option of the registered cells, plugins included (the IndRNN
example's u_max, a cell registered here); the chosen cell's reach its model's `cell_options`, are
saved with the run and kept on --resume; a flag for a cell without that option is refused in one
line; a config saved without `cell_options` still loads."""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import numpy as np
import pytest

from cli_checks import assert_refused, make_old_run
from rnnkit import cells
from rnnkit.cells.rnn import RNNCell
from rnnkit.cli import main
from rnnkit.data.text import CharVocab
from rnnkit.models.captioner import Captioner, CaptionerConfig
from rnnkit.models.classifier import ClassifierConfig, SentenceClassifier
from rnnkit.models.lm import CharLM, LMConfig
from rnnkit.models.memory import MemoryConfig, MemoryModel
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.tasks import load_lm_run, load_memory_run
from rnnkit.train.checkpoint import save_checkpoint
from test_adding_a_cell import indrnn  # noqa: F401 - registers "indrnn" (u_max) as a plugin is
from test_caption_cli import toy  # noqa: F401 - a fixture: captioned PNGs

TEXT = "the cat sat on the mat and the dog sat on the log. " * 20
SMALL_LM = ["--hidden", "8", "--embed", "4", "--layers", "1", "--batch", "2", "--seq-len", "8",
            "--eval-every", "2", "--no-progress", "--json"]
SMALL_ADDING = ["--length", "6", "--hidden", "4", "--batch", "4", "--test-size", "8",
                "--eval-every", "2", "--no-progress", "--json"]


@dataclasses.dataclass
class KnobCell(RNNCell):
    """The vanilla RNN with options of every kind a flag can take; the math ignores them."""

    hidden: int = dataclasses.field(default=0, metadata={"help": "a name the verbs use already"})
    seed: int = dataclasses.field(default=0, metadata={"help": "one some declare late"})
    flip: bool = dataclasses.field(default=False, metadata={"help": "a switch"})
    mode: Literal["near", "far"] = dataclasses.field(default="near", metadata={"help": "a choice"})
    sizes: tuple = (1, 2)  # no flag can give a tuple

    name = "knob"
    title = "Knob"
    summary = "an RNN with knobs"


@pytest.fixture
def knob(monkeypatch):
    monkeypatch.setattr(cells, "_REGISTRY", dict(cells._REGISTRY))  # registered for this test only
    cells.register(KnobCell)


def _json_out(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _saved_model(out):
    return json.loads((out / "last.json").read_text())["meta"]["config"]


def _help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


VERBS = {
    "lm": ["train", "lm"], "classify": ["train", "classify"], "adding": ["train", "adding"],
    "copy": ["train", "copy"], "selective-copy": ["train", "selective-copy"],
    "induction": ["train", "induction"], "translate": ["train", "translate"],
    "caption": ["train", "caption"], "vanishing": ["experiment", "vanishing"],
}


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_with_a_cell_has_the_registry_options_as_flags(verb, capsys, knob):
    text = _help(capsys, VERBS[verb])
    assert "--u-max U_MAX indrnn: the recurrent weights u start uniform" in text
    assert "--forget-bias FORGET_BIAS" in text and "--update-bias UPDATE_BIAS" in text
    assert "--nonlinearity NONLINEARITY rnn, knob: tanh | relu" in text  # rnn_relu presets it
    # the test cell's: its `hidden` beside the verbs' own --hidden, a switch, a choice; no tuple
    assert "--cell-hidden HIDDEN knob: a name the verbs use already" in text
    assert "--cell-seed SEED knob: one some declare late" in text
    assert "--flip, --no-flip knob: a switch" in text and "--mode {near,far} knob: a choice" in text
    assert "--sizes" not in text


def test_lm_option_reaches_the_model_is_saved_and_kept_on_resume(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    base = ["train", "lm", "--data", str(tmp_path / "t.txt"), "--out", str(out), *SMALL_LM]
    assert _json_out(capsys, [*base, "--cell", "indrnn", "--u-max", "0.25", "--steps", "2"])["step"] == 2
    assert _saved_model(out)["model"]["cell_options"] == {"u_max": 0.25}
    model = load_lm_run(out, "last")[0]
    assert model.cfg.cell_options == {"u_max": 0.25} and model.rnn.cell.u_max == 0.25
    # resumed without the flag: the run's own option; with another value: refused
    assert _json_out(capsys, [*base, "--resume", "--steps", "4"])["step"] == 4
    assert _saved_model(out)["model"]["cell_options"] == {"u_max": 0.25}
    assert main([*base, "--resume", "--steps", "6", "--u-max", "0.5"]) == 2
    assert capsys.readouterr().err == ("rnnkit: error: --u-max 0.5 differs from the run's 0.25; a "
                                       "resumed run keeps its model\n")
    assert _json_out(capsys, [*base, "--resume", "--steps", "6", "--u-max", "0.25"])["step"] == 6


def test_flags_of_every_kind_reach_the_config(tmp_path, capsys, knob):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    _json_out(capsys, ["train", "lm", "--data", str(tmp_path / "t.txt"), "--out", str(out), *SMALL_LM,
                       "--steps", "1", "--cell", "knob", "--cell-hidden", "3", "--flip", "--mode",
                       "far"])
    assert _saved_model(out)["model"]["cell_options"] == {"hidden": 3, "flip": True, "mode": "far"}
    assert _saved_model(out)["model"]["hidden"] == 8


def test_memory_option_reaches_the_model_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "adding", "--out", str(out), *SMALL_ADDING]
    res = _json_out(capsys, [*base, "--cell", "indrnn", "--u-max", "0.5", "--steps", "2"])
    assert res["config"]["cell_options"] == {"u_max": 0.5}
    assert load_memory_run(out)[0].model.rnn.cell.u_max == 0.5
    assert _json_out(capsys, [*base, "--resume", "--steps", "4"])["config"]["cell_options"] == \
        {"u_max": 0.5}
    assert main([*base, "--resume", "--steps", "6", "--u-max", "0.7"]) == 2
    assert "--u-max 0.7 differs from the run's 0.5" in capsys.readouterr().err
    # memory's own --forget-bias stays a MemoryConfig field, for any cell, as before
    res = _json_out(capsys, ["train", "copy", "--out", str(tmp_path / "gru"), *SMALL_ADDING,
                             "--cell", "gru", "--forget-bias", "2", "--steps", "1"])
    assert res["config"]["forget_bias"] == 2.0 and res["config"]["cell_options"] == {}


def _other_verb(verb, tmp_path, request):
    """The arguments of a small run of `verb` on data made here."""
    if verb == "translate":
        return ["train", "translate", "--n-train", "40", "--n-test", "10", "--hidden", "4", "--emb",
                "4", "--beam", "1"]
    if verb == "classify":
        (tmp_path / "t.tsv").write_text("text\tlabel\ngood film\tpos\nbad film\tneg\n")
        return ["train", "classify", "--train", str(tmp_path / "t.tsv"), "--dev", str(tmp_path / "t.tsv"),
                "--hidden", "4", "--embed-dim", "4", "--subwords", "0", "--quiet"]
    images = request.getfixturevalue("toy")
    return ["train", "caption", "--images", str(images / "img"), "--captions",
            str(images / "caps.tsv"), "--size", "8", "--channels", "4", "--hidden", "4", "--embed",
            "4", "--min-count", "1", "--batch", "6", "--no-progress"]


@pytest.mark.parametrize("verb", ["translate", "classify", "caption"])
def test_the_other_verbs_save_the_option_and_keep_it_on_resume(verb, tmp_path, capsys, request):
    out = tmp_path / "run"
    base = [*_other_verb(verb, tmp_path, request), "--cell", "indrnn", "--out", str(out),
            "--eval-every", "1", "--json"]
    for extra in (["--u-max", "0.5", "--steps", "1"], ["--resume", "--steps", "2"]):
        assert main([*base, *extra]) == 0, capsys.readouterr().err
        config = _saved_model(out)
        assert config["model"].get("model", config["model"])["cell_options"] == {"u_max": 0.5}
        assert json.loads((out / "last.json").read_text())["meta"]["step"] == int(extra[-1])
    assert main([*base, "--resume", "--steps", "3", "--u-max", "0.25"]) == 2
    assert "--u-max 0.25 differs from the run's 0.5" in capsys.readouterr().err


def _missing(tmp_path):
    return str(tmp_path / "missing")  # never read: the flag is refused first


@pytest.mark.parametrize("verb,argv", [
    ("lm", ["--data", "{missing}"]),
    ("classify", ["--train", "{missing}", "--dev", "{missing}"]),
    ("adding", []), ("copy", []), ("selective-copy", []), ("induction", []), ("translate", []),
    ("caption", ["--images", "{missing}", "--captions", "{missing}"]),
])
def test_a_flag_for_a_cell_without_that_option_is_refused(verb, argv, tmp_path, capsys):
    out = make_old_run(tmp_path / "run")
    argv = [a.replace("{missing}", _missing(tmp_path)) for a in argv]
    assert_refused(capsys, [*VERBS[verb], *argv, "--cell", "lstm", "--u-max", "0.5", "--out", str(out),
                            "--force"], "--u-max: applies to indrnn, not lstm", out)
    assert_refused(capsys, [*VERBS[verb], *argv, "--cell", "indrnn", "--u-max", "0", "--out", str(out),
                            "--force"], "--u-max: u_max must be positive, got 0.0 (cell indrnn)", out)


def test_vanishing_gives_each_cell_the_options_it_has(tmp_path, capsys):
    base = ["experiment", "vanishing", "--lengths", "4", "--steps", "1", "--hidden", "4", "--batch", "4",
            "--eval-every", "1", "--test-size", "8", "--json"]
    assert main([*base, "--cells", "gru,rnn", "--forget-bias", "2", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == "rnnkit: error: --forget-bias: applies to lstm, not gru, rnn\n"
    res = _json_out(capsys, [*base, "--cells", "lstm,gru", "--forget-bias", "2", "--out",
                             str(tmp_path / "b")])
    assert res["settings"]["cell_options"] == {"forget_bias": 2.0}
    assert "Cell options {'forget_bias': 2.0}" in (tmp_path / "b" / "vanishing.md").read_text()


# --- the model configs ---------------------------------------------------------------------------


def _forget_bias(rnn):
    H = rnn.hidden_size
    return rnn.params["l0.b"][H:2 * H]


def test_lm_config_cell_options_round_trip_through_a_checkpoint(tmp_path):
    vocab = CharVocab.from_text(TEXT)
    cfg = LMConfig(vocab_size=len(vocab), hidden=6, embed=4, layers=1, cell_options={"forget_bias": 3.0})
    model = CharLM(cfg)
    assert np.all(_forget_bias(model.rnn) == 3.0)  # over the model's own 1.0
    save_checkpoint(tmp_path, "last", {f"model.{k}": v for k, v in model.state_dict().items()}, "lm",
                    {"config": {"model": dataclasses.asdict(cfg), "vocab": vocab.to_json()}})
    loaded = load_lm_run(tmp_path, "last")[0]
    assert loaded.cfg == cfg and np.array_equal(_forget_bias(loaded.rnn), _forget_bias(model.rnn))


def test_a_checkpoint_without_cell_options_loads_as_before(tmp_path):
    vocab = CharVocab.from_text(TEXT)
    cfg = LMConfig(vocab_size=len(vocab), hidden=6, embed=4, layers=1)
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cell_options"}
    save_checkpoint(tmp_path, "last", {f"model.{k}": v for k, v in CharLM(cfg).state_dict().items()},
                    "lm", {"config": {"model": old, "vocab": vocab.to_json()}})
    loaded = load_lm_run(tmp_path, "last")[0]
    assert loaded.cfg.cell_options == {} and np.all(_forget_bias(loaded.rnn) == 1.0)
    # the other configs read a saved dict without the field too
    assert ClassifierConfig.from_dict({"vocab_size": 5, "num_classes": 2}).cell_options == {}
    assert CaptionerConfig.from_dict({"vocab_size": 5}).cell_options == {}
    assert Seq2SeqConfig(**{"src_vocab": 5, "tgt_vocab": 5}).cell_options == {}
    assert MemoryConfig(**{"task": "adding", "cell": "gru"}).cell_options == {}


@pytest.mark.parametrize("build", [
    lambda o: CharLM(LMConfig(vocab_size=5, hidden=4, embed=4, cell="gru", cell_options=o)),
    lambda o: SentenceClassifier(ClassifierConfig(5, 2, embed_dim=4, hidden=4, cell="gru",
                                                  cell_options=o)),
    lambda o: MemoryModel(MemoryConfig(hidden=4, cell="gru", cell_options=o)),
    lambda o: Seq2Seq(Seq2SeqConfig(5, 5, emb=4, hidden=4, cell="gru", cell_options=o)),
    lambda o: Captioner(CaptionerConfig(5, cell="gru", embed=4, hidden=4, encoder="features",
                                        feature_shape=(3,), cell_options=o), 2, 3),
])
def test_every_model_refuses_an_option_its_cell_lacks(build):
    build({})
    with pytest.raises(ValueError, match="cell 'gru' has no option forget_bias"):
        build({"forget_bias": 1.0})


def test_every_model_passes_its_cell_options_on():
    o = {"u_max": 0.125}
    models = [CharLM(LMConfig(vocab_size=5, hidden=4, embed=4, cell="indrnn", cell_options=o)),
              SentenceClassifier(ClassifierConfig(5, 2, embed_dim=4, hidden=4, cell="indrnn",
                                                  cell_options=o)),
              MemoryModel(MemoryConfig(hidden=4, cell="indrnn", cell_options=o)),
              Captioner(CaptionerConfig(5, cell="indrnn", embed=4, hidden=4, encoder="features",
                                        feature_shape=(3,), cell_options=o), 2, 3)]
    seq = Seq2Seq(Seq2SeqConfig(5, 5, emb=4, hidden=4, cell="indrnn", cell_options=o))
    for rnn in [m.rnn for m in models] + [seq.encoder, seq.decoder]:
        assert rnn.cell.u_max == 0.125 and np.all(rnn.params["l0.u"] < 0.125)
