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


@pytest.mark.parametrize("task", ["lm", "caption", "translate", "classify", "adding", "copy"])
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
