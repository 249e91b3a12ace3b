"""The GRU (Cho et al. 2014) in PyTorch's formulation, so that weights are interchangeable: its math
over a whole sequence (`gru_forward` beside `gru_backward`, `gru_recompute`, `gru_step`) and its
declaration, `GRUCell`.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    r_t = sigmoid(x_t W_xr + b_r + h_{t-1} W_hr)              (b_r = b_ir + b_hr)
    z_t = sigmoid(x_t W_xz + b_z + h_{t-1} W_hz)              (b_z = b_iz + b_hz)
    n_t = tanh(x_t W_xn + b_in + r_t * (h_{t-1} W_hn + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Buffers:
    x      (T, N, D)       h (T+1, N, H), h[0] the initial state
    gates  (T, N, 3H)      activated [r, z, n] per step
    hn     (T, N, H)       h_{t-1} W_hn + b_hn, needed by the backward of r
    Wx (D, 3H)  Wh (H, 3H)  b (3H,) input-side biases (with b_hr, b_hz folded in)  bhn (H,)
b_hn cannot be folded into b because r multiplies it. Derivation in docs/derivations/gru.md. The time
loops are written twice, here in NumPy (the reference) and in gru.c (compiled), and tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Cell, Gate
from rnnkit.cells.common import (final_grad, input_grad, sigmoid_, step_gates, summed,
                                  wh_transposed_once)
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.kernels import LoopKernel
from rnnkit.kernels.workspace import empty

SOURCE = Path(__file__).with_name("gru.c")


class GRUCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    gates: object  # (T, N, 3H) activated [r, z, n]
    hn: object  # (T, N, H)
    Wx: object  # (D, 3H)
    Wh: object  # (H, 3H)
    mask: object  # (T, N) bool or None


def gru_forward(x, h0, Wx, Wh, b, bhn, mask=None, *, workspace=None, scan_weights=True):
    """Run a GRU over x.

    x: (T, N, D); h0: (N, H); Wx: (D, 3H); Wh: (H, 3H); b: (3H,); bhn: (H,); mask: (T, N) or None.
    Returns h: (T+1, N, H) and the cache. workspace: where gates and hn come from (see lstm_forward).
    scan_weights: False skips the weights' NaN/inf scan: a layer's later segments of one forward
    (recompute), whose weights the first segment scanned.
    """
    expect_shape("Wh", Wh, (None, None), ("H", "3H"))
    H = Wh.shape[0]
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], 3 * H), ("D", "3H")), "Wh": (Wh, (H, 3 * H), ("H", "3H")),
         "b": (b, (3 * H,), ("3H",)), "bhn": (bhn, (H,), ("H",))},
        mask,
        scan_weights,
    )
    xp = get_array_module(x)
    ops = get_ops(x, Wh, bhn)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    gates = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    ops.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, 3 * H))  # hoisted input projection
    gates += b
    hn = empty(workspace, (T, N, H), x.dtype, xp)
    ops.run(GRU_FW, T=T, N=N, H=H, gates=gates, h=h, hn=hn, hW=xp.empty((N, 3 * H), dtype=x.dtype),
            Wh=Wh, bhn=bhn, mask=mask)
    return h, GRUCache(x, h, gates, hn, Wx, Wh, mask)


def gru_fw(T, N, H, gates, h, hn, hW, Wh, bhn, mask):
    """The forward time loop (the reference of gru.c's `gru_fw`, in place): gates (T, N, 3H) hold the
    x-side pre-activations x_t Wx + b on entry, the activations on return; h (T+1, N, H) with h[0] set;
    hn (T, N, H) out: h_{t-1} W_hn + b_hn; hW (N, 3H) scratch."""
    xp = get_array_module(gates)
    for t in range(T):
        a = gates[t]
        xp.matmul(h[t], Wh, out=hW)
        a[:, : 2 * H] += hW[:, : 2 * H]
        sigmoid_(a[:, : 2 * H], xp)  # r, z
        r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        xp.add(hW[:, 2 * H :], bhn, out=hn[t])
        xp.multiply(r, hn[t], out=h[t + 1])  # h[t+1] as scratch before it holds the state
        n += h[t + 1]
        xp.tanh(n, out=n)  # n = tanh(x W_xn + b_in + r * (h W_hn + b_hn))
        xp.subtract(h[t], n, out=h[t + 1])
        h[t + 1] *= z
        h[t + 1] += n  # h_t = n + z * (h_{t-1} - n)
        if mask is not None:
            xp.copyto(h[t + 1], h[t], where=~mask[t][:, None])


def gru_recompute(x, h, Wx, Wh, b, bhn, mask=None, *, workspace=None):
    """The cache of `gru_forward` rebuilt from the hidden states that forward produced (exact BPTT in
    bounded memory; see `lstm_recompute`). With every h_{t-1} known, no step depends on another: two
    products over all steps, x Wx + b and h_{t-1} Wh, then the gates element-wise. Equal to the forward's
    cache to rounding. x: (T, N, D); h: (T+1, N, H) the forward's hidden states; mask is only kept in
    the cache (a padded step's gates are computed as the forward computed them, and never read).
    """
    T, N, D = x.shape
    H = Wh.shape[0]
    xp = get_array_module(x)
    ops = get_ops(x, Wh, bhn)
    gates = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    ops.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, 3 * H))
    gates += b
    hW = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    ops.matmul(h[:-1].reshape(T * N, H), Wh, out=hW.reshape(T * N, 3 * H))  # h_{t-1} Wh, all t
    hn = empty(workspace, (T, N, H), x.dtype, xp)
    ops.run(GRU_CELLS, T=T, N=N, H=H, gates=gates, hW=hW, hn=hn, bhn=bhn)
    if workspace is not None:
        workspace.give(hW)
    return GRUCache(x, h, gates, hn, Wx, Wh, mask)


def gru_cells(T, N, H, gates, hW, hn, bhn):
    """The element-wise part of `gru_recompute` (the reference of gru.c's `gru_cells`): gates (T, N, 3H)
    the x-side pre-activations in, activations out; hW (T, N, 3H) = h_{t-1} Wh of every step; hn out."""
    xp = get_array_module(gates)
    gates[..., : 2 * H] += hW[..., : 2 * H]
    sigmoid_(gates[..., : 2 * H], xp)  # r, z
    xp.add(hW[..., 2 * H :], bhn, out=hn)
    n = gates[..., 2 * H :]
    n += gates[..., :H] * hn
    xp.tanh(n, out=n)  # n = tanh(x W_xn + b_in + r * (h W_hn + b_hn))


def gru_backward(dh, cache, dhT=None, trace=None, *, workspace=None, into=None):
    """BPTT for `gru_forward`.

    dh: (T, N, H) gradient of h[1:]; dhT: (N, H) gradient of the final state or None.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.
    Returns dx (T, N, D), dh0 (N, H), dWx (D, 3H), dWh (H, 3H), db (3H,), dbhn (H,).
    into: (dx, acc) to write dx and sum the weight gradients across calls, as in `lstm_backward`.
    """
    x, h, gates, hn, Wx, Wh, mask = cache
    T, N, D = x.shape
    H = Wh.shape[0]
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    dh_next = final_grad("dhT", dhT, N, H, x.dtype, xp)
    dxa = empty(workspace, (T, N, 3 * H), x.dtype, xp)  # gradient of the input-side pre-activations
    dha = empty(workspace, (T, N, 3 * H), x.dtype, xp)  # gradient of h_{t-1} Wh (+ b_hn)
    WhT = xp.ascontiguousarray(Wh.T)  # contiguous once: faster than the transposed view at every step
    trace_dh = None
    if trace is not None:
        trace_dh = trace["dh"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, gates, WhT).run(
        GRU_BW, T=T, N=N, H=H, dh=dh, gates=gates, h=h, hn=hn, WhT=WhT, mask=mask, dh_next=dh_next,
        dxa=dxa, dha=dha, dht=xp.empty((N, H), dtype=x.dtype), trace_dh=trace_dh)
    if trace is not None:
        trace_dh[0] = dh_next
    dxa2 = dxa.reshape(T * N, 3 * H)
    dha2 = dha.reshape(T * N, 3 * H)
    dx, acc = into if into is not None else (None, None)
    dx = input_grad(dxa2, Wx, dx, (T, N, D))
    dWx = summed(acc, "dWx", x.reshape(T * N, D).T, dxa2)
    dWh = summed(acc, "dWh", h[:-1].reshape(T * N, H).T, dha2)
    db = summed(acc, "db", dxa2.sum(axis=0))
    dbhn = summed(acc, "dbhn", dha2[:, 2 * H :].sum(axis=0))
    if workspace is not None:
        workspace.give(dxa, dha)
    return dx, dh_next, dWx, dWh, db, dbhn


def gru_bw(T, N, H, dh, gates, h, hn, WhT, mask, dh_next, dxa, dha, dht, trace_dh):
    """The BPTT loop (the reference of gru.c's `gru_bw`, in place): fills dxa, dha (T, N, 3H), and turns
    dh_next (N, H) from the final state's gradient into the initial state's; dht (N, H) scratch."""
    xp = get_array_module(dh)
    tmp = xp.empty((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        a = gates[t]
        r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        dx_t, dh_t = dxa[t], dha[t]
        dr, dz, dn = dx_t[:, :H], dx_t[:, H : 2 * H], dx_t[:, 2 * H :]
        if mask is None:
            xp.add(dh[t], dh_next, out=dht)
        else:
            m = mask[t][:, None]
            xp.multiply(dh[t], m, out=dht)
            dht += dh_next
        if trace_dh is not None:
            trace_dh[t + 1] = dht
        xp.subtract(h[t], n, out=dz)
        dz *= dht  # dL/dz = dh * (h_{t-1} - n)
        xp.subtract(1, z, out=dn)
        dn *= dht  # dL/dn = dh * (1 - z)
        xp.multiply(n, n, out=tmp)
        xp.subtract(1, tmp, out=tmp)
        dn *= tmp  # through tanh: the gradient of n's pre-activation, input side
        xp.multiply(dn, hn[t], out=dr)  # dL/dr = dn_pre * hn
        xp.multiply(dn, r, out=dh_t[:, 2 * H :])  # dL/dhn = dn_pre * r
        drz = dx_t[:, : 2 * H]
        s = a[:, : 2 * H]
        drz *= s
        drz *= 1 - s  # through the sigmoids of r and z
        dh_t[:, : 2 * H] = drz
        if mask is not None:
            keep = ~m
            xp.copyto(dx_t, 0, where=keep)
            xp.copyto(dh_t, 0, where=keep)
        xp.matmul(dh_t, WhT, out=dh_next)
        xp.multiply(dht, z, out=tmp)
        dh_next += tmp  # dh_{t-1} = dh * z + d(h W_h) Wh^T
        if mask is not None:
            xp.copyto(dh_next, dht, where=keep)


def gru_step(x, h, Wx, Wh, b, bhn, *, x_gates=None):
    """One GRU step for inference: x (N, D), h (N, H) -> h_new. No cache; the weights are not scanned
    for NaN/inf (gru_forward does that). Same arithmetic as one step of gru_forward.
    x_gates: (N, 3H) x Wx + b computed ahead, used in place of x."""
    xp = get_array_module(h)
    H = Wh.shape[0]
    gates = step_gates(x, x_gates, {"h": h}, Wx, b, 3 * H)
    N = gates.shape[1]
    hh = xp.empty((2, N, H), dtype=gates.dtype)
    hh[0] = h
    get_ops(gates, Wh, bhn).run(GRU_FW, T=1, N=N, H=H, gates=gates, h=hh,
                                hn=xp.empty((1, N, H), h.dtype), hW=xp.empty((N, 3 * H), h.dtype),
                                Wh=Wh, bhn=bhn, mask=None)
    return hh[1]


# The compiled time loops: each the entry point of the same name in gru.c, with the function above as
# its reference (the same arguments by name).
GRU_FW = LoopKernel("gru_fw", SOURCE, gru_fw, blocks=3)
GRU_CELLS = LoopKernel("gru_cells", SOURCE, gru_cells, blocks=3)
GRU_BW = LoopKernel("gru_bw", SOURCE, gru_bw, blocks=3)


@dataclass
class GRUCell(Cell):
    """GRU with gates [r, z, n]: one layer and direction has Wx (D, 3H), Wh (H, 3H), b (3H,) (the input
    side's biases with b_hr, b_hz folded in) and bhn (H,), which the reset gate multiplies."""

    name = "gru"
    title = "GRU"
    summary = "gated recurrent unit: reset and update gates, no separate cell state"
    gates = (Gate("r", "reset gate"), Gate("z", "update gate"), Gate("n", "candidate (tanh)", "tanh"))
    scratch = ("gates", "hn")
    writes_into = True
    blocks = 3
    step_blocks = 3
    torch_mode = "GRU"

    def param_shapes(self, D, H):
        return {"Wx": (D, 3 * H), "Wh": (H, 3 * H), "b": (3 * H,), "bhn": (H,)}

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        h, cache = gru_forward(x, state[0], p["Wx"], p["Wh"], p["b"], p["bhn"], mask,
                               workspace=workspace, scan_weights=scan_weights)
        return h[1:], (h[-1],), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        dx, dh0, dWx, dWh, db, dbhn = gru_backward(dy, cache, dstate[0], trace, workspace=workspace,
                                                   into=into)
        return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db, "bhn": dbhn}

    def backward_params(self, p, xp):
        return wh_transposed_once(p, xp)

    def recompute(self, x, h, kept, p, mask=None, *, workspace=None):
        return gru_recompute(x, h, p["Wx"], p["Wh"], p["b"], p["bhn"], mask, workspace=workspace)

    def step(self, x, state, p, *, x_gates=None):
        h = gru_step(x, state[0], p["Wx"], p["Wh"], p["b"], p["bhn"], x_gates=x_gates)
        return h, (h,)

    def to_torch(self, p, H):
        b_hh = np.zeros_like(p["b"])
        b_hh[2 * H:] = p["bhn"]
        return p["Wx"].T, p["Wh"].T, p["b"].copy(), b_hh

    def from_torch(self, w_ih, w_hh, b_ih, b_hh, H):
        b = b_ih.copy()
        b[: 2 * H] += b_hh[: 2 * H]
        return {"Wx": w_ih.T, "Wh": w_hh.T, "b": b, "bhn": b_hh[2 * H:]}
