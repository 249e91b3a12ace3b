"""Recurrent layers: `RNN`, `LSTM`, `GRU` and `MinGRU`, each with `num_layers`, dropout between layers,
and a bidirectional option. They own the weights; the math is in `rnnkit.functional`.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size    L  layers    K  directions (1 or 2)

    x       (T, N, D)        input, time-major
    out     (T, N, K*H)      the last layer's hidden state at every step (forward and reverse concatenated)
    state   (L*K, N, H)      initial / final hidden state, PyTorch's order (layer-major, then direction);
                             the LSTM's state is the pair (h, c)
    mask    (T, N)           valid steps; each column a prefix of ones (variable lengths in one batch)

At padded steps the state is carried unchanged, so `out` repeats the last state there and the final
state is each sequence's own. The reverse direction reads each sequence backwards within its length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from rnnkit import kernels
from rnnkit.backend import DEFAULT_DTYPE, get_array_module
from rnnkit.functional import (
    dropout_backward,
    dropout_forward,
    gru_backward,
    gru_forward,
    gru_recompute,
    lstm_backward,
    lstm_forward,
    lstm_recompute,
    mingru_backward,
    mingru_forward,
    mingru_recompute,
    reverse_padded,
    rnn_backward,
    rnn_forward,
    rnn_recompute,
)
from rnnkit.functional._checks import check_mask, expect_shape
from rnnkit.functional.gru import gru_step
from rnnkit.functional.lstm import lstm_step
from rnnkit.functional.mingru import mingru_step
from rnnkit.functional.rnn import rnn_step
from rnnkit.kernels import blas_single_thread, row_parts
from rnnkit.kernels.workspace import Workspace, empty
from rnnkit.layers.module import Module


@dataclass(frozen=True)
class CellKind:
    """How one cell type plugs into the shared stacking / direction logic."""

    name: str
    gates: int  # weight blocks per cell: 1 (RNN), 3 (GRU), 4 (LSTM), 2 (minGRU)
    has_cell_state: bool  # the LSTM carries (h, c)
    # (x, state, params, mask, workspace=None, scan_weights=True) -> (h (T+1, N, H), final state, cache)
    forward: Callable
    backward: Callable  # (dy, cache, dstate, workspace=None, into=None) -> (dx, dstate0, {param: grad})
    # (x, h (T+1, N, H) from forward, the state at h[0] beyond h[0] itself (LSTM: (c0,); GRU, RNN: ()),
    #  params, mask, workspace) -> forward's cache, rebuilt
    recompute: Callable
    scratch: tuple = ()  # cache fields that are the cell's own buffers (pooled once backward used them)
    recurrent_weights: bool = True  # False: no Wh, the gates read the input only (minGRU)


def _rnn_fw(nonlinearity):
    def fw(x, state, p, mask, workspace=None, scan_weights=True):
        h, cache = rnn_forward(x, state[0], p["Wx"], p["Wh"], p["b"], mask, nonlinearity,
                               scan_weights=scan_weights)
        return h, (h[-1],), cache

    return fw


def _rnn_re(nonlinearity):
    def re(x, h, kept, p, mask, workspace=None):
        return rnn_recompute(x, h, p["Wx"], p["Wh"], mask, nonlinearity)

    return re


def _rnn_bw(dy, cache, dstate, workspace=None, into=None):
    dx, dh0, dWx, dWh, db = rnn_backward(dy, cache, dstate[0], workspace=workspace, into=into)
    return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db}


def _lstm_fw(x, state, p, mask, workspace=None, scan_weights=True):
    h, c, cache = lstm_forward(x, state[0], state[1], p["Wx"], p["Wh"], p["b"], mask,
                               workspace=workspace, scan_weights=scan_weights)
    return h, (h[-1], c[-1]), cache


def _lstm_re(x, h, kept, p, mask, workspace=None):
    return lstm_recompute(x, h, kept[0], p["Wx"], p["Wh"], p["b"], mask, workspace=workspace)


def _lstm_bw(dy, cache, dstate, workspace=None, into=None):
    dx, dh0, dc0, dWx, dWh, db = lstm_backward(dy, cache, dstate[0], dstate[1], workspace=workspace,
                                               into=into)
    return dx, (dh0, dc0), {"Wx": dWx, "Wh": dWh, "b": db}


def _gru_fw(x, state, p, mask, workspace=None, scan_weights=True):
    h, cache = gru_forward(x, state[0], p["Wx"], p["Wh"], p["b"], p["bhn"], mask, workspace=workspace,
                           scan_weights=scan_weights)
    return h, (h[-1],), cache


def _gru_re(x, h, kept, p, mask, workspace=None):
    return gru_recompute(x, h, p["Wx"], p["Wh"], p["b"], p["bhn"], mask, workspace=workspace)


def _gru_bw(dy, cache, dstate, workspace=None, into=None):
    dx, dh0, dWx, dWh, db, dbhn = gru_backward(dy, cache, dstate[0], workspace=workspace, into=into)
    return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db, "bhn": dbhn}


def _mingru_fw(x, state, p, mask, workspace=None, scan_weights=True):
    h, cache = mingru_forward(x, state[0], p["Wx"], p["b"], mask, scan_weights=scan_weights)
    return h, (h[-1],), cache


def _mingru_re(x, h, kept, p, mask, workspace=None):
    return mingru_recompute(x, h, p["Wx"], p["b"], mask)


def _mingru_bw(dy, cache, dstate, workspace=None, into=None):
    dx, dh0, dWx, db = mingru_backward(dy, cache, dstate[0], into=into)
    return dx, (dh0,), {"Wx": dWx, "b": db}


class _Checkpointed(NamedTuple):
    """What a layer run with `recompute=k` keeps for backward: the input, the hidden states (the
    output) and, every k steps, the part of the state they do not hold (the LSTM's cell state)."""

    x: object  # (T, N, D), the caller's input
    h: object  # (T+1, N, H), the hidden states: h[1:] is this direction's output
    starts: list  # first step of each segment
    states: list  # at each segment's start the state beyond h: (c,) for the LSTM, () otherwise
    mask: object  # (T, N) or None


# Passes whose largest product has fewer multiply-adds run on one BLAS thread.
SMALL_PASS_MACS = 16 * 2**20


class Recurrent(Module):
    """A stack of `num_layers` recurrent layers of one cell kind, optionally bidirectional.

    Parameters are named `l{k}.Wx`, `l{k}.Wh`, `l{k}.b` (`l{k}.bhn` too for the GRU, no `Wh` for
    minGRU); the reverse
    direction of layer k is `l{k}_reverse.*`. Initialisation follows PyTorch: U(-1/sqrt(H), 1/sqrt(H)).
    recompute: None for plain BPTT; an int k (or "sqrt") keeps, beyond the hidden states (the output),
    the state every k steps and rebuilds each segment's gates in backward from the hidden states: the
    same gradients in O(T/k + k) further activation memory for about one extra forward. (The hidden
    states are the output of a one-direction layer; a bidirectional layer, or one followed by dropout,
    holds them beside its output, one (T, N, H) array per direction.)
    """

    def __init__(self, kind: CellKind, input_size, hidden_size, num_layers=1, bidirectional=False,
                 dropout=0.0, dtype=DEFAULT_DTYPE, seed=0, recompute=None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.kind = kind
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bidirectional, self.dropout = num_layers, bidirectional, dropout
        self.num_directions = 2 if bidirectional else 1
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)  # weights now, dropout masks later
        H, G = hidden_size, kind.gates
        bound = 1.0 / math.sqrt(H)
        for k in range(num_layers):
            D = input_size if k == 0 else H * self.num_directions
            for d in range(self.num_directions):
                pre = self._prefix(k, d)
                u = lambda *shape: self.rng.uniform(-bound, bound, shape).astype(dtype)  # noqa: E731
                self.add_param(pre + "Wx", u(D, G * H))
                if kind.recurrent_weights:
                    self.add_param(pre + "Wh", u(H, G * H))
                self.add_param(pre + "b", u(G * H))
                if kind.name == "gru":
                    self.add_param(pre + "bhn", u(H))
        self._caches = None
        # Exact BPTT in bounded memory (Chen et al. 2016): with recompute=k, forward keeps only the state
        # at every k-th step and backward re-runs each k-step segment before back-propagating through
        # it; None runs plain BPTT. "sqrt" picks k = ceil(sqrt(T)) for each call.
        self.recompute = recompute
        self._ws = Workspace()  # scratch buffers reused across training steps
        self._part_ws = []  # one per part of the batch rows run on its own thread (recompute)
        self._consumed = []  # caches whose backward ran: their buffers return to the pool next forward

    @staticmethod
    def _prefix(k, d):
        return f"l{k}{'_reverse' if d else ''}."

    def _layer_params(self, k, d):
        pre = self._prefix(k, d)
        return {name[len(pre):]: p for name, p in self.params.items() if name.startswith(pre)}

    def init_state(self, N, xp=np):
        """Zero initial state: (L*K, N, H), or the pair (h, c) for the LSTM."""
        shape = (self.num_layers * self.num_directions, N, self.hidden_size)
        h = xp.zeros(shape, dtype=self.dtype)
        return (h, xp.zeros(shape, dtype=self.dtype)) if self.kind.has_cell_state else h

    def _split_state(self, state, N):
        """Turn the user's state into a tuple of (L*K, N, H) arrays, checking shapes."""
        shape = (self.num_layers * self.num_directions, N, self.hidden_size)
        if state is None:
            state = self.init_state(N)
        parts = tuple(state) if self.kind.has_cell_state else (state,)
        names = ("h0", "c0") if self.kind.has_cell_state else ("h0",)
        if len(parts) != len(names):
            raise ValueError(f"state for {self.kind.name} must be {names}, got {len(parts)} arrays")
        for name, s in zip(names, parts):
            expect_shape(name, s, shape, ("L*K", "N", "H"))
        return parts

    def _join_state(self, parts):
        return tuple(parts) if self.kind.has_cell_state else parts[0]

    def _small(self, T, N):
        """True when even the largest product of a pass (the input projection of all steps) is small:
        then a second BLAS thread only adds hand-offs, ruinous on a busy machine (50x at (50,1,64,64))."""
        G, H = self.kind.gates, self.hidden_size
        D = max(self.input_size, H * self.num_directions)
        K = D + H if self.kind.recurrent_weights else D  # [x, h] against [Wx; Wh], or x alone
        return T * N * G * H * K < SMALL_PASS_MACS

    def forward(self, x, state=None, mask=None):
        """x: (T, N, D) -> out (T, N, K*H), final state (L*K, N, H) (a pair for the LSTM)."""
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
        for k in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = k * self.num_directions + d
                xin = reverse_padded(inp, mask) if d else inp
                h, final, cache = self._cell_forward(xin, tuple(s[i] for s in parts),
                                                     self._layer_params(k, d), mask)
                for f, s in zip(finals, final):
                    f[i] = s
                outs.append(reverse_padded(h[1:], mask) if d else h[1:])
                caches.append(cache)
            inp = xp.concatenate(outs, axis=-1) if self.num_directions == 2 else outs[0]
            drop = None
            if k < self.num_layers - 1 and self.dropout > 0:
                inp, drop = dropout_forward(inp, self.dropout, self.rng, self.training)
            caches.append(drop)
        self._caches = (mask, caches)
        return inp, self._join_state(finals)

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
        expect_shape("dout", dout, (T, N, self.num_directions * self.hidden_size), ("T", "N", "K*H"))
        H, K = self.hidden_size, self.num_directions
        zeros = self.init_state(N)
        dparts = self._split_state(dstate if dstate is not None else zeros, N)
        xp = get_array_module(dout)
        dstate0 = [xp.empty_like(s) for s in dparts]
        dinp = dout
        for k in reversed(range(self.num_layers)):
            drop = caches[k * (K + 1) + K]
            dinp = dropout_backward(dinp, drop)
            dx = None
            for d in reversed(range(K)):
                i = k * K + d
                dy = dinp[..., d * H:(d + 1) * H]
                if d:
                    dy = reverse_padded(dy, mask)
                dxd, ds0, grads = self._cell_backward(xp.ascontiguousarray(dy), caches[k * (K + 1) + d],
                                                      tuple(s[i] for s in dparts), self._layer_params(k, d))
                if d:
                    dxd = reverse_padded(dxd, mask)
                dx = dxd if dx is None else dx + dxd
                for g0, s in zip(dstate0, ds0):
                    g0[i] = s
                pre = self._prefix(k, d)
                for name, g in grads.items():
                    self.grads[pre + name] += g
            dinp = dx
        self._consumed = [c for c in caches if hasattr(c, "_fields") and "Wh" in c._fields]
        return dinp, self._join_state(dstate0)

    # --- buffers, recomputation, one step ---------------------------------------------------------

    def _give(self, cache, ws=None):
        """Return a consumed cell cache's own buffers to the workspace."""
        (ws or self._ws).give(*(getattr(cache, f) for f in self.kind.scratch))

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
        all its segments on one thread (`kernels.split_rows`), as the rows of a batch never meet.
        One part for arrays other than NumPy's (a GPU runs its own parallelism)."""
        threads = kernels.threads() if xp is np else 1
        parts = row_parts(T, N, self.hidden_size ** 2 * self.kind.gates, threads)
        while len(self._part_ws) < len(parts):
            self._part_ws.append(Workspace())
        return parts

    def _cell_forward(self, x, state, p, mask):
        """One direction of one layer over the sequence -> (h (T+1, N, H), final state, cache)."""
        T, N, _ = x.shape
        k = self._segment(T)
        if k is None:
            return self.kind.forward(x, state, p, mask, self._ws)
        xp = get_array_module(x)
        h = xp.empty((T + 1,) + state[0].shape, dtype=x.dtype)
        h[0] = state[0]
        parts = self._row_parts(T, N, xp)

        def run(i, n0, n1):
            rows = slice(n0, n1)
            return self._forward_segments(x, h, tuple(s[rows] for s in state), p, mask, k, rows,
                                          self._part_ws[i] if len(parts) > 1 else self._ws)

        outs = kernels.split_rows(run, parts)  # per part: (states at the segment starts, final state)
        states = [tuple(xp.concatenate([o[0][j][q] for o in outs]) for q in range(len(state) - 1))
                  for j in range(len(outs[0][0]))]
        final = tuple(xp.concatenate([o[1][q] for o in outs]) for q in range(len(state)))
        return h, final, _Checkpointed(x, h, list(range(0, T, k)), states, mask)

    def _forward_segments(self, x, h, state, p, mask, k, rows, ws):
        """Forward of the batch rows `rows`, k steps at a time, writing h[1:, rows] and keeping only the
        state at each segment's start beyond its h, which h itself holds -> (those, the final state)."""
        xp = get_array_module(x)
        T = x.shape[0]
        states = []
        for t0 in range(0, T, k):
            t1 = min(T, t0 + k)
            states.append(state[1:])
            m = None if mask is None else mask[t0:t1, rows]
            hs, final, cache = self.kind.forward(x[t0:t1, rows], state, p, m, ws, scan_weights=t0 == 0)
            h[t0 + 1:t1 + 1, rows] = hs[1:]
            state = tuple(xp.array(f) for f in final)  # copies: final views buffers pooled next line
            self._give(cache, ws)
        return states, state

    def _cell_backward(self, dy, cache, dstate, p):
        if not isinstance(cache, _Checkpointed):
            return self.kind.backward(dy, cache, dstate, self._ws)
        x = cache.x
        T, N, _ = x.shape
        xp = get_array_module(dy)
        # Wh^T made contiguous once for all segments, not by each segment's backward: the caches carry
        # Wh as the transpose of that copy, whose .T the backward then finds contiguous as it is.
        if self.kind.recurrent_weights:
            p = dict(p, Wh=xp.ascontiguousarray(p["Wh"].T).T)
        dx = xp.empty(x.shape, dtype=dy.dtype)
        parts = self._row_parts(T, N, xp)

        def run(i, n0, n1):
            rows = slice(n0, n1)
            return self._backward_segments(cache, dy, tuple(s[rows] for s in dstate), p, rows, dx,
                                           self._part_ws[i] if len(parts) > 1 else self._ws)

        outs = kernels.split_rows(run, parts)  # per part: (initial state's gradient, weight gradients)
        dstate0 = tuple(xp.concatenate([o[0][q] for o in outs]) for q in range(len(dstate)))
        grads = outs[0][1]
        for o in outs[1:]:
            for name, g in o[1].items():
                grads[name] += g
        return dx, dstate0, grads

    def _backward_segments(self, cache, dy, dstate, p, rows, dx, ws):
        """BPTT over the batch rows `rows`, the last segment first: each segment's cache is rebuilt
        from the hidden states forward kept (its products over all the segment's steps at once rather
        than step after step: lstm_recompute), then back-propagated. Writes dx[:, rows] ->
        (the initial state's gradient, the weight gradients summed over the segments)."""
        x, h, starts, states, mask = cache
        xp = get_array_module(dy)
        ends = starts[1:] + [x.shape[0]]
        acc = {}  # the weight gradients, summed over the segments in place
        whole = rows == slice(0, x.shape[1])
        for t0, t1, kept in reversed(list(zip(starts, ends, states))):
            m = None if mask is None else mask[t0:t1, rows]
            xs = xp.ascontiguousarray(x[t0:t1, rows])
            seg = self.kind.recompute(xs, xp.ascontiguousarray(h[t0:t1 + 1, rows]),
                                      tuple(s[rows] for s in kept), p, m, ws)
            dxs = dx[t0:t1] if whole else empty(ws, xs.shape, dx.dtype, xp)
            _, dstate, grads = self.kind.backward(xp.ascontiguousarray(dy[t0:t1, rows]), seg, dstate, ws,
                                                  (dxs, acc))
            if not whole:
                dx[t0:t1, rows] = dxs
                ws.give(dxs)
            self._give(seg, ws)
        return dstate, grads

    def input_gates(self, E):
        """E (V, D) -> E Wx + b (V, G*H) of the first layer: for an input that is a row of a table (an
        embedding), `step(None, state, x_gates=table[tokens])` then skips the first layer's input
        product, a quarter of a 2-layer LSTM's weight traffic per sampled character."""
        p = self._layer_params(0, 0)
        return E @ p["Wx"] + p["b"]

    def step(self, x, state=None, *, x_gates=None):
        """One time step for inference (sampling): x (N, D) -> (h (N, H), new state).

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
            expect_shape("x_gates", x_gates, (None, self.kind.gates * self.hidden_size), ("N", "G*H"))
            N = x_gates.shape[0]
        parts = self._split_state(state, N)
        step = _STEPS[self.kind.name]
        new = [np.empty_like(s) for s in parts]
        inp = x
        with blas_single_thread():  # tiny products: a second BLAS thread only adds hand-offs
            for k in range(self.num_layers):
                pre = self._prefix(k, 0)
                out = step(self, inp, tuple(s[k] for s in parts), pre, x_gates if k == 0 else None)
                for dst, src in zip(new, out):
                    dst[k] = src
                inp = out[0]
        return inp, self._join_state(new)


RNN_TANH = CellKind("rnn", 1, False, _rnn_fw("tanh"), _rnn_bw, _rnn_re("tanh"))
RNN_RELU = CellKind("rnn", 1, False, _rnn_fw("relu"), _rnn_bw, _rnn_re("relu"))
LSTM_KIND = CellKind("lstm", 4, True, _lstm_fw, _lstm_bw, _lstm_re, ("c", "gates", "tanh_c"))
GRU_KIND = CellKind("gru", 3, False, _gru_fw, _gru_bw, _gru_re, ("gates", "hn"))
MINGRU_KIND = CellKind("mingru", 2, False, _mingru_fw, _mingru_bw, _mingru_re, recurrent_weights=False)


def _lstm_step(layer, x, state, pre, xg):
    P = layer.params
    return lstm_step(x, state[0], state[1], P[pre + "Wx"], P[pre + "Wh"], P[pre + "b"], x_gates=xg)


def _gru_step(layer, x, state, pre, xg):
    P = layer.params
    return (gru_step(x, state[0], P[pre + "Wx"], P[pre + "Wh"], P[pre + "b"], P[pre + "bhn"],
                     x_gates=xg),)


def _rnn_step(layer, x, state, pre, xg):
    P = layer.params
    return (rnn_step(x, state[0], P[pre + "Wx"], P[pre + "Wh"], P[pre + "b"], layer.nonlinearity,
                     x_gates=xg),)


def _mingru_step(layer, x, state, pre, xg):
    P = layer.params
    return (mingru_step(x, state[0], P[pre + "Wx"], P[pre + "b"], x_gates=xg),)


_STEPS = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step, "mingru": _mingru_step}


class RNN(Recurrent):
    """Vanilla RNN, h_t = tanh(x_t Wx + h_{t-1} Wh + b); `nonlinearity="relu"` as an option."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 nonlinearity="tanh", dtype=DEFAULT_DTYPE, seed=0, recompute=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        kind = RNN_TANH if nonlinearity == "tanh" else RNN_RELU
        super().__init__(kind, input_size, hidden_size, num_layers, bidirectional, dropout, dtype, seed,
                         recompute)
        self.nonlinearity = nonlinearity


class LSTM(Recurrent):
    """LSTM with gates [i, f, o, g]; `forget_bias` sets the forget gate's bias at initialisation
    (1.0 is the usual choice, Jozefowicz et al. 2015; None keeps PyTorch's uniform initialisation)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 forget_bias=None, dtype=DEFAULT_DTYPE, seed=0, recompute=None):
        super().__init__(LSTM_KIND, input_size, hidden_size, num_layers, bidirectional, dropout, dtype,
                         seed, recompute)
        if forget_bias is not None:
            H = hidden_size
            for name, p in self.params.items():
                if name.endswith(".b"):
                    p[H:2 * H] = forget_bias


class GRU(Recurrent):
    """GRU in PyTorch's formulation (reset gate applied to h W_hn + b_hn)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 dtype=DEFAULT_DTYPE, seed=0, recompute=None):
        super().__init__(GRU_KIND, input_size, hidden_size, num_layers, bidirectional, dropout, dtype,
                         seed, recompute)


class MinGRU(Recurrent):
    """minGRU (Feng et al. 2024): h_t = (1 - z_t) h_{t-1} + z_t c_t with z_t = sigmoid(x_t Wz + bz) and
    c_t = x_t Wc + bc, Wx = [Wz | Wc] (D, 2H), b = [bz | bc]: no recurrent weights, so the time loop
    is an element-wise linear scan (rnnkit.functional.mingru). Stacked layers give the depth that lets
    it model what a GRU does with its state (the paper's models stack three or more).

    `update_bias` sets the update gate's bias bz at initialisation: negative keeps the state by default
    (z = sigmoid(bz) small, so h_t ~ h_{t-1}), as the LSTM's forget bias does; -4 (a state that decays by
    2% a step) took minGRU from T=50 to T=400 on the adding problem (docs/RESULTS.md). None keeps the
    uniform initialisation of the other cells."""

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 update_bias=None, dtype=DEFAULT_DTYPE, seed=0, recompute=None):
        super().__init__(MINGRU_KIND, input_size, hidden_size, num_layers, bidirectional, dropout,
                         dtype, seed, recompute)
        if update_bias is not None:
            for name, p in self.params.items():
                if name.endswith(".b"):
                    p[:hidden_size] = update_bias


def make_recurrent(cell: str, input_size, hidden_size, **kwargs) -> Recurrent:
    """Build a recurrent layer by name: 'lstm', 'gru', 'rnn' (tanh), 'rnn_relu' or 'mingru'."""
    cell = cell.lower()
    if cell != "lstm":
        kwargs.pop("forget_bias", None)
    if cell != "mingru":
        kwargs.pop("update_bias", None)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, **kwargs)
    if cell == "gru":
        return GRU(input_size, hidden_size, **kwargs)
    if cell in ("rnn", "rnn_tanh", "rnn_relu"):
        return RNN(input_size, hidden_size, nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kwargs)
    if cell == "mingru":
        return MinGRU(input_size, hidden_size, **kwargs)
    raise ValueError(f"cell must be one of lstm, gru, rnn, rnn_relu, mingru; got {cell!r}")
