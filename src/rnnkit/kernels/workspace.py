"""`Workspace`: a per-layer pool of scratch buffers reused from one training step to the next.

Why: a fresh multi-megabyte `np.empty` costs its first write in page faults (NumPy asks for huge pages
and the kernel zeroes each one on first touch): at (T, N, H) = (100, 64, 512) that was over a quarter of
an LSTM training step. A layer hands its workspace to the cell functions, which take their internal
buffers (gates, cell states, gate gradients) from it; buffers go back only once nothing can read them
again (the cache consumed by backward, or a backward's own scratch), and arrays returned to the
caller are never pooled.
"""

from __future__ import annotations

import numpy as np


class Workspace:
    """Free buffers by (shape, dtype). `take` hands one out (or allocates); `give` returns it."""

    def __init__(self, max_per_key: int = 4):
        self._free: dict = {}
        self.max_per_key = max_per_key

    def take(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype).str)
        free = self._free.get(key)
        if free:
            return free.pop()
        return np.empty(shape, dtype=dtype)

    def give(self, *arrays):
        for a in arrays:
            if a is None or type(a) is not np.ndarray or a.base is not None or not a.flags.c_contiguous:
                continue  # only whole arrays this pool could have made; views stay with their owner
            free = self._free.setdefault((a.shape, a.dtype.str), [])
            if len(free) < self.max_per_key and not any(f is a for f in free):
                free.append(a)

    def clear(self):
        self._free.clear()


def empty(workspace, shape, dtype, xp=np):
    """A scratch buffer: from the workspace when there is one (NumPy only), else fresh."""
    if workspace is None or xp is not np:
        return xp.empty(shape, dtype=dtype)
    return workspace.take(shape, dtype)
