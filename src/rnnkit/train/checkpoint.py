"""Safe checkpoints: arrays in safetensors, everything else in JSON beside them; never pickle.

A checkpoint `NAME` in a run directory is two files:
    NAME.json                    {"format": "rnnkit-checkpoint", "version": 1, "task": ..., "weights":
                                  "NAME.<token>.safetensors", "sha256": ..., "meta": {...}}
    NAME.<token>.safetensors     every array (model weights, optimizer state), flat names

Writes are atomic: each file goes to a temporary name, is fsynced and renamed into place; the JSON, written
last, names its weights file by a fresh token and checksum, so a crash at any moment leaves either the
old checkpoint or the new one, never a torn mix. The old weights file is removed only after the new JSON
is in place.

A run directory is locked while a run writes to it (`lock_run_dir`, an advisory flock on its `LOCK`
file): a second training, or a --force or --resume, into the same directory is refused while the first
is going. The OS drops the lock with the process, so a run killed by any signal leaves none behind.

Under data-parallel training (`rnnkit.train.distributed`) the run directory is rank 0's alone: the
other ranks neither check, lock nor prepare it, and `load_checkpoint` reads on rank 0 and broadcasts
what it read (or its error), so the other ranks need no shared file system.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, run directories go unguarded
    fcntl = None

import numpy as np

from rnnkit.errors import UserError
from rnnkit.train import distributed

FORMAT = "rnnkit-checkpoint"
VERSION = 1
LOCK = ".rnnkit.lock"  # in a run directory: its lock, holding the pid of the run that holds it
_held = {}  # real path of a run directory -> descriptor of its lock file, for this process's locks


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
    """Return (arrays, meta, task) of checkpoint `name`; anything but a valid one is a UserError.
    Under MPI every rank calls it: rank 0 reads, the others receive."""
    comm = distributed.world()
    if comm.size == 1:
        return _load_checkpoint(run_dir, name, task)
    got = None
    if comm.rank == 0:
        try:
            got = ("ok", _load_checkpoint(run_dir, name, task))
        except UserError as e:
            got = ("error", str(e))
    kind, value = comm.broadcast(got)
    if kind == "error":
        raise UserError(value)
    return value


def _load_checkpoint(run_dir, name, task):
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


def _in_progress(path, fd):
    pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    return UserError(f"--out {path}: a run is in progress there (pid {pid})")


def lock_run_dir(path):
    """Take the lock of the run directory `path` (which exists) for this process, until
    `release_run_dir` or the process's end; one this process holds already is kept. Another
    process's lock is a UserError naming its pid. The lock file stays after release: removing it
    would let one process lock the removed file while another locks a new one."""
    path = Path(path)
    key = os.path.realpath(path)
    if fcntl is None or key in _held or distributed.world().rank != 0:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"--out {path}: cannot write there ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        err = _in_progress(path, fd)
        os.close(fd)
        raise err from None
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):  # a file system without flock: unguarded
            return
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[key] = fd


def release_run_dir(path):
    fd = _held.pop(os.path.realpath(path), None)
    if fd is not None:
        os.close(fd)  # closing the one descriptor of the lock releases it


def release_run_dirs():
    """Release every run directory this process holds (the CLI, after a verb)."""
    for key in list(_held):
        release_run_dir(key)


@contextlib.contextmanager
def hold_run_dir(path):
    """`lock_run_dir` for the block; a lock this process held before is kept after it."""
    held = os.path.realpath(path) in _held
    lock_run_dir(path)
    try:
        yield
    finally:
        if not held:
            release_run_dir(path)


def _check_not_in_progress(path):
    """Refuse `path` if another process holds its lock, without taking it or creating anything."""
    if fcntl is None or os.path.realpath(path) in _held:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return  # no lock file: no run was ever there
    try:
        # a shared lock conflicts with a run's exclusive one only, not with another check's
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_progress(path, fd) from None
    except OSError:
        pass
    finally:
        os.close(fd)


def _holds_run(path):
    return path.is_dir() and any(p.name != LOCK for p in path.iterdir())


def check_run_dir(path, resume=False, force=False):
    """Refuse a --out that cannot take this run, touching nothing: not a directory, a run in progress
    there, --resume without a checkpoint, or an old run without --force. A verb calls it before it
    reads its data, and `prepare_run_dir` once the data has been read. Returns the path."""
    path = Path(path)
    if distributed.world().rank != 0:
        return path
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path}: exists and is not a directory")
    if path.is_dir():
        _check_not_in_progress(path)
    if resume:
        if not has_checkpoint(path):
            raise UserError(f"--resume: {path} holds no checkpoint to resume from")
    elif _holds_run(path) and not force:
        raise UserError(f"--out {path}: directory exists and is not empty; use --resume to continue "
                        f"the run or --force to start over")
    return path


def prepare_run_dir(path, resume=False, force=False):
    """Make `path` ready for a run: `check_run_dir`, then its lock (`lock_run_dir`, held until the
    process ends or releases it), then with --force the old run's checkpoints and metrics are removed
    (the user asked for it; other files stay). With --force, call it only once the new run's data has
    been read: a mistake there must leave the old run as it was."""
    path = check_run_dir(path, resume, force)
    if distributed.world().rank != 0:
        return path
    path.mkdir(parents=True, exist_ok=True)
    lock_run_dir(path)
    check_run_dir(path, resume, force)  # again under the lock: a run may have written there since
    if not resume and force:
        for p in path.iterdir():
            if p.suffix in (".json", ".safetensors", ".jsonl", ".png") and p.is_file():
                p.unlink()
    return path
