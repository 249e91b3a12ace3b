"""A reader that stops early (`rnnkit sample RUN | head -1`) ends the command quietly: no traceback,
and the status of a program that SIGPIPE ended (141), as coreutils' in the same pipe."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rnnkit
from rnnkit.cli import BROKEN_PIPE_STATUS, main
from test_classify_cli import make_tsv

SRC = str(Path(rnnkit.__file__).resolve().parents[1])
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipes")
    (d / "text.txt").write_text(TEXT)
    assert main(["train", "lm", "--data", str(d / "text.txt"), "--out", str(d / "lm"), "--hidden", "8",
                 "--layers", "1", "--embed", "4", "--batch", "2", "--seq-len", "8", "--steps", "2",
                 "--no-progress"]) == 0
    make_tsv(d / "train.tsv", 40, 0)
    make_tsv(d / "dev.tsv", 10, 1)
    assert main(["train", "classify", "--train", str(d / "train.tsv"), "--dev", str(d / "dev.tsv"),
                 "--out", str(d / "cls"), "--embed-dim", "4", "--hidden", "4", "--steps", "2",
                 "--quiet"]) == 0
    (d / "lines.txt").write_text("a good film\n" * 5000)
    return d


def _rnnkit(argv, read):
    """Run `rnnkit ARGV` with stdout a pipe of which `read` bytes are read before it is closed (0:
    closed before the command starts, so that its first write fails). Returns (status, stderr)."""
    env = {**os.environ, "PYTHONPATH": SRC}
    r, w = os.pipe()
    if not read:
        os.close(r)
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], stdout=w, stderr=subprocess.PIPE,
                            env=env)
    os.close(w)
    if read:
        with os.fdopen(r, "rb") as f:
            assert len(f.read(read)) == read
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


@pytest.mark.parametrize("argv,read", [
    (["sample", "{d}/lm", "--length", "100000"], 0),
    (["sample", "{d}/lm", "--length", "100000"], 10),  # stops after some characters, as head does
    (["eval", "{d}/lm", "--json"], 0),
    (["predict", "{d}/cls", "{d}/lines.txt"], 0),
    (["predict", "{d}/cls", "{d}/lines.txt"], 100),
])
def test_a_reader_that_stops_early_ends_the_command_quietly(runs, argv, read):
    status, err = _rnnkit([a.format(d=runs) for a in argv], read)
    assert status == BROKEN_PIPE_STATUS and err == "", err
