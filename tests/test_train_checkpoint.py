"""Checkpoints: random bytes and malformed files give only the documented one-line UserErrors; a save
interrupted at any point leaves a loadable checkpoint."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.cli import main
from rnnkit.tasks.lm import load_run
from rnnkit.errors import UserError
from rnnkit.train.checkpoint import load_checkpoint, prepare_run_dir, save_checkpoint

FAST = settings(max_examples=50, deadline=None)


def _one_line(e):
    msg = str(e)
    assert msg and "\n" not in msg
    return msg


def _valid(d: Path):
    save_checkpoint(d, "last", {"model.w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "lm",
                    {"config": {"x": 1}, "step": 3})


@FAST
@given(st.binary(max_size=400))
def test_random_index_bytes(data):
    d = Path(tempfile.mkdtemp())
    try:
        (d / "last.json").write_bytes(data)
        with pytest.raises(UserError) as e:
            load_checkpoint(d, "last", "lm")
        _one_line(e.value)
    finally:
        shutil.rmtree(d)


@FAST
@given(st.binary(max_size=400), st.booleans())
def test_random_weights_bytes(data, fix_checksum):
    d = Path(tempfile.mkdtemp())
    try:
        _valid(d)
        info = json.loads((d / "last.json").read_text())
        (d / info["weights"]).write_bytes(data)
        if fix_checksum:  # a file that passes the checksum must still be refused if it is not safetensors
            info["sha256"] = hashlib.sha256(data).hexdigest()
            (d / "last.json").write_text(json.dumps(info))
        try:
            arrays, _, _ = load_checkpoint(d, "last", "lm")
        except UserError as e:
            _one_line(e)
        else:
            assert isinstance(arrays, dict)
    finally:
        shutil.rmtree(d)


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8))
def test_random_meta_is_refused_by_the_lm_loader(meta):
    d = Path(tempfile.mkdtemp())
    try:
        _valid(d)
        info = json.loads((d / "last.json").read_text())
        info["meta"] = meta
        (d / "last.json").write_text(json.dumps(info))
        with pytest.raises(UserError) as e:
            load_run(d, "last")
        _one_line(e.value)
    finally:
        shutil.rmtree(d)


def test_messages(tmp_path):
    _valid(tmp_path)
    arrays, meta, task = load_checkpoint(tmp_path, "last", "lm")
    assert task == "lm" and meta["step"] == 3 and arrays["model.w"].shape == (2, 3)
    info = json.loads((tmp_path / "last.json").read_text())
    with pytest.raises(UserError, match="checksum mismatch"):
        (tmp_path / info["weights"]).write_bytes(b"x" + (tmp_path / info["weights"]).read_bytes()[1:])
        load_checkpoint(tmp_path, "last", "lm")
    os.unlink(tmp_path / info["weights"])
    with pytest.raises(UserError, match="checkpoint weights missing"):
        load_checkpoint(tmp_path, "last", "lm")
    info["weights"] = "../../etc/passwd"
    (tmp_path / "last.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="not a plain file name"):
        load_checkpoint(tmp_path, "last", "lm")
    (tmp_path / "last.json").write_text("{}")
    with pytest.raises(UserError, match="not a valid rnnkit checkpoint"):
        load_checkpoint(tmp_path, "last", "lm")


def test_cli_refuses_garbage_run_dirs(tmp_path, capsys):
    (tmp_path / "last.json").write_bytes(os.urandom(64))
    for argv in (["sample", str(tmp_path)], ["eval", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnkit: error: ") and err.count("\n") == 1


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """A crash between writing the new weights and the new index: the old index still names the old,
    intact weights file."""
    _valid(tmp_path)
    import rnnkit.train.checkpoint as ck

    real = ck.write_json_atomic

    def crash(path, obj):
        raise KeyboardInterrupt  # the process dies before the index is replaced

    monkeypatch.setattr(ck, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "last", {"model.w": np.zeros((2, 3), np.float32)}, "lm",
                        {"config": {}, "step": 4})
    monkeypatch.setattr(ck, "write_json_atomic", real)
    arrays, meta, _ = load_checkpoint(tmp_path, "last", "lm")
    assert meta["step"] == 3 and arrays["model.w"][1, 2] == 5
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _locked_by_another_process(run_dir):
    """Whether a fresh process is refused the lock of run_dir."""
    import subprocess
    import sys

    import rnnkit

    code = ("import sys; from rnnkit.errors import UserError; from rnnkit.train.checkpoint import "
            "lock_run_dir\ntry:\n    lock_run_dir(sys.argv[1])\nexcept UserError as e:\n    print(e)")
    env = {**os.environ, "PYTHONPATH": str(Path(rnnkit.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return f"a run is in progress there (pid {os.getpid()})" in out


def test_run_dir_lock_lasts_until_released_and_an_inner_hold_keeps_it(tmp_path):
    from rnnkit.train.checkpoint import hold_run_dir, release_run_dir

    run_dir = prepare_run_dir(tmp_path / "run")
    try:
        assert _locked_by_another_process(run_dir)
        with hold_run_dir(run_dir):  # what fit does: this process holds it already
            pass
        assert _locked_by_another_process(run_dir)
        assert prepare_run_dir(run_dir) == run_dir  # this process's own lock is no obstacle
    finally:
        release_run_dir(run_dir)
    assert not _locked_by_another_process(run_dir)
    with hold_run_dir(run_dir):
        assert _locked_by_another_process(run_dir)
    assert not _locked_by_another_process(run_dir)
