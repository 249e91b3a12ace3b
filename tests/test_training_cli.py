"""What every `rnnkit train <task>` verb shares (rnnkit.cli._training): --resume with --force is refused
before the run directory is read or removed."""

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
