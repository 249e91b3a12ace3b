"""The C interface: each compiled entry point described once, by its own prototype in its C source.

A time loop is declared in Python as a `LoopKernel`: its name, the C source it is written in, and the
NumPy reference that takes the same arguments by name (the reference is the specification; the two are
tested equal). The argument list is never written out in Python: it is read from the prototype

    EXPORT void FN(lstm_fw)(long T, long N, long H, long n0, long n1, R *gates, R *h, ...,
                            void *gemm, int ilp64)

in the source, so a call passes arguments by name (`lstm_fw(T=T, N=N, H=H, gates=gates, ...)`), a
missing or misspelt name is an error, and the C types decide the conversion: `R *` arrays share the
call's float dtype (float32 or float64; any other sends the call to the reference), `unsigned char *` is
a boolean mask passed as bytes, a `const` array that is not C-contiguous is copied, any other must be
C-contiguous (it is written). `n0, n1` (the batch rows a call runs), `gemm` and `ilp64` (the BLAS and
flags) are filled here: the rows are cut across rnnkit's threads (`pool.row_parts`).

Which implementation runs is the backend's choice (`rnnkit.backend.get_ops`): NumPy arrays on the CPU
with the compiled path ready run the C loop, anything else the reference.
"""

from __future__ import annotations

import ctypes
import os
import re
from ctypes import addressof, c_char
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.kernels import blas, build, pool

# The kernels' own float32 gemm for per-step products (RNNKIT_SMALL_GEMM=0: always BLAS).
SMALL_GEMM = os.environ.get("RNNKIT_SMALL_GEMM", "1") != "0"

_FILLED = ("n0", "n1", "gemm", "ilp64")  # supplied by the call, not by the caller
_KINDS = {"long": "int", "int": "int", "R": "real", "R*": "array", "double*": "f64", "int64_t*": "i64",
          "unsignedchar*": "bytes", "void*": "ptr"}
_CTYPES = {"int": {"long": ctypes.c_long, "int": ctypes.c_int}, "array": ctypes.c_void_p,
           "f64": ctypes.c_void_p, "i64": ctypes.c_void_p, "bytes": ctypes.c_void_p,
           "ptr": ctypes.c_void_p}


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # the C type with spaces removed: "long", "R*", "unsignedchar*", ...
    kind: str  # int | real | array (R *) | f64 | i64 | bytes | ptr
    const: bool  # read only: may be copied to make it contiguous


def read_prototypes(source) -> dict:
    """{name: [Param, ...]} of every `EXPORT void FN(name)(...)` in a C source."""
    text = Path(source).read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    out = {}
    for m in re.finditer(r"EXPORT\s+void\s+FN\((\w+)\)\s*\(([^)]*)\)", text):
        params = []
        for raw in m.group(2).split(","):
            words = raw.replace("*", " * ").split()
            if not words:
                continue
            const = "const" in words
            words = [w for w in words if w != "const"]
            name, ctype = words[-1], "".join(words[:-1])
            if ctype not in _KINDS:
                raise ValueError(f"{source}: {m.group(1)}: argument {name} has type {ctype!r}, which "
                                 f"rnnkit cannot pass (one of {', '.join(_KINDS)})")
            params.append(Param(name, ctype, _KINDS[ctype], const))
        out[m.group(1)] = params
    return out


_PROTOTYPES: dict = {}


def prototype(source, name):
    """The parameters of entry point `name` in `source` (read once per source)."""
    key = str(Path(source).resolve())
    if key not in _PROTOTYPES:
        _PROTOTYPES[key] = read_prototypes(source)
    try:
        return _PROTOTYPES[key][name]
    except KeyError:
        raise ValueError(f"{source} has no entry point EXPORT void FN({name})(...)") from None


_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}


def _address(v):
    """A NumPy array's data address: a writable one's through the buffer protocol, half the time of
    .ctypes.data, which a sampled token pays for every array of every layer's call."""
    return addressof(c_char.from_buffer(v)) if v.flags.writeable and v.size else v.ctypes.data


class _Entry:
    """What both kinds of entry point share: the prototype, the declared ctypes function per dtype, and
    the arguments converted by name. `filled`: the parameters the call supplies itself."""

    filled: tuple = ()
    # a written array that is not C-contiguous: an error (internal buffers, always contiguous: a slip
    # is a bug) or the reference's to handle (arrays from the caller)
    strict_layout: bool = True

    def __init__(self, name: str, source, reference):
        self.name, self.source, self.reference = name, Path(source), reference
        self._fns = {}  # dtype -> the declared ctypes function
        self._params = self._steps = None

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self.source.name})"

    @property
    def params(self):
        if self._params is None:  # read once: a sampled character calls a kernel per layer
            self._params = prototype(self.source, self.name)
        return self._params

    def _function(self, dtype):
        fn = self._fns.get(dtype)
        if fn is None:
            lib = build.load(self.source)
            if lib is None:
                return None
            fn = getattr(lib, self.name + _SUFFIX[dtype])
            real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
            fn.argtypes = [real if p.kind == "real" else
                           _CTYPES["int"][p.ctype] if p.kind == "int" else _CTYPES[p.kind]
                           for p in self.params]
            fn.restype = None
            self._fns[dtype] = fn
        return fn

    def check_names(self, args):
        names = {p.name for p in self.params if p.name not in self.filled}
        missing, unknown = names - args.keys(), args.keys() - names
        if missing or unknown:
            raise TypeError(f"{self.name}: " + "; ".join(
                s for s in (missing and f"missing {', '.join(sorted(missing))}",
                            unknown and f"no argument {', '.join(sorted(unknown))}") if s))

    def _plan(self):
        """The parameters as (name, code, const), code: 0 filled here, 1 int, 2 real, 3 R array, 4 bytes,
        5 int64 or float64 array, 6 other pointer: decided once, since a sampled character makes a
        call per layer."""
        if self._steps is None:
            codes = {"int": 1, "real": 2, "array": 3, "bytes": 4, "i64": 5, "f64": 5, "ptr": 6}
            filled = self.filled
            self._steps = [(p.name, 0 if p.name in filled else codes[p.kind], p.const,
                            np.int64 if p.kind == "i64" else np.float64) for p in self.params]
        return self._steps

    def _convert(self, args):
        """(dtype, the C argument list with None in the filled slots, the arrays to keep alive, the
        ctypes function), or None where the compiled code cannot run these arguments (an array that is
        not NumPy's, a float dtype other than float32/float64 or two of them, no library)."""
        if not blas.ready():
            return None
        dtype, values, keep = None, [], []
        ndarray = np.ndarray
        for name, code, const, wide in self._plan():
            if code == 0:
                values.append(None)
                continue
            try:
                v = args[name]
            except KeyError:
                self.check_names(args)
                raise
            if code == 1:
                values.append(int(v))
                continue
            if code == 2:
                values.append(float(v))
                continue
            if v is None:
                values.append(None)
                continue
            if type(v) is not ndarray:
                return None
            if code == 3:
                if dtype is None:
                    dtype = v.dtype
                elif v.dtype != dtype:
                    return None
            elif code == 4:
                if v.dtype == bool:
                    v = v.view(np.uint8)
            elif code == 5 and v.dtype != wide:
                if not const:
                    return None
                v = v.astype(wide)
            if not v.flags.c_contiguous:
                if not const:
                    if self.strict_layout:
                        raise ValueError(f"{self.name}: {name} must be C-contiguous (it is written)")
                    return None
                v = np.ascontiguousarray(v)
            keep.append(v)
            values.append(_address(v))
        if len(values) - len(self.filled) != len(args):
            self.check_names(args)
        if dtype not in _SUFFIX:
            return None
        fn = self._fns.get(dtype) or self._function(dtype)
        return None if fn is None else (dtype, values, keep, fn)


class LoopKernel(_Entry):
    """A time loop over the batch rows: the compiled entry point `name` of `source` and its NumPy
    `reference`, which takes the same arguments by name less the filled-in ones (n0, n1, gemm, ilp64).
    blocks: the per-step product's H x H weight blocks per batch row (4 for the LSTM; an element-wise
    step counts as one), for the estimate of whether cutting the rows pays. min_rows: the fewest rows a
    thread's part may have (None: `pool.SPLIT_MIN_ROWS`, for the small gemm's row tiles)."""

    filled = ("n0", "n1", "gemm", "ilp64")

    def __init__(self, name: str, source, reference, blocks: int = 1, min_rows: int | None = None):
        super().__init__(name, source, reference)
        self.blocks, self.min_rows = blocks, min_rows
        self._where = None
        self._bound = []  # compiled_bound's conversions of fixed arguments, the latest first

    def _slots(self):
        """The positions of n0, n1, gemm and ilp64 in the C argument list."""
        if self._where is None:
            names = [p.name for p in self.params]
            missing = [n for n in self.filled if n not in names]
            if missing:
                raise ValueError(f"{self.source}: {self.name} must take {', '.join(missing)} "
                                 f"(a time loop's row range, gemm and flags)")
            self._where = tuple(names.index(n) for n in self.filled)
        return self._where

    def compiled(self, args):
        """A function running the compiled loop on `args`, or None where it cannot (then the reference
        is to run)."""
        got = self._convert(args)
        if got is None:
            return None
        return self._runner(*got, args["T"], args["N"], args["H"])

    def compiled_bound(self, fixed: dict, rest: dict):
        """`compiled({**fixed, **rest})` for a call made again and again with the same `fixed` objects (a
        layer's weights, at every generated token): their conversion is kept from the call before
        (for the last few sets of them, compared by identity), so only `rest` is converted. Arrays are
        never copied in place of the fixed ones: a weight updated in place is read as it is now."""
        bound = self._bound
        entry = None
        for e in bound:
            if (len(e[0]) == len(fixed) and all(fixed.get(name) is obj for name, obj in e[0])
                    and e[3] == rest.keys()):  # every slot of rest written again below
                entry = e
                break
        if entry is None:
            got = self._convert({**fixed, **rest})
            if got is None:
                return None
            passed = {id(a) for a in got[2]}
            if any(type(v) is np.ndarray and id(v) not in passed for v in fixed.values()):
                return self._runner(*got, rest["T"], rest["N"], rest["H"])  # one was copied: no cache
            slots = {p.name: i for i, p in enumerate(self.params)}
            entry = (tuple(fixed.items()), got, slots, set(rest))
            bound.insert(0, entry)
            del bound[4:]  # the weights of a few models at once, not every array ever seen
        _, (dtype, values, keep, fn), slots, _ = entry
        values = list(values)
        extra = []
        for name, v in rest.items():
            i = slots[name]
            kind = self.params[i].kind
            if kind == "int":
                values[i] = int(v)
            elif v is None:
                values[i] = None
            elif (type(v) is not np.ndarray or not v.flags.c_contiguous
                  or (kind == "array" and v.dtype != dtype) or kind not in ("array", "bytes")):
                return self.compiled({**fixed, **rest})  # the general conversion decides
            else:
                if kind == "bytes" and v.dtype == bool:
                    v = v.view(np.uint8)
                extra.append(v)
                values[i] = _address(v)
        return self._runner(dtype, values, (keep, extra), fn, rest["T"], rest["N"], rest["H"])

    def _runner(self, dtype, values, keep, fn, T, N, H):
        found = blas.current()
        f32 = dtype == np.float32
        gemm = ctypes.addressof(found[0 if f32 else 1])
        flags = int(found[2]) | (2 if f32 and SMALL_GEMM else 0)
        i0, i1, ig, iflags = self._slots()

        def call_for(n0, n1):
            c = list(values)
            c[i0], c[i1], c[ig], c[iflags] = n0, n1, gemm, flags
            return c

        def run(keep=keep):  # the converted arrays live until the call has run
            parts = pool.row_parts(T, N, H * H * max(1, self.blocks), pool.threads(), self.min_rows)
            if len(parts) > 1:
                # The rows of a batch never meet inside the time loop: each worker runs its own rows,
                # with its own products, and nothing is shared but the read-only weights.
                pool.run_parallel(fn, [call_for(n0, n1) for n0, n1 in parts])
            else:
                with pool.blas_single_thread():
                    fn(*call_for(0, N))

        return run


class FlatKernel(_Entry):
    """An element-wise pass over a range [a, b) of rows, elements or columns (flat.c): its first two C
    arguments are the range, cut across rnnkit's threads from `pool.FLAT_SPLIT_MIN` elements; the NumPy
    `reference` takes the other arguments by name and does the whole range. size: args -> (n, unit),
    the range's length and the elements per range item (1 for elements; a row's length for rows)."""

    strict_layout = False

    def __init__(self, name: str, reference, size, source=None):
        super().__init__(name, source if source is not None else blas.FLAT_SOURCE, reference)
        self.size = size
        self._filled = None

    @property
    def filled(self):
        if self._filled is None:
            self._filled = tuple(p.name for p in self.params[:2])
        return self._filled

    def compiled(self, args):
        got = self._convert(args)
        if got is None:
            return None
        _, values, keep, fn = got
        n, unit = self.size(args)

        def run(keep=keep):
            k = min(pool.threads(), n * unit // pool.FLAT_SPLIT_MIN)
            if k < 2:
                fn(0, n, *values[2:])
                return
            # range bounds on 16-element boundaries (one AVX-512 vector) for the element-wise kernels
            step = 16 if unit == 1 else 1
            bounds = [0] + [(n * i // k) // step * step for i in range(1, k)] + [n]
            pool.run_parallel(fn, [(a, b, *values[2:]) for a, b in zip(bounds, bounds[1:]) if b > a])

        return run
