"""What every `rnnkit train <task>` verb shares (rnnkit.cli._training): --resume with --force is refused
before the run directory is read or removed; a flag argparse refuses is one line."""

import pytest

from cli_checks import assert_refused, make_old_run


def _argv(task, tmp_path):
    """The verb's required arguments; none of the files exist, since nothing may be read."""
    missing = str(tmp_path / "missing")
    return {
        "lm": ["train", "lm", "--data", missing],
        "caption": ["train", "caption", "--images", missing, "--captions", missing],
        "translate": ["train", "translate"],
        "classify": ["train", "classify", "--train", missing, "--dev", missing],
        "adding": ["train", "adding"],
        "copy": ["train", "copy"],
    }[task]


TASKS = ["lm", "caption", "translate", "classify", "adding", "copy"]


@pytest.mark.parametrize("task", TASKS)
def test_resume_with_force_is_refused_and_keeps_the_old_run(task, tmp_path, capsys):
    out = make_old_run(tmp_path / "run")
    assert_refused(capsys, _argv(task, tmp_path) + ["--out", str(out), "--resume", "--force"],
                   "--resume and --force: choose one", out)


@pytest.mark.parametrize("argv,message", [
    (["train", "translate", "--optimizer", "lion"], "rnnkit train translate: error: argument "
     "--optimizer: invalid choice: 'lion'"),
    (["train", "lm", "--steps", "x"], "rnnkit train lm: error: argument --steps: invalid int value"),
    (["trian"], "rnnkit: error: argument <verb>: invalid choice: 'trian'"),
    (["train", "classify"], "rnnkit train classify: error: the following arguments are required: "
     "--train, --dev"),
])
def test_a_flag_argparse_refuses_is_one_line(argv, message, capsys):
    """No thirty-line usage block before the line that says what was wrong."""
    from rnnkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert err.rstrip().endswith("--help`")


def _float_flags(parser, path=()):
    """(verb path, flag) of every option of the parser and its subparsers that takes a float."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _float_flags(sub, path + (name,))
        elif action.type is float and action.option_strings:
            yield path, action.option_strings[0]


def test_every_float_flag_refuses_nan_and_inf(capsys):
    """A nan passes every range check (each comparison is False): argparse refuses it, naming the
    flag, before any verb sees it."""
    from rnnkit.cli import build_parser, main

    flags = list(_float_flags(build_parser()))
    assert {("train", "lm", "--lr"), ("train", "lm", "--dropout"), ("sample", "--temperature"),
            ("train", "classify", "--weight-decay")} <= {(*p, f) for p, f in flags}
    for path, flag in flags:
        for value in ("nan", "inf", "-inf", "NaN"):
            with pytest.raises(SystemExit) as e:
                main([*path, f"{flag}={value}"])  # "=": argparse takes a lone -inf for a flag
            assert e.value.code == 2
            err = capsys.readouterr().err
            assert f"error: argument {flag}: expected a finite number, got '{value}'" in err, err
            assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["train", "lm", "--lr", "x"])
    assert "argument --lr: invalid float value: 'x'" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,msg", [
    ("--steps", "0", "--steps: expected a positive integer, got 0"),
    ("--minutes", "0", "--minutes: expected a positive number, got 0.0"),
    ("--lr", "0", "--lr: expected a positive number, got 0.0"),
    ("--weight-decay", "-0.1", "--weight-decay: expected a number >= 0, got -0.1"),
    ("--clip", "-1", "--clip: expected a number >= 0"),
    ("--eval-every", "0", "--eval-every: expected a positive integer, got 0"),
    ("--checkpoint-every", "0", "--checkpoint-every: expected a positive integer, got 0"),
    ("--patience", "-1", "--patience: expected an integer >= 0, got -1"),
    ("--ema", "1", "--ema: expected a number in [0, 1)"),
])
@pytest.mark.parametrize("task", TASKS)
def test_bad_training_flag_is_one_line_and_keeps_the_old_run(task, flag, value, msg, tmp_path, capsys):
    """Every verb checks the shared training flags (`_training.check`) before it reads its data or
    `--force` removes the old run."""
    out = make_old_run(tmp_path / "run")
    assert_refused(capsys, _argv(task, tmp_path) + ["--out", str(out), "--force", flag, value], msg, out)


@pytest.mark.parametrize("task", TASKS)
def test_unknown_optimizer_is_refused_by_name(task, tmp_path, capsys):
    from rnnkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(_argv(task, tmp_path) + ["--optimizer", "lion"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --optimizer: invalid choice: 'lion'" in err and "adamw" in err

