"""Recurrent layers: a stack of `num_layers` layers of one cell (any registered in `rnnkit.cells`), with
dropout between layers and a bidirectional option. The layer owns the weights; the cell declares them
and holds the math, and what is done here is done once for every cell: stacks, directions, masks of
variable lengths, exact BPTT in bounded memory (recompute), one-step inference. `LSTM`, `GRU`, `RNN`,
... (one class for every registered cell: `layer_class`) are this layer for one cell.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size    L  layers    K  directions (1 or 2)

    x       (T, N, D)        input, time-major
    out     (T, N, K*H)      the last layer's output at every step (forward and reverse concatenated)
    state   (L*K, N, H)      initial / final state, PyTorch's order (layer-major, then direction); a
                             cell whose state has several parts (the LSTM's h and c) takes a tuple
    mask    (T, N)           valid steps; each column a prefix of ones (variable lengths in one batch)

At padded steps the state is carried unchanged, so `out` repeats the last state there and the final
state is each sequence's own. The reverse direction reads each sequence backwards within its length.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np

from rnnkit import cells
from rnnkit.backend import DEFAULT_DTYPE, get_array_module
from rnnkit.cells.cell import Cell
from rnnkit.functional import dropout_backward, dropout_forward, reverse_padded
from rnnkit.functional._checks import check_mask, expect_shape
from rnnkit.kernels import pool
from rnnkit.kernels.pool import blas_single_thread
from rnnkit.kernels.workspace import Workspace, empty
from rnnkit.layers.module import Module


class _Checkpointed(NamedTuple):
    """What a layer run with `recompute=k` keeps for backward: the input, the outputs and, every k
    steps, the part of the state the outputs do not hold (the LSTM's cell state; the whole state for a
    cell that cannot rebuild its cache from its outputs)."""

    x: object  # (T, N, D), the caller's input
    h: object  # (T+1, N, O): h[1:] is this direction's output, h[0] the initial state's first part
    starts: list  # first step of each segment
    states: list  # at each segment's start: the state beyond h (cells with recompute), else all of it
    mask: object  # (T, N) or None
    shared: object = None  # a cell's shared array (T, N, O): the first layer's own, or the one given
    given: bool = False  # whether `shared` was given (a later layer) or made here (the first)


# Passes whose largest product has fewer multiply-adds run on one BLAS thread.
SMALL_PASS_MACS = 16 * 2**20


class Recurrent(Module):
    """A stack of `num_layers` recurrent layers of one cell, optionally bidirectional.

    cell: a `rnnkit.cells.Cell` or a registered name ("lstm"). Parameters are named `l{k}.<name>` with
    the cell's names (`l0.Wx`, `l0.Wh`, `l0.b`; `l0.bhn` for the GRU); the reverse direction of layer k
    is `l{k}_reverse.*`. Initialisation is the cell's (PyTorch's U(-1/sqrt(H), 1/sqrt(H)) by default).
    recompute: None for plain BPTT; an int k (or "sqrt") keeps, beyond the outputs, the state every k
    steps and rebuilds each segment's cache in backward from the outputs: the same gradients in
    O(T/k + k) further activation memory for about one extra forward. (The outputs are those of a
    one-direction layer; a bidirectional layer, or one followed by dropout, holds them beside its
    output, one (T, N, H) array per direction.)
    precision: "32" (float32 throughout) or "bf16-mixed" (PyTorch Lightning's names): the products in
    bf16 with float32 sums, the weights, the gradients, the state and the gate arithmetic float32
    (`rnnkit.kernels.bf16`), for a cell with a bf16 path (`Cell.bf16_mixed`); float64 runs the exact
    math either way. On a CPU with no bf16 unit, "bf16-mixed" runs the float32 path and says so once.
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bidirectional=False,
                 dropout=0.0, dtype=DEFAULT_DTYPE, seed=0, recompute=None, precision="32"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell = cells.create(cell) if isinstance(cell, str) else cell
        if not isinstance(self.cell, Cell):
            raise TypeError(f"cell must be a rnnkit.cells.Cell or a registered name, got {cell!r}")
        self.precision = precision
        self.cell = _with_precision(self.cell, precision)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        self.num_directions = 2 if bidirectional else 1
        self.output_size = self.cell.output_size(hidden_size)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)  # weights now, dropout masks later
        for k in range(num_layers):
            D = input_size if k == 0 else self.output_size * self.num_directions
            for d in range(self.num_directions):
                pre = self._prefix(k, d)
                init = self.cell.init_layer_params(self.rng, D, hidden_size, dtype, k, num_layers)
                for name, value in init.items():
                    self.add_param(pre + name, value)
        self._caches = None
        self._param_names = {}  # (layer, direction) -> [(the cell's name, the full name)]
        self._pass_macs = None  # see _small
        self._state_shapes = {}  # N -> the shape of each part of the whole stack's state
        # Exact BPTT in bounded memory (Chen et al. 2016): with recompute=k, forward keeps only the state
        # at every k-th step and backward re-runs each k-step segment before back-propagating through
        # it; None runs plain BPTT. "sqrt" picks k = ceil(sqrt(T)) for each call.
        self.recompute = recompute
        self._ws = Workspace()  # scratch buffers reused across training steps
        self._part_ws = []  # one per part of the batch rows run on its own thread (recompute)
        self._consumed = []  # caches whose backward ran: their buffers return to the pool next forward

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.cell.options().items())
        prec = f", precision={self.precision!r}" if self.precision != "32" else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers="
                f"{self.num_layers}, bidirectional={self.bidirectional}{', ' + opts if opts else ''}"
                f"{prec})")

    @staticmethod
    def _prefix(k, d):
        return f"l{k}{'_reverse' if d else ''}."

    def layer_params(self, k, d=0):
        """The parameters of layer k, direction d, by the cell's own names (looked up in `params` at
        each call: `astype` and `load_state_dict` may have replaced the arrays)."""
        names = self._param_names.get((k, d))
        if names is None:  # one step of sampling asks once per layer: the names are found once
            pre = self._prefix(k, d)
            names = self._param_names[k, d] = [(n[len(pre):], n) for n in self.params if n.startswith(pre)]
        params = self.params
        return {short: params[full] for short, full in names}

    # --- the state ----------------------------------------------------------------------------------

    def init_state(self, N, xp=np):
        """Zero initial state: (L*K, N, H), or a tuple of such arrays for a state of several parts."""
        LK = self.num_layers * self.num_directions
        parts = tuple(xp.zeros((LK,) + shape, dtype=self.dtype)
                      for shape in self.cell.state_shape(N, self.hidden_size).values())
        return self.join_state(parts)

    def state_parts(self, state):
        """The state as a tuple of its parts, whatever the cell (one array for a one-part state)."""
        return tuple(state) if len(self.cell.state) > 1 else (state,)

    def join_state(self, parts):
        """The inverse of `state_parts`: a tuple for a state of several parts, else the one array."""
        return tuple(parts) if len(self.cell.state) > 1 else parts[0]

    def _split_state(self, state, N):
        """The user's state as a tuple of (L*K, ...) arrays, shapes checked."""
        if state is None:
            state = self.init_state(N)
        shapes = self._state_shapes.get(N)
        if shapes is None:
            LK = self.num_layers * self.num_directions
            shapes = self._state_shapes[N] = [
                (f"{part}0", (LK,) + shape, ("L*K", "N") + ("H",) * (len(shape) - 1))
                for part, shape in self.cell.state_shape(N, self.hidden_size).items()]
        parts = self.state_parts(state)
        if len(parts) != len(shapes):
            raise ValueError(f"state for {self.cell.name} must be {tuple(n for n, _, _ in shapes)}, got "
                             f"{len(parts)} arrays")
        for (name, shape, letters), s in zip(shapes, parts):
            expect_shape(name, s, shape, letters)
        return parts

    # --- forward and backward over a sequence ------------------------------------------------------

    def _small(self, T, N):
        """True when even the largest product of a pass (the input projection of all steps) is small:
        then a second BLAS thread only adds hand-offs, ruinous on a busy machine (50x at (50,1,64,64))."""
        if self._pass_macs is None:  # multiply-adds per row and step of the widest layer's products
            D = max(self.input_size, self.output_size * self.num_directions)
            shapes = self.cell.param_shapes(D, self.hidden_size).values()
            self._pass_macs = sum(math.prod(s) for s in shapes if len(s) == 2)
        return T * N * self._pass_macs < SMALL_PASS_MACS

    def forward(self, x, state=None, mask=None):
        """x: (T, N, D) -> out (T, N, K*H), final state (L*K, N, H) (a tuple for a state of parts)."""
        expect_shape("x", x, (None, None, self.input_size), ("T", "N", "D"))
        if self._small(x.shape[0], x.shape[1]):
            with blas_single_thread():
                return self._forward(x, state, mask)
        return self._forward(x, state, mask)

    def _forward(self, x, state, mask):
        T, N, _ = x.shape
        mask = check_mask(mask, T, N)
        parts = self._split_state(state, N)
        xp = get_array_module(x)
        self._release()
        finals = [xp.empty_like(s) for s in parts]
        caches = []
        inp = x
        # the first layer's shared array, per direction (each direction's in its own time order)
        shared = [None] * self.num_directions
        for k in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = k * self.num_directions + d
                xin = reverse_padded(inp, mask) if d else inp
                kw = {"shared": shared[d]} if self.cell.shared else {}
                y, final, cache = self._cell_forward(xin, tuple(s[i] for s in parts),
                                                     self.layer_params(k, d), mask, **kw)
                if self.cell.shared and k == 0:
                    shared[d] = (cache.shared if isinstance(cache, _Checkpointed)
                                 else self.cell.shared_of(cache))
                for f, s in zip(finals, final):
                    f[i] = s
                outs.append(reverse_padded(y, mask) if d else y)
                caches.append(cache)
            inp = xp.concatenate(outs, axis=-1) if self.num_directions == 2 else outs[0]
            drop = None
            if k < self.num_layers - 1 and self.dropout > 0:
                inp, drop = dropout_forward(inp, self.dropout, self.rng, self.training)
            caches.append(drop)
        self._caches = (mask, caches)
        return inp, self.join_state(finals)

    def backward(self, dout, dstate=None):
        """dout: (T, N, K*H) gradient of `out`; dstate: gradient of the final state (same form) or None.

        Adds the parameter gradients into `self.grads`; returns dx (T, N, D) and the initial state's
        gradient. The layers and directions run in the reverse of the forward's order.
        """
        if hasattr(dout, "shape") and dout.ndim == 3 and self._small(dout.shape[0], dout.shape[1]):
            with blas_single_thread():
                return self._backward(dout, dstate)
        return self._backward(dout, dstate)

    def _backward(self, dout, dstate=None):
        """`backward` on the threads chosen for its size."""
        if self._caches is None:
            raise RuntimeError("backward called before forward")
        mask, caches = self._caches
        T, N, _ = dout.shape
        O, K = self.output_size, self.num_directions
        expect_shape("dout", dout, (T, N, K * O), ("T", "N", "K*H"))
        dparts = self._split_state(dstate if dstate is not None else self.init_state(N), N)
        xp = get_array_module(dout)
        dstate0 = [xp.empty_like(s) for s in dparts]
        dinp = dout
        dshared = [None] * K  # the later layers' gradients of the first layer's shared array
        for k in reversed(range(self.num_layers)):
            dinp = dropout_backward(dinp, caches[k * (K + 1) + K])
            dx = None
            for d in reversed(range(K)):
                i = k * K + d
                dy = dinp[..., d * O:(d + 1) * O]
                if d:
                    dy = reverse_padded(dy, mask)
                kw = {"dshared": dshared[d]} if self.cell.shared and k == 0 else {}
                dxd, ds0, grads, *ds = self._cell_backward(
                    xp.ascontiguousarray(dy), caches[k * (K + 1) + d], tuple(s[i] for s in dparts),
                    self.layer_params(k, d), **kw)
                if self.cell.shared and k > 0:
                    dshared[d] = ds[0] if dshared[d] is None else dshared[d] + ds[0]
                if d:
                    dxd = reverse_padded(dxd, mask)
                dx = dxd if dx is None else dx + dxd
                for g0, s in zip(dstate0, ds0):
                    g0[i] = s
                pre = self._prefix(k, d)
                for name, g in grads.items():
                    self.grads[pre + name] += g
            dinp = dx
        self._consumed = [caches[k * (K + 1) + d] for k in range(self.num_layers) for d in range(K)
                          if not isinstance(caches[k * (K + 1) + d], _Checkpointed)]
        return dinp, self.join_state(dstate0)

    # --- buffers, recomputation ---------------------------------------------------------------------

    def _give(self, cache, ws=None):
        """Return a consumed cell cache's own buffers to the workspace."""
        (ws or self._ws).give(*(getattr(cache, f) for f in self.cell.scratch))

    def _release(self):
        for cache in self._consumed:
            self._give(cache)
        self._consumed = []

    def _segment(self, T):
        k = self.recompute
        if k is None or k is False:
            return None
        if k in ("sqrt", True):
            k = max(1, math.ceil(math.sqrt(T)))
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"recompute must be None, 'sqrt' or a positive int, got {self.recompute!r}")
        return k if k < T else None

    def _row_parts(self, T, N, xp):
        """The batch rows cut for rnnkit's threads, each part with a workspace of its own: a part runs
        all its segments on one thread (`pool.split_rows`), as the rows of a batch never meet.
        One part for arrays other than NumPy's (a GPU runs its own parallelism)."""
        threads = pool.threads() if xp is np else 1
        parts = pool.row_parts(T, N, self.hidden_size ** 2 * self.cell.step_blocks, threads)
        while len(self._part_ws) < len(parts):
            self._part_ws.append(Workspace())
        return parts

    def _cell_forward(self, x, state, p, mask, **shared):
        """One direction of one layer over the sequence -> (y (T, N, O), final state, cache)."""
        T, N, _ = x.shape
        k = self._segment(T)
        if k is None:
            return self.cell.forward(x, state, p, mask, workspace=self._ws, **shared)
        xp = get_array_module(x)
        h = xp.empty((T + 1, N, self.output_size), dtype=x.dtype)
        if self.cell.output_is_state:
            h[0] = state[0]
        parts = self._row_parts(T, N, xp)
        given = shared.get("shared") is not None
        made = xp.empty((T, N, self.output_size), dtype=x.dtype) if shared and not given else None
        sh = shared["shared"] if given else made

        def run(i, n0, n1):
            rows = slice(n0, n1)
            return self._forward_segments(x, h, tuple(s[rows] for s in state), p, mask, k, rows,
                                          self._part_ws[i] if len(parts) > 1 else self._ws, sh, given)

        outs = pool.split_rows(run, parts)  # per part: (states at the segment starts, final state)
        kept = len(outs[0][0][0])
        states = [tuple(xp.concatenate([o[0][j][q] for o in outs]) for q in range(kept))
                  for j in range(len(outs[0][0]))]
        final = tuple(xp.concatenate([o[1][q] for o in outs]) for q in range(len(state)))
        return h[1:], final, _Checkpointed(x, h, list(range(0, T, k)), states, mask, sh, given)

    def _kept(self, state):
        """What a segment's start keeps: the state beyond what the outputs hold, or all of it."""
        return state[1:] if self.cell.recompute is not None else state

    def _forward_segments(self, x, h, state, p, mask, k, rows, ws, shared=None, given=False):
        """Forward of the batch rows `rows`, k steps at a time, writing h[1:, rows] and keeping at each
        segment's start only the state the outputs do not hold -> (those, the final state). shared: a
        cell's shared array (T, N, O), read (given) or written (the first layer's), or None."""
        xp = get_array_module(x)
        T = x.shape[0]
        states = []
        for t0 in range(0, T, k):
            t1 = min(T, t0 + k)
            states.append(self._kept(state))
            m = None if mask is None else mask[t0:t1, rows]
            kw = {} if shared is None else {"shared": shared[t0:t1, rows] if given else None}
            y, final, cache = self.cell.forward(x[t0:t1, rows], state, p, m, workspace=ws,
                                                scan_weights=t0 == 0, **kw)
            h[t0 + 1:t1 + 1, rows] = y
            if shared is not None and not given:
                shared[t0:t1, rows] = self.cell.shared_of(cache)
            state = tuple(xp.array(f) for f in final)  # copies: final views buffers pooled next line
            self._give(cache, ws)
        return states, state

    def _cell_backward(self, dy, cache, dstate, p, **dshared):
        """-> dx, the initial state's gradient, the parameters', and for a cell with a shared array
        the gradient of the one it was given (None in the first layer)."""
        if not isinstance(cache, _Checkpointed):
            return self.cell.backward(dy, cache, dstate, workspace=self._ws, **dshared)
        x = cache.x
        T, N, _ = x.shape
        xp = get_array_module(dy)
        p = self.cell.backward_params(p, xp)  # made once for all segments
        dx = xp.empty(x.shape, dtype=dy.dtype)
        parts = self._row_parts(T, N, xp)
        # a shared array's gradient: in (the first layer's, from the later ones) or out (theirs)
        dsh_in = dshared.get("dshared")
        dsh_out = xp.zeros(cache.shared.shape, dtype=dy.dtype) if cache.given else None

        def run(i, n0, n1):
            rows = slice(n0, n1)
            return self._backward_segments(cache, dy, tuple(s[rows] for s in dstate), p, rows, dx,
                                           self._part_ws[i] if len(parts) > 1 else self._ws,
                                           dsh_in, dsh_out)

        outs = pool.split_rows(run, parts)  # per part: (initial state's gradient, weight gradients)
        dstate0 = tuple(xp.concatenate([o[0][q] for o in outs]) for q in range(len(dstate)))
        grads = outs[0][1]
        for o in outs[1:]:
            for name, g in o[1].items():
                grads[name] += g
        return (dx, dstate0, grads) + ((dsh_out,) if cache.shared is not None else ())

    def _backward_segments(self, cache, dy, dstate, p, rows, dx, ws, dsh_in=None, dsh_out=None):
        """BPTT over the batch rows `rows`, the last segment first: each segment's cache is rebuilt
        (from the outputs forward kept, all the segment's steps at once, where the cell can:
        `Cell.recompute`; else by running its forward again from the kept state), then
        back-propagated. Writes dx[:, rows] -> (the initial state's gradient, the weight gradients
        summed over the segments). A cell's shared array: each segment's slice of it read again
        (cache.given) and its gradient written into dsh_out, or the first layer's gradient of it (from
        the later layers) dsh_in passed on, or None."""
        x, h, starts, states, mask, shared, given = cache
        xp = get_array_module(dy)
        cell = self.cell
        ends = starts[1:] + [x.shape[0]]
        acc = {}  # the weight gradients, summed over the segments in place
        whole = rows == slice(0, x.shape[1])
        for t0, t1, kept in reversed(list(zip(starts, ends, states))):
            m = None if mask is None else mask[t0:t1, rows]
            xs = xp.ascontiguousarray(x[t0:t1, rows])
            kept = tuple(s[rows] for s in kept)
            if cell.recompute is not None:
                seg = cell.recompute(xs, xp.ascontiguousarray(h[t0:t1 + 1, rows]), kept, p, m,
                                     workspace=ws)
            else:
                kw = {}
                if shared is not None:
                    kw["shared"] = xp.ascontiguousarray(shared[t0:t1, rows]) if given else None
                seg = cell.forward(xs, kept, p, m, workspace=ws, scan_weights=False, **kw)[2]
            dys = xp.ascontiguousarray(dy[t0:t1, rows])
            dkw = {} if dsh_in is None else {"dshared": xp.ascontiguousarray(dsh_in[t0:t1, rows])}
            if cell.writes_into:
                dxs = dx[t0:t1] if whole else empty(ws, xs.shape, dx.dtype, xp)
                _, dstate, grads = cell.backward(dys, seg, dstate, workspace=ws, into=(dxs, acc))
            else:
                dxs, dstate, grads, *dsh = cell.backward(dys, seg, dstate, workspace=ws, **dkw)
                if dsh_out is not None:
                    dsh_out[t0:t1, rows] = dsh[0]
                for name, g in grads.items():
                    acc[name] = acc[name] + g if name in acc else g
                grads = acc
                if whole:
                    dx[t0:t1] = dxs
            if not whole:
                dx[t0:t1, rows] = dxs
                if cell.writes_into:
                    ws.give(dxs)
            self._give(seg, ws)
        return dstate, grads

    # --- one step -----------------------------------------------------------------------------------

    def input_gates(self, E):
        """E (V, D) -> E Wx + b (V, G*H) of the first layer: for an input that is a row of a table (an
        embedding), `step(None, state, x_gates=table[tokens])` then skips the first layer's input
        product, a quarter of a 2-layer LSTM's weight traffic per sampled character."""
        return self.cell.input_gates(E, self.layer_params(0, 0))

    def step(self, x, state=None, *, x_gates=None):
        """One time step for inference (sampling, streaming, decoding): x (N, D) -> (y (N, H), new
        state), through the cell's own one-step function.

        Costs one small product per matrix and layer: no sequence buffers, no cache, no dropout, and the
        weights are not scanned for NaN/inf at every call (`forward` checks them). Unidirectional only.
        x_gates: (N, G*H) the first layer's x Wx + b computed ahead (see `input_gates`); x is then None.
        """
        if self.bidirectional:
            raise ValueError("step() runs forward in time; a bidirectional layer needs the whole sequence")
        if x_gates is None:
            expect_shape("x", x, (None, self.input_size), ("N", "D"))
            N = x.shape[0]
        else:
            expect_shape("x_gates", x_gates, (None, self.cell.blocks * self.hidden_size), ("N", "G*H"))
            N = x_gates.shape[0]
        parts = self._split_state(state, N)
        xp = get_array_module(parts[0])
        new = [xp.empty_like(s) for s in parts]
        inp = x
        shared = {"shared": None} if self.cell.shared else {}
        with blas_single_thread():  # tiny products: a second BLAS thread only adds hand-offs
            for k in range(self.num_layers):
                inp, out, *sh = self.cell.step(inp, tuple(s[k] for s in parts), self.layer_params(k, 0),
                                               x_gates=x_gates if k == 0 else None, **shared)
                if shared and k == 0:
                    shared["shared"] = sh[0]
                for dst, src in zip(new, out):
                    dst[k] = src
        return inp, self.join_state(new)


PRECISIONS = ("32", "bf16-mixed")
_said: set = set()  # the bf16 fallback is said once per process


def _with_precision(cell, precision):
    """The cell that computes in `precision` (see Recurrent)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "32":
        return cell
    make = getattr(cell, "bf16_mixed", None)
    if make is None:
        raise ValueError(f"precision={precision!r}: the {cell.name} cell has no bf16 path yet (the "
                         f"cells with one: lstm)")
    from rnnkit.kernels import bf16

    if bf16.tier() == "none":
        if "none" not in _said:
            _said.add("none")
            print(f"rnnkit: precision {precision} runs in float32 here: no bf16 unit "
                  f"({bf16.detect()['reason']})", file=sys.stderr)
        return cell
    return make()


# --- one class per cell ---------------------------------------------------------------------------

_LAYER_CLASSES: dict = {}


def layer_class(cell) -> type:
    """The layer class of a cell class (or registered name): `layer_class("lstm")` is `rnnkit.LSTM`,
    a `Recurrent` whose constructor takes the cell's options as keywords beside the layer's own."""
    cls = cells.get_class(cell) if isinstance(cell, str) else cell
    if cls not in _LAYER_CLASSES:
        option_names = [f for f in cls.__dataclass_fields__]

        def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0, *,
                     dtype=DEFAULT_DTYPE, seed=0, recompute=None, precision="32", **options):
            Recurrent.__init__(self, cls(**options), input_size, hidden_size, num_layers, bidirectional,
                               dropout, dtype, seed, recompute, precision)

        doc = (cls.__doc__ or "").strip()
        opts = f" Cell options (keywords): {', '.join(option_names)}." if option_names else ""
        _LAYER_CLASSES[cls] = type(cls.title or cls.__name__, (Recurrent,), {
            "__init__": __init__, "__module__": __name__, "cell_class": cls,
            "__doc__": f"A stack of {cls.title or cls.name} layers (rnnkit.layers.Recurrent). {doc}{opts}",
            "from_cell": classmethod(_from_cell)})
    return _LAYER_CLASSES[cls]


def _from_cell(layer_cls, cell, input_size, hidden_size, **kwargs):
    layer = layer_cls.__new__(layer_cls)
    Recurrent.__init__(layer, cell, input_size, hidden_size, **kwargs)
    return layer


def layer_classes(plugins: bool = True) -> dict:
    """{class name: layer class} of every registered cell ("LSTM": rnnkit.LSTM, ...); plugins=False:
    of those registered so far, without importing the plugins (`rnnkit.cells.load_plugins`)."""
    out = {}
    for name in cells.names(plugins):
        cls = cells.get_class(name)
        out.setdefault(cls.title or cls.__name__, layer_class(cls))
    return out


def make_recurrent(cell: str, input_size, hidden_size, *, num_layers=1, bidirectional=False, dropout=0.0,
                   dtype=DEFAULT_DTYPE, seed=0, recompute=None, precision="32",
                   **options) -> Recurrent:
    """Build a recurrent layer by the cell's registered name (`rnnkit.cells.names()`). Options the
    cell does not have are left out, so one call can carry, say, the LSTM's `forget_bias` whichever cell
    it names."""
    c = cells.create(cell, strict=False, **options)
    return layer_class(type(c)).from_cell(c, input_size, hidden_size, num_layers=num_layers,
                                          bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                                          seed=seed, recompute=recompute, precision=precision)
