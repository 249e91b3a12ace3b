"""The fast path: the recurrent time loops compiled from C, used when the arrays are NumPy's, with the
plain NumPy code as the reference each is tested equal to; likewise a few element-wise passes
(`flat.c`: the Adam update, the softmax cross-entropy, bag means).

By concern:
    build.py        compiling each C source (a cell's `rnnkit/cells/<cell>.c`, `flat.c`, or a cell's own
                    source from outside the package) into a cached shared library, keyed by a hash of
                    the sources, flags and CPU; whether the compiled path is on at all
    blas.py         finding the CBLAS gemm the loops and products call (NumPy's own, MKL, or a path)
    pool.py         rnnkit's threads: the batch rows of a loop and the blocks of a product cut across them
    cinterface.py   each entry point's arguments read from its C prototype, passed by name
    products.py     the large products (`matmul`), cut across the threads
    bf16.py         bf16 products with float32 sums on the CPU's matrix units (AMX, AVX512_BF16),
                    the tier chosen at run time from what the CPU, the OS and the compiler allow
    workspace.py    scratch buffers reused from one training step to the next

If any of this fails (no compiler, an unknown BLAS), rnnkit silently uses the NumPy path; CuPy arrays
always take it. Which implementation runs is decided by the backend object (`rnnkit.backend.get_ops`).

Control:
    RNNKIT_FAST=0            environment variable: always use the NumPy reference
    rnnkit.kernels.set_enabled(False) / with rnnkit.kernels.reference(): the same, from code
    rnnkit.kernels.status()  -> dict saying whether the fast path is in use and why not, and the bf16
                                tier (amx, avx512_bf16 or none) and why not a higher one
"""

from __future__ import annotations

from rnnkit.kernels import bf16, blas, build, pool
from rnnkit.kernels.blas import blas_threads, mkl_path, set_blas, set_blas_threads
from rnnkit.kernels.build import reference, set_enabled
from rnnkit.kernels.cinterface import FlatKernel, LoopKernel
from rnnkit.kernels.products import matmul
from rnnkit.kernels.pool import (
    blas_single_thread,
    flush_subnormals,
    row_parts,
    set_threads,
    split_rows,
    threads,
)

__all__ = [
    "FlatKernel", "bf16", "LoopKernel", "blas_single_thread", "blas_threads", "flush_subnormals",
    "matmul", "mkl_path", "reference", "row_parts", "set_blas", "set_blas_threads", "set_enabled",
    "set_threads", "split_rows", "status", "threads",
]


def status() -> dict:
    """Whether the compiled fast path is in use, and why not if it is not; the bf16 products' tier
    (`bf16.detect`) and why no higher one."""
    ready = blas.ready()
    found = bf16.detect()
    return {"enabled": build.enabled(), "available": ready, "reason": blas.state["why"],
            "blas": blas.state["blas"][3] if ready else None, "bf16": found["tier"],
            "bf16_reason": found["reason"]}
