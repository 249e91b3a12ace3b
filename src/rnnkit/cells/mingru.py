"""minGRU: a gated recurrence whose gates read the input alone (Feng et al. 2024, "Were RNNs All We
Needed?"), one of the linear recurrences of the recent revival (with Mamba's and RWKV's): the state
enters each step only linearly, so no matrix product is left inside the time loop.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    z_t  = sigmoid(x_t Wz + bz)                 update gate, from the input only
    c_t  = x_t Wc + bc                          candidate state (no tanh: minGRU's)
    h_t  = (1 - z_t) h_{t-1} + z_t c_t          = a_t h_{t-1} + b_t: linear in h

Buffers: x (T, N, D); Wx (D, 2H) = [Wz | Wc]; b (2H,) = [bz | bc]; h (T+1, N, H) with h[0] the initial
state; gates (T, N, 2H) = [z | c] after the sigmoid. Compared with the GRU, the reset gate is gone and
neither gate nor candidate reads h_{t-1}: the input projection of all steps is one product before the
loop, the loop is element-wise (a first-order linear recurrence, `linear_scan`, which is associative and
so can also run as a parallel prefix scan in log2 T passes), and BPTT is one reverse scan followed by
two products. What it gives up: the state cannot choose what to forget from what it holds, only from
what it reads. Derivation in docs/derivations/mingru.md. The cell's declaration is `MinGRUCell`; its
time loops are written twice, here in NumPy (the reference) and in mingru.c (compiled), tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Gate
from rnnkit.cells.common import (InputOnlyCell, expect_float, expect_shape, final_grad,
                                 input_only_args, input_projection, input_projection_grads,
                                 sigmoid_, step_gates)
from rnnkit.functional.scan import linear_scan
from rnnkit.kernels import LoopKernel

SOURCE = Path(__file__).with_name("mingru.c")


class MinGRUCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    gates: object  # (T, N, 2H): [z | c] after the sigmoid
    Wx: object  # (D, 2H)
    mask: object  # (T, N) bool or None


def mingru_forward(x, h0, Wx, b, mask=None, *, scan_weights=True, parallel=False):
    """Run minGRU over x (T, N, D) from h0 (N, H). Returns h (T+1, N, H) and the cache.

    At a padded step (mask 0) the state is carried: a = 1, b = 0 there. scan_weights: see lstm_forward;
    parallel: the scan's form (`linear_scan`).
    """
    T, N, D, H, mask = input_only_args(x, h0, Wx, b, mask, scan_weights, 2, ("bz", "bc"))
    xp = get_array_module(x)
    gates = input_projection(x, Wx, b)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    if parallel:
        mingru_fw(T, N, H, gates, h, mask, parallel=True)
    else:
        get_ops(x, gates).run(MINGRU_FW, T=T, N=N, H=H, gates=gates, h=h, mask=mask)
    return h, MinGRUCache(x, h, gates, Wx, mask)


def mingru_fw(T, N, H, gates, h, mask, parallel=False):
    """The forward (the reference of mingru.c's `mingru_fw`, in place): gates (T, N, 2H) = [z | c]
    pre-activations in, z through the sigmoid out; h (T+1, N, H) with h[0] set, filled by the scan
    (`linear_scan`, sequential or parallel)."""
    xp = get_array_module(gates)
    z, c = gates[..., :H], gates[..., H:]
    sigmoid_(z, xp)
    a = 1 - z                       # a_t = 1 - z_t
    bt = z * c                      # b_t = z_t c_t
    if mask is not None:            # a padded step carries h_{t-1}
        pad = ~mask[:, :, None]
        xp.copyto(a, 1, where=pad)
        xp.copyto(bt, 0, where=pad)
    h[:] = linear_scan(a, bt, h[0], parallel)


def mingru_recompute(x, h, Wx, b, mask=None):
    """The cache of `mingru_forward` rebuilt from the hidden states it produced: only the gates, one
    product and a sigmoid (they do not depend on h), for exact BPTT in bounded memory."""
    xp = get_array_module(x)
    gates = input_projection(x, Wx, b)
    sigmoid_(gates[..., :b.shape[0] // 2], xp)
    return MinGRUCache(x, h, gates, Wx, mask)


def mingru_backward(dh, cache, dhT=None, trace=None, *, into=None):
    """BPTT for `mingru_forward`. dh: (T, N, H) gradient of h[1:]; dhT: (N, H) gradient of h[T] (from a
    later chunk), or None. Gradients at padded steps are ignored. into: (dx, acc) as in `lstm_backward`.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.

    Returns dx (T, N, D), dh0 (N, H), dWx (D, 2H), db (2H,).
    """
    x, h, gates, Wx, mask = cache
    T, N, D = x.shape
    H = gates.shape[-1] // 2
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    g_next = final_grad("dhT", dhT, N, H, x.dtype, xp)
    dgates = xp.empty((T, N, 2 * H), dtype=x.dtype)
    trace_dh = None if trace is None else xp.empty((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, gates, h).run(MINGRU_BW, T=T, N=N, H=H, dh=dh, gates=gates, h=h, mask=mask,
                              dh_next=g_next, dgates=dgates, trace_dh=trace_dh)
    if trace is not None:
        trace_dh[0] = g_next
        trace["dh"] = trace_dh
    dx, dWx, db = input_projection_grads(x, dgates, Wx, into)
    return dx, g_next, dWx, db


def mingru_bw(T, N, H, dh, gates, h, mask, dh_next, dgates, trace_dh):
    """The BPTT loop (the reference of mingru.c's `mingru_bw`, in place): dgates (T, N, 2H) out, the
    pre-activations' gradient; dh_next (N, H) turns from the gradient of h[T] into that of h[0];
    trace_dh (T+1, N, H) or None: dL/dh_t at t >= 1."""
    xp = get_array_module(dh)
    g_next = dh_next
    z, c = gates[..., :H], gates[..., H:]
    a = 1 - z
    if mask is not None:
        xp.copyto(a, 1, where=~mask[:, :, None])
    # The reverse scan: g_t = dL/dh_t (all paths) = dh_t + a_{t+1} g_{t+1}, from g_T = dh_T + dhT.
    g = xp.empty((T, N, H), dtype=dh.dtype)  # g[t] = dL/dh[t+1]
    for t in reversed(range(T)):
        if mask is None:
            xp.add(dh[t], g_next, out=g[t])
        else:  # the loss never reads a padded output
            xp.add(xp.where(mask[t][:, None], dh[t], 0), g_next, out=g[t])
        xp.multiply(g[t], a[t], out=g_next)  # dh_{t-1} = g_t a_t
    if trace_dh is not None:
        trace_dh[1:] = g
    dz, dc = dgates[..., :H], dgates[..., H:]
    xp.multiply(g, c - h[:-1], out=dz)   # dz = g (c - h_{t-1}), then through the sigmoid:
    dz *= z * (1 - z)
    xp.multiply(g, z, out=dc)            # dc = g z
    if mask is not None:                 # a padded step's gates were not used
        xp.copyto(dgates, 0, where=~mask[:, :, None])


def mingru_step(x, h, Wx, b, *, x_gates=None):
    """One inference step: x (N, D), h (N, H) -> h_t (N, H). x_gates: (N, 2H) = x Wx + b computed
    ahead (an embedding's rows, `Recurrent.input_gates`); x is then None."""
    xp = get_array_module(h)
    H = h.shape[-1]
    gates = step_gates(x, x_gates, {"h": h}, Wx, b, 2 * H)
    N = gates.shape[1]
    hh = xp.empty((2, N, H), dtype=gates.dtype)
    hh[0] = h
    get_ops(gates, hh).run(MINGRU_FW, T=1, N=N, H=H, gates=gates, h=hh, mask=None)
    return hh[1]


# The compiled time loops: each the entry point of the same name in mingru.c, with the function above
# as its reference (the same arguments by name). No product in the loop: its O(N H) element-wise step
# is counted as one H x H block, so that long loops split across threads.
MINGRU_FW = LoopKernel("mingru_fw", SOURCE, mingru_fw, blocks=1)
MINGRU_BW = LoopKernel("mingru_bw", SOURCE, mingru_bw, blocks=1)


@dataclass
class MinGRUCell(InputOnlyCell):
    """minGRU (Feng et al. 2024): h_t = (1 - z_t) h_{t-1} + z_t c_t with z_t = sigmoid(x_t Wz + bz) and
    c_t = x_t Wc + bc; one layer and direction has Wx = [Wz | Wc] (D, 2H) and b = [bz | bc] (2H,), no
    recurrent weights, so the time loop is an element-wise linear scan. Stacked layers give the depth
    that lets it model what a GRU does with its state (the paper's models stack three or more)."""

    # the update gate's bias bz at initialisation: negative keeps the state by default (z = sigmoid(bz)
    # small, h_t ~ h_{t-1}), as the LSTM's forget bias does; -4 (a state that decays by 2% a step) took
    # minGRU from T=50 to T=400 on the adding problem (docs/RESULTS.md); None: uniform like the rest
    update_bias: float | None = field(default=None, metadata={
        "help": "the update gate's bias at initialisation; negative keeps the state (e.g. -4; "
                "default: uniform like the other weights)"})

    name = "mingru"
    title = "MinGRU"
    summary = "minGRU (Feng et al. 2024): gates from the input only, the loop a linear scan"
    # the candidate c is linear (unbounded): only the update gate is shown
    gates = (Gate("z", "update gate"),)
    blocks = 2
    functions = (mingru_forward, mingru_backward, mingru_recompute, mingru_step)
    step_blocks = 2

    def init_params(self, rng, D, H, dtype):
        p = super().init_params(rng, D, H, dtype)
        if self.update_bias is not None:
            p["b"][:H] = self.update_bias
        return p

