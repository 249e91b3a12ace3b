"""Data-parallel training over MPI: a communicator of a few calls, and the pieces `fit` builds on it.

`mpiexec -n P rnnkit train ...` starts P copies of the same program; each is a rank of one job. Every
rank builds the same model and the same batch source, trains on its own rows of each batch (its
shard), and the ranks meet once per update: one `Allreduce` of a flat buffer holding the gradients,
the loss and the counts, so that every rank applies the same update to the same weights (the scheme of
ChainerMN and Horovod). Dimensions: N rows (streams) of the global batch, P ranks.

With rank r holding rows lo:hi of N, n_r = hi - lo of them, its loss the mean over its c_r counted
items (tokens) and its gradient g_r of that mean, the update's gradient is that of the mean over the
whole batch:

    g = sum_r c_r g_r / sum_r c_r        loss = sum_r c_r loss_r / sum_r c_r

(one process on the concatenated batch computes the same sums in another order).

`Communicator` is the interface (rank, size, allreduce, broadcast, barrier, abort); `MPICommunicator`
puts mpi4py behind it, `SingleProcess` is the one process of a run not launched by an MPI launcher
(or with mpi4py absent), where training runs exactly as without this module. `world()` is this
process's communicator, made once.
"""

from __future__ import annotations

import os
import sys
from typing import Protocol

import numpy as np

from rnnkit.errors import UserError

# Variables an MPI launcher sets in each process it starts: MPICH's and Intel MPI's Hydra (PMI_SIZE),
# Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), PMIx launchers, and Slurm's srun (SLURM_STEP_NUM_TASKS:
# srun starts the tasks itself).
_LAUNCH_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class Communicator(Protocol):
    """What training needs of a distributed engine; another engine (NCCL, Gloo) fits behind it."""

    rank: int  # this process, 0 .. size - 1; rank 0 writes the run directory
    size: int  # processes in the job

    def allreduce(self, buf: np.ndarray) -> np.ndarray: ...  # sum over ranks, in place; returns buf

    def broadcast(self, obj, root: int = 0): ...  # root's obj on every rank (an array: in place)

    def barrier(self) -> None: ...

    def abort(self, code: int) -> None: ...  # end every process of the job now, with this status


class SingleProcess:
    """The communicator of a run on one process: every call is the identity."""

    rank, size = 0, 1

    def allreduce(self, buf):
        return buf

    def broadcast(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, code):
        sys.exit(code)


class MPICommunicator:
    """COMM_WORLD of mpi4py: arrays travel as buffers (no copy, no pickle), other objects (a
    checkpoint's meta, evaluation figures) pickled by mpi4py between the job's own processes."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # ranks on this machine: they share its cores
        self.local_size = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()

    def allreduce(self, buf):
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf

    def broadcast(self, obj, root=0):
        if isinstance(obj, np.ndarray):
            self.comm.Bcast(obj, root=root)
            return obj
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def launched_size() -> int:
    """How many processes the launcher says this job has (1 when none launched this one)."""
    for name in _LAUNCH_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    # a job step's task count: set by srun for the tasks it starts, not in the batch script itself
    if os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


_world: list = []  # this process's communicator, once made


def world() -> Communicator:
    """This process's communicator: MPI's world when an MPI launcher started more than one process
    (`RNNKIT_MPI=0` turns it off, `RNNKIT_MPI=1` takes MPI even for one), else `SingleProcess`.
    Under MPI, the ranks on one machine share its cores: each gets cores / ranks threads unless
    RNNKIT_NUM_THREADS says otherwise."""
    if _world:
        return _world[0]
    setting = os.environ.get("RNNKIT_MPI", "")
    size = launched_size()
    if setting == "0" or (size <= 1 and setting != "1"):
        _world.append(SingleProcess())
        return _world[0]
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        _world.append(SingleProcess())
        raise UserError(f"launched as {size} MPI processes, but mpi4py is not installed: pip install "
                        f"'rnnkit[mpi]' (or RNNKIT_MPI=0 for independent processes)") from None
    comm = MPICommunicator()
    if comm.size > 1 and not os.environ.get("RNNKIT_NUM_THREADS"):
        os.environ["RNNKIT_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // comm.local_size))
    _world.append(comm)
    return comm


def abort_job(code: int):
    """After a failure on this rank: end the whole job (MPI Abort), so that no other rank waits for
    it forever in a collective call. Nothing on one process, or before any communicator was made."""
    if _world and _world[0].size > 1:
        _world[0].abort(code)


# --- shards --------------------------------------------------------------------------------------


def split(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows lo:hi of n for `rank`: contiguous, the first n % size ranks one row more."""
    q, r = divmod(n, size)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


def check_rows(n: int, size: int, what: str = "--batch"):
    """A batch of n rows must give each of `size` ranks at least one."""
    if n < size:
        raise UserError(f"{what} {n}: cannot split {n} batch rows over {size} MPI ranks; "
                        f"expected {what} >= {size} (or fewer ranks)")


def batch_axis(a) -> int:
    """The rows' axis of a time-major array: 0 of (N,), 1 of (T, N) and (T, N, D)."""
    return 0 if np.ndim(a) <= 1 else 1


def take_rows(batch, lo, hi):
    """Rows lo:hi of every array in a batch (an array, a tuple / NamedTuple / list or dict of them);
    anything else (a flag) is kept."""
    if isinstance(batch, np.ndarray) and batch.ndim >= 1:
        return batch[(slice(None),) * batch_axis(batch) + (slice(lo, hi),)]
    if isinstance(batch, dict):
        return {k: take_rows(v, lo, hi) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(take_rows(v, lo, hi) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(take_rows(v, lo, hi) for v in batch)
    return batch


def rows_of(batch) -> int | None:
    """N of a batch: the rows of its first array."""
    if isinstance(batch, np.ndarray) and batch.ndim >= 1:
        return batch.shape[batch_axis(batch)]
    items = batch.values() if isinstance(batch, dict) else \
        batch if isinstance(batch, (tuple, list)) else ()
    for v in items:
        n = rows_of(v)
        if n is not None:
            return n
    return None


class ShardedSource:
    """This rank's rows of each batch of a source. A source with `shard(rank, size)` cuts its batches
    itself (before they are built: `IndexBatches` collates only its own items); another one's batches
    are cut here, every array along its rows' axis. `window` is (lo, hi, n) of the last batch; a
    batch of which this rank holds no row (an epoch's short last batch) is None."""

    def __init__(self, source, rank, size, rows_flag="--batch"):
        self.source, self.rank, self.size = source, rank, size
        self.own = hasattr(source, "shard")
        if self.own:
            source.shard(rank, size, rows_flag)
        else:
            n = getattr(source, "batch_size", None)
            if isinstance(n, int):
                check_rows(n, size, rows_flag)
        self._window = (0, 0, 0)

    @property
    def window(self):
        return self.source.window if self.own else self._window

    def next_batch(self):
        if self.own:
            return self.source.next_batch()
        batch = self.source.next_batch()
        n = rows_of(batch)
        if n is None:
            raise UserError("this task's batches have no rows to split over MPI ranks")
        lo, hi = split(n, self.rank, self.size)
        self._window = (lo, hi, n)
        return take_rows(batch, lo, hi) if hi > lo else None

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, d):
        self.source.load_state_dict(d)


class RowKeyedGenerator:
    """A layer's generator under data parallelism: a draw of a batch-shaped array (a dropout mask) is
    drawn for the whole batch and cut to this rank's rows, so that row n's mask is the one the same
    draw gives row n on one process, whatever the split. Every rank draws the same numbers, so the
    generators stay in step. The rows' axis is the time-major one (`batch_axis`), else the other axis
    of this rank's row count (an (N, D) feature array); a draw of no such shape is passed through.

    Exact for batches of one length on every rank (the language model's streams, the memory tasks).
    A padded batch is padded by each rank to its own longest item: the masks of its valid steps are
    the one-process masks of those rows (a draw is laid out time-major), but the generator then
    advances by the rank's padded length, not the whole batch's, so from the next draw on the masks
    are other valid masks, equal in distribution only."""

    def __init__(self, rng, source: ShardedSource):
        self.rng, self.source = rng, source

    def random(self, size=None, *args, **kwargs):
        lo, hi, n = self.source.window
        shape = (size,) if isinstance(size, (int, np.integer)) else size
        if shape is not None and n and len(shape):
            axes = [0 if len(shape) == 1 else 1] + ([0] if len(shape) == 2 else [])
            for axis in axes:
                if shape[axis] == hi - lo:
                    full = list(shape)
                    full[axis] = n
                    draw = self.rng.random(tuple(full), *args, **kwargs)
                    return draw[(slice(None),) * axis + (slice(lo, hi),)]
        return self.rng.random(size, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.rng, name)


def gather_rows(comm: Communicator, local: np.ndarray, lo: int, n: int, axis: int = 1) -> np.ndarray:
    """The whole (..., n, ...) array from every rank's rows lo:lo+local.shape[axis] (a sum of the
    ranks' zero-padded parts: one allreduce, no gather call needed)."""
    shape = list(local.shape)
    shape[axis] = n
    full = np.zeros(shape, dtype=local.dtype)
    full[(slice(None),) * axis + (slice(lo, lo + local.shape[axis]),)] = local
    return comm.allreduce(full)


class GradientReducer:
    """One flat buffer: every gradient times this rank's count, then the loss times the count, the
    count, the tokens and the scalars rank 0 decides for all (the time-budget flag, the clock's
    fraction). One allreduce sums it; the gradients come back divided by the total count."""

    EXTRA = 5  # loss * count, count, tokens, stop flag, fraction of the time budget spent

    def __init__(self, comm: Communicator, params):
        self.comm, self.params = comm, params
        dtype = np.result_type(*[g.dtype for _, _, g in params]) if params else np.float64
        self.buf = np.empty(sum(g.size for _, _, g in params) + self.EXTRA, dtype=dtype)

    @property
    def gradient_bytes(self) -> int:
        return self.buf.nbytes

    def reduce(self, loss, count, tokens, stop=0.0, spent=0.0):
        """Sum over ranks; returns (loss, count, tokens, stop, spent) of the whole batch, the
        gradients replaced by those of the mean over it."""
        buf, off = self.buf, 0
        for _, _, g in self.params:
            np.multiply(g.reshape(-1), count, out=buf[off:off + g.size])
            off += g.size
        buf[off:] = (loss * count, count, tokens, stop, spent)
        self.comm.allreduce(buf)
        total = float(buf[off + 1])
        inv = 1.0 / total if total > 0 else 0.0
        off = 0
        for _, _, g in self.params:
            g[...] = buf[off:off + g.size].reshape(g.shape)
            g *= inv
            off += g.size
        tail = [float(v) for v in buf[off:]]
        return tail[0] * inv, total, int(round(tail[2])), tail[3], tail[4]


def broadcast_params(comm: Communicator, params):
    """Rank 0's parameters on every rank (one flat buffer)."""
    if comm.size == 1 or not params:
        return
    dtype = np.result_type(*[p.dtype for _, p, _ in params])
    buf = np.concatenate([p.reshape(-1).astype(dtype, copy=False) for _, p, _ in params])
    comm.broadcast(buf)
    off = 0
    for _, p, _ in params:
        p[...] = buf[off:off + p.size].reshape(p.shape)
        off += p.size
