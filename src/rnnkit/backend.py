"""Array-module and dtype policy.

Every function in rnnkit takes its array module from its inputs (chainer's `get_array_module`), so the
same math runs on NumPy today and on CuPy once it is installed, with no change to the math.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DTYPE = np.float32  # float32 for training; float64 is used by every gradient check


def get_array_module(*arrays):
    """Return `cupy` if any argument is a CuPy array, else `numpy`."""
    for a in arrays:
        if a is not None and type(a).__module__.startswith("cupy"):
            import cupy  # imported lazily: CuPy is never a dependency

            return cupy
    return np


def to_numpy(a):
    """Bring an array (NumPy, CuPy, or a torch tensor) to host NumPy without importing either."""
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)
