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
    (["eval", "run", "--beam", "0"], "rnnkit eval: error: argument --beam: expected a positive integer, "
     "got '0'"),
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
    ("--warmup", "5", "--warmup 5: only the cosine schedule warms up (--schedule constant ignores it"),
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



def _data_argv(task, tmp_path):
    """The verb's arguments with a data file that is not there, for the verbs that read files."""
    extra = ["--data", str(tmp_path / "missing")] if task == "translate" else []
    return _argv(task, tmp_path) + extra


@pytest.mark.parametrize("task", ["lm", "caption", "translate", "classify"])
def test_force_with_a_missing_data_file_keeps_the_old_run(task, tmp_path, capsys):
    """--force removes the old run only once the new run's data has been read."""
    out = make_old_run(tmp_path / "run")
    missing = str(tmp_path / "missing")
    assert_refused(capsys, _data_argv(task, tmp_path) + ["--out", str(out), "--force"],
                   f"--data {missing}" if task == "translate" else missing, out)


def _python(*argv, **kw):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import rnnkit

    env = {**os.environ, "PYTHONPATH": str(Path(rnnkit.__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, *argv], env=env, **kw)


HOLD = ("import sys, time; from rnnkit.train.checkpoint import lock_run_dir; "
        "lock_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(600)")


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/run (with an old run in it), as a training there does;
    ended by kill -9."""
    import subprocess

    out = make_old_run(tmp_path / "run")
    proc = _python("-c", HOLD, str(out), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"held\n"
    yield out, proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("flags", [["--force"], ["--resume"], []])
@pytest.mark.parametrize("task", TASKS)
def test_a_run_in_progress_in_out_is_refused_and_kept(task, flags, holder, tmp_path, capsys):
    """A second training into --out, or a --force or --resume there, while a run is going: refused,
    naming the pid, before the old run is read or removed."""
    out, proc = holder
    assert_refused(capsys, _argv(task, tmp_path) + ["--out", str(out), *flags],
                   f"--out {out}: a run is in progress there (pid {proc.pid})", out)


def test_a_killed_run_leaves_no_lock(tmp_path, capsys):
    """Two real trainings into one --out: the second is refused while the first runs; once the first
    is killed (-9, no clean-up of its own) the second may start over."""
    import os
    import time

    from rnnkit.cli import main
    from rnnkit.train.checkpoint import LOCK

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    out = tmp_path / "run"
    tiny = ["train", "lm", "--data", str(text), "--out", str(out), "--hidden", "8", "--layers", "1",
            "--embed", "4", "--batch", "2", "--seq-len", "8", "--no-progress"]
    first = _python("-m", "rnnkit", *tiny, "--minutes", "10", "--checkpoint-every", "1")
    try:
        deadline = time.monotonic() + 120
        while not ((out / "last.json").exists() and (out / LOCK).exists()
                   and (out / LOCK).read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        for flags in (["--force"], ["--resume"]):
            assert main(tiny + ["--steps", "2", *flags]) == 2
            err = capsys.readouterr().err
            assert err == (f"rnnkit: error: --out {out}: a run is in progress there "
                           f"(pid {first.pid})\n")
    finally:
        first.kill()  # SIGKILL
        first.wait()
    assert (out / LOCK).exists()  # left behind, but no longer locked
    assert main(tiny + ["--steps", "2", "--force", "--json"]) == 0
    assert '"step": 2' in capsys.readouterr().out
    assert main(tiny + ["--steps", "3", "--resume"]) == 0
    assert os.path.getsize(out / LOCK) > 0
