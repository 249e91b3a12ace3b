"""rnnkit's own threads: how work is cut across them, and the one pool that runs it.

When the compiled path is ready, the thread count NumPy's OpenBLAS was started with
(OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the cores) becomes rnnkit's (`threads()`, `set_threads(n)`,
or RNNKIT_NUM_THREADS), and OpenBLAS itself is set to one thread: a time loop runs its batch rows on
that many workers, and the large products (`matmul`) are cut into row or column blocks across them. Two
thread pools at once (OpenBLAS's busy-waiting workers and rnnkit's) fought over the cores and made two
threads slower than one (measured: the LM training step 600 ms at two threads, 530 at one). NumPy
products outside rnnkit then run on one thread; `set_blas_threads(n)` gives them more, and
RNNKIT_NUM_THREADS=0 leaves OpenBLAS's threads alone (rnnkit itself then runs on one).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading

from rnnkit.kernels import blas, build

# Time loops are split across threads by batch rows (RNNKIT_SPLIT_ROWS=0: never) when the call has at
# least this many multiply-adds in its per-step products and each worker gets SPLIT_MIN_ROWS rows.
SPLIT_ROWS = os.environ.get("RNNKIT_SPLIT_ROWS", "1") != "0"
SPLIT_MIN_MACS = int(os.environ.get("RNNKIT_SPLIT_MIN_MACS", 2**22))
SPLIT_MIN_ROWS = int(os.environ.get("RNNKIT_SPLIT_MIN_ROWS", 8))
# Element-wise kernels (Adam, softmax cross-entropy) are cut across threads from this many elements.
FLAT_SPLIT_MIN = int(os.environ.get("RNNKIT_FLAT_SPLIT_MIN", 2**17))

_pool = {"threads": None, "executor": None, "set_up": False}
_local = threading.local()  # threads: 1 inside a `split_rows` part (its work stays on its thread)


def _set_up():
    """Once the compiled path is ready: rnnkit's thread count, and OpenBLAS on one thread."""
    _pool["set_up"] = True
    env = os.environ.get("RNNKIT_NUM_THREADS", "").strip()
    if env and not env.isdigit():
        print(f"rnnkit: RNNKIT_NUM_THREADS={env!r} is not a whole number >= 0; ignored", file=sys.stderr)
        env = ""
    if env == "0":  # threads left to OpenBLAS as they are; rnnkit's loops and products on one
        _pool["threads"] = 1
        return
    if _pool["threads"] is None:
        _pool["threads"] = max(1, int(env) if env.isdigit() else (blas.blas_threads() or 1))
    blas.set_blas_threads(1)


def threads() -> int:
    """How many threads rnnkit's time loops and products use (1 when the fast path is off, and inside
    a part run by `split_rows`)."""
    if not _pool["set_up"]:
        if not blas.ready():
            return 1
        _set_up()
    if not build._enabled:
        return 1
    return getattr(_local, "threads", 0) or _pool["threads"] or 1


def set_threads(n: int) -> None:
    """Use n threads in rnnkit's time loops and products (NumPy's OpenBLAS stays on one)."""
    if blas.ready() and not _pool["set_up"]:
        _set_up()
    _pool["threads"] = max(1, int(n))


def row_parts(T, N, step_macs, threads, min_rows=None):
    """How a time loop over N batch rows is cut for `threads` workers: [(n0, n1), ...], one part when
    splitting does not pay (few rows, or too little work per call to cover the hand-off). min_rows: the
    fewest rows a part may have (default SPLIT_MIN_ROWS; 1 for a loop whose row is much work alone)."""
    if not SPLIT_ROWS or threads < 2 or T * N * step_macs < SPLIT_MIN_MACS:
        return [(0, N)]
    k = min(threads, N // (SPLIT_MIN_ROWS if min_rows is None else min_rows))
    if k < 2:
        return [(0, N)]
    # multiples of 4 rows where possible: the small gemm's register tile is 4 rows
    unit = 4 if N >= 4 * k else 1
    bounds = [0] + [((N * i // k) // unit) * unit for i in range(1, k)] + [N]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def run_parallel(fn, calls):
    """Run fn(*c) for every c in calls, the first on this thread and the others on worker threads (ctypes
    releases the GIL for the duration of a foreign call)."""
    if getattr(_local, "threads", 0) == 1:  # inside a split_rows part: the pool may be busy with parts
        for c in calls:
            fn(*c)
        return
    ex = _pool["executor"]
    if ex is None:
        # rnnkit's workers only ever run rnnkit's arithmetic: subnormals flushed there for good
        ex = _pool["executor"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="rnnkit-rows",
            initializer=_flush_in_thread, initargs=(1,))
    futures = [ex.submit(fn, *c) for c in calls[1:]]
    try:
        fn(*calls[0])
    finally:  # every call has ended before this returns or raises (they write into shared buffers)
        concurrent.futures.wait(futures)
    for f in futures:
        f.result()


def split_rows(fn, parts):
    """Run fn(i, n0, n1) for every part (n0, n1) of `parts` (from `row_parts`) at once on rnnkit's
    threads; returns the results in order. Each call keeps its own loops and products on its own thread
    (`threads()` is 1 inside), so a part is one long run with no hand-off between its operations: for
    work made of many small steps (a layer's segments, recompute), one join at the end instead of one
    per product and per loop. A single part runs here as an ordinary call."""
    if len(parts) == 1:
        return [fn(0, *parts[0])]
    results = [None] * len(parts)

    def one(i, n0, n1):
        old, _local.threads = getattr(_local, "threads", 0), 1
        try:
            results[i] = fn(i, n0, n1)
        finally:
            _local.threads = old

    run_parallel(one, [(i, n0, n1) for i, (n0, n1) in enumerate(parts)])
    return results


@contextlib.contextmanager
def blas_single_thread():
    """NumPy's BLAS on one thread inside the block (tiny products: a second thread only adds hand-offs);
    a no-op while the kernels are loaded, since OpenBLAS is then on one thread throughout."""
    if build.enabled():
        threads()  # set up first: rnnkit's thread count is read from OpenBLAS's, not from inside here
        if blas.state.get("threads_set") == 1:  # the usual case, asked at every sampled character
            yield
            return
    prev = blas.blas_threads() if build.enabled() else 1
    prev = 1 if prev is None else prev
    if prev > 1:
        blas.set_blas_threads(1)
    try:
        yield
    finally:
        if prev > 1:
            blas.set_blas_threads(prev)


def _flush_in_thread(on: int) -> int:
    lib = build.load(blas.FLAT_SOURCE) if blas.ready() else None
    return -1 if lib is None else int(lib.rnnkit_flush_subnormals(int(on)))


@contextlib.contextmanager
def flush_subnormals():
    """Inside the block, this thread's arithmetic flushes subnormal floats (below 1.2e-38 in float32)
    to zero, as rnnkit's own worker threads always do; the previous setting comes back after. The
    training loop runs inside it: subnormals are ~100x slower in every operation they enter, and a
    model's attention weights and softmax gradients reach them. The change to any result is below
    the smallest normal float. A no-op without the compiled kernels or on CPUs without the switch."""
    prev = _flush_in_thread(1)
    try:
        yield
    finally:
        if prev == 0:
            _flush_in_thread(0)
