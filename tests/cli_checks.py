"""Checks shared by the command-line tests of the `rnnkit train <task>` verbs."""

from rnnkit.cli import main
from rnnkit.train.checkpoint import LOCK

# What --force would remove. Not a readable checkpoint: a verb that read it would fail naming last.json.
OLD_RUN = {"last.json": b"{}", "last.safetensors": b"x", "metrics.jsonl": b"{}\n", "loss.png": b"png"}


def make_old_run(out):
    out.mkdir()
    for name, data in OLD_RUN.items():
        (out / name).write_bytes(data)
    return out


def assert_refused(capsys, argv, msg, out):
    """`rnnkit ARGV` exits 2 with the one line `rnnkit: error: MSG...`, and the old run in `out` (from
    `make_old_run`) is as it was (beside the lock file of a run in progress there): refused before
    anything was read or removed."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnkit: error: {msg}") and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK} == OLD_RUN
