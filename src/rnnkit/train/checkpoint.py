"""Safe checkpoints: arrays in safetensors, everything else in JSON beside them; never pickle.

A checkpoint `NAME` in a run directory is two files:
    NAME.json                    {"format": "rnnkit-checkpoint", "version": 1, "task": ..., "weights":
                                  "NAME.<token>.safetensors", "sha256": ..., "meta": {...}}
    NAME.<token>.safetensors     every array (model weights, optimizer state), flat names

Writes are atomic: each file goes to a temporary name, is fsynced and renamed into place; the JSON, written
last, names its weights file by a fresh token and checksum, so a crash at any moment leaves either the
old checkpoint or the new one, never a torn mix. The old weights file is removed only after the new JSON
is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import numpy as np

from rnnkit.errors import UserError

FORMAT = "rnnkit-checkpoint"
VERSION = 1


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path, data: bytes):
    """Write `data` to `path` via a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_json_atomic(path, obj):
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path, what="file"):
    """Read a JSON object; a missing, unreadable or malformed file is a UserError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read {what} ({e.__class__.__name__})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def _safetensors():
    """The optional `safetensors` package, or a UserError saying how to install it."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise UserError("checkpoints need the safetensors package: pip install 'rnnkit[train]'") from None
    return safetensors


def save_checkpoint(run_dir, name, arrays: dict, task: str, meta: dict):
    """Write checkpoint `name` (e.g. "last", "best") into `run_dir` atomically."""
    save = _safetensors().numpy.save

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    weights = f"{name}.{secrets.token_hex(4)}.safetensors"
    write_bytes_atomic(run_dir / weights, data)
    index = run_dir / f"{name}.json"
    old = None
    if index.exists():
        try:
            old = json.loads(index.read_text()).get("weights")
        except (OSError, ValueError):
            old = None
    write_json_atomic(index, {"format": FORMAT, "version": VERSION, "task": task, "weights": weights,
                              "sha256": hashlib.sha256(data).hexdigest(), "meta": meta})
    if old and old != weights and (run_dir / old).exists() and "/" not in old:
        (run_dir / old).unlink()


def has_checkpoint(run_dir, name="last"):
    return (Path(run_dir) / f"{name}.json").exists()


def load_checkpoint(run_dir, name="last", task=None):
    """Return (arrays, meta, task) of checkpoint `name`; anything but a valid one is a UserError."""
    st = _safetensors()
    SafetensorError, load = st.SafetensorError, st.numpy.load

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    index = run_dir / f"{name}.json"
    if not index.exists():
        raise UserError(f"{run_dir}: not an rnnkit run directory (no {name}.json checkpoint)")
    info = read_json(index, "checkpoint index")
    if info.get("format") != FORMAT or not isinstance(info.get("weights"), str):
        raise UserError(f"{index}: not a valid rnnkit checkpoint (format field missing or wrong)")
    if info.get("version") != VERSION:
        raise UserError(f"{index}: checkpoint version {info.get('version')!r}, expected {VERSION}")
    if task is not None and info.get("task") != task:
        raise UserError(f"{run_dir}: a run of task {info.get('task')!r}, expected {task!r}")
    wname = info["weights"]
    if "/" in wname or "\\" in wname or wname.startswith("."):
        raise UserError(f"{index}: weights file name {wname!r} is not a plain file name")
    wpath = run_dir / wname
    try:
        data = wpath.read_bytes()
    except OSError:
        raise UserError(f"{wpath}: checkpoint weights missing") from None
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise UserError(f"{wpath}: checksum mismatch (file corrupted or replaced)")
    try:
        arrays = load(data)
    except (SafetensorError, ValueError, OSError, TypeError) as e:
        raise UserError(f"{wpath}: not a valid safetensors file ({e})") from None
    meta = info.get("meta")
    if not isinstance(meta, dict):
        raise UserError(f"{index}: not a valid rnnkit checkpoint (meta missing)")
    return arrays, meta, info.get("task")


def prepare_run_dir(path, resume=False, force=False):
    """Make sure `path` can hold a new run: an existing non-empty directory needs --resume or --force.

    With --force the old checkpoints and metrics are removed (the user asked for it); other files stay.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path}: exists and is not a directory")
    if resume:
        if not has_checkpoint(path):
            raise UserError(f"--resume: {path} holds no checkpoint to resume from")
        return path
    if path.exists() and any(path.iterdir()):
        if not force:
            raise UserError(f"--out {path}: directory exists and is not empty; use --resume to continue "
                            f"the run or --force to start over")
        for p in path.iterdir():
            if p.suffix in (".json", ".safetensors", ".jsonl", ".png") and p.is_file():
                p.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path
