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


class NumpyOps:
    """The reference backend: every loop runs its NumPy reference, on whatever array module the
    arrays come from (so CuPy arrays run here too, step by step, until a CuPy backend exists)."""

    name = "numpy"

    def run(self, kernel, **args):
        """Run `kernel` (a `rnnkit.kernels.LoopKernel`) on arguments passed by name."""
        return kernel.reference(**args)

    def run_bound(self, kernel, fixed, **args):
        """`run(kernel, **fixed, **args)` where `fixed` holds the same objects call after call (a
        layer's weights, at every generated token): the compiled backend keeps their conversion."""
        return kernel.reference(**fixed, **args)

    def matmul(self, a, b, out=None, accumulate=False):
        from rnnkit.kernels import matmul

        return matmul(a, b, out=out, accumulate=accumulate)


class CompiledOps(NumpyOps):
    """The compiled CPU backend: each loop's C entry point (rnnkit.kernels), the reference where a
    call cannot take it (another dtype, or a library that did not build)."""

    name = "compiled"

    def run(self, kernel, **args):
        run = kernel.compiled(args)
        return kernel.reference(**args) if run is None else run()

    def run_bound(self, kernel, fixed, **args):
        run = kernel.compiled_bound(fixed, args)
        return kernel.reference(**fixed, **args) if run is None else run()


REFERENCE, COMPILED = NumpyOps(), CompiledOps()
_build = []  # rnnkit.kernels.build, imported at the first call (the kernels import this module)


def get_ops(*arrays):
    """The backend for these arrays: the compiled CPU kernels for NumPy arrays while the fast path is
    on (`rnnkit.kernels.set_enabled`, RNNKIT_FAST), else the NumPy reference."""
    if not _build:
        from rnnkit.kernels import build, matmul

        _build.append(build)
        # bound once on the two objects: a sampled character asks for a product per layer
        REFERENCE.matmul = COMPILED.matmul = matmul
    if not _build[0].enabled():
        return REFERENCE
    for a in arrays:
        if a is not None and type(a) is not np.ndarray:
            return REFERENCE
    return COMPILED
