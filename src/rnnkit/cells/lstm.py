"""The LSTM (Hochreiter and Schmidhuber 1997): its math over a whole sequence (`lstm_forward` and
`lstm_backward` side by side, `lstm_recompute`, `lstm_step`) and its declaration, `LSTMCell`.

    i, f, o = sigmoid(x_t Wx + h_{t-1} Wh + b)[the first three blocks]
    g       = tanh(...)[the fourth block]
    c_t     = f * c_{t-1} + i * g                the cell state: an additive path through time
    h_t     = o * tanh(c_t)

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

Buffers (time-major, haste's layout):
    x      (T, N, D)       the input sequence
    h      (T+1, N, H)     hidden states; h[0] is the initial state, h[t+1] the output of step t
    c      (T+1, N, H)     cell states; c[0] is the initial cell state
    gates  (T, N, 4H)      activated gates per step, in the order [i, f, o, g]
    Wx     (D, 4H)  Wh (H, 4H)  b (4H,)   the one set of weights shared by every step

The gate order is [i, f, o, g] so that the three sigmoids act on one contiguous block; `rnnkit.interop`
reorders to PyTorch's [i, f, g, o]. The derivation is in docs/derivations/lstm.md. The time loops are
written twice, here in NumPy (the reference) and in lstm.c (compiled), and tested equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells.cell import Cell, Gate
from rnnkit.cells.common import (final_grad, input_and_weight_grads, sigmoid_, step_gates,
                                  wh_transposed_once)
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.kernels import LoopKernel
from rnnkit.kernels.workspace import empty

SOURCE = Path(__file__).with_name("lstm.c")


class LSTMCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H)
    c: object  # (T+1, N, H)
    gates: object  # (T, N, 4H) activated [i, f, o, g]
    tanh_c: object  # (T, N, H) tanh(c[t+1]), kept because backward needs it at every step
    Wx: object  # (D, 4H)
    Wh: object  # (H, 4H)
    mask: object  # (T, N) bool or None


def lstm_forward(x, h0, c0, Wx, Wh, b, mask=None, *, workspace=None, scan_weights=True):
    """Run an LSTM over x.

    x: (T, N, D); h0, c0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,); mask: (T, N) of valid steps or None.
    At a padded step (mask 0) the state is carried unchanged, so h[T], c[T] are each sequence's final state.
    Returns h: (T+1, N, H), c: (T+1, N, H), cache.
    workspace: a `rnnkit.kernels.workspace.Workspace` to take c, tanh_c and gates from (a layer's own),
    or None for fresh arrays.
    scan_weights: False skips the weights' NaN/inf scan: a layer's later segments of one forward
    (recompute), whose weights the first segment scanned.
    """
    expect_shape("Wh", Wh, (None, None), ("H", "4H"))
    H = Wh.shape[0]
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H)),
         "c0": (c0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], 4 * H), ("D", "4H")), "Wh": (Wh, (H, 4 * H), ("H", "4H")),
         "b": (b, (4 * H,), ("4H",))},
        mask,
        scan_weights,
    )
    xp = get_array_module(x)
    ops = get_ops(x, Wh)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    c = empty(workspace, (T + 1, N, H), x.dtype, xp)
    h[0] = h0
    c[0] = c0
    tanh_c = empty(workspace, (T, N, H), x.dtype, xp)
    # The input projection of every step at once: one (T*N, D) @ (D, 4H) product outside the loop.
    gates = empty(workspace, (T, N, 4 * H), x.dtype, xp)
    ops.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, 4 * H))
    # b is added to each row as the loop reaches it: a pass over all gates first costs ~2% more
    ops.run(LSTM_FW, T=T, N=N, H=H, gates=gates, h=h, c=c, tanh_c=tanh_c, Wh=Wh, b=b, mask=mask)
    return h, c, LSTMCache(x, h, c, gates, tanh_c, Wx, Wh, mask)


def lstm_pack_bf16(Wx, Wh):
    """Wx and Wh packed once for `lstm_forward_bf16` (`rnnkit.kernels.bf16.pack`): a layer keeps them
    while its weights are unchanged, so no step packs Wh again."""
    from rnnkit.kernels import bf16

    return bf16.pack(Wx), bf16.pack(Wh)


def lstm_forward_bf16(x, h0, c0, Wx, Wh, b, mask=None, *, packed=None, workspace=None,
                      scan_weights=True):
    """`lstm_forward` in bf16 mixed precision: the products take bf16 operands and sum in float32,
    everything else is float32 (the gates' arithmetic, the cell state, h itself):

        a_t = bf16(x_t) bf16(Wx) + bf16(h_{t-1}) bf16(Wh) + b        (float32 sums)

    on the tier `rnnkit.kernels.bf16.tier()` names; on a CPU with no bf16 unit (tier none) this is
    `lstm_forward` itself. x Wx is one product over all steps; the time loop is one compiled call
    (bf16.c's `rnnkit_bf16_lstm_fw`, the batch rows cut across rnnkit's threads), h_{t-1} rounded to
    bf16 as each step's product reads it. Wx and Wh are packed once per call, or taken from `packed`
    (`lstm_pack_bf16`). float32 only. Returns h, c, cache as lstm_forward; the cache is float32 and
    `lstm_backward` / `lstm_backward_bf16` take it as it is.
    """
    from rnnkit.kernels import bf16

    if bf16.tier() == "none":
        return lstm_forward(x, h0, c0, Wx, Wh, b, mask, workspace=workspace,
                            scan_weights=scan_weights)
    expect_shape("Wh", Wh, (None, None), ("H", "4H"))
    H = Wh.shape[0]
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H)),
         "c0": (c0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], 4 * H), ("D", "4H")), "Wh": (Wh, (H, 4 * H), ("H", "4H")),
         "b": (b, (4 * H,), ("4H",))},
        mask,
        scan_weights,
    )
    if x.dtype != np.float32:
        raise ValueError(f"lstm_forward_bf16: x has dtype {x.dtype}, expected float32 (the master "
                         f"copy; only the products round to bf16)")
    pWx, pWh = packed if packed is not None else lstm_pack_bf16(Wx, Wh)
    h = np.empty((T + 1, N, H), dtype=np.float32)
    c = empty(workspace, (T + 1, N, H), np.float32, np)
    h[0] = h0
    c[0] = c0
    tanh_c = empty(workspace, (T, N, H), np.float32, np)
    gates = empty(workspace, (T, N, 4 * H), np.float32, np)
    bf16.matmul(x.reshape(T * N, D), pWx, out=gates.reshape(T * N, 4 * H))  # x_t Wx, all steps
    # a_t += h_{t-1} Wh, the activations, c_t = f c_{t-1} + i g, h_t = o tanh(c_t), step by step
    bf16.lstm_fw(T, N, H, gates, h, c, tanh_c, pWh, np.ascontiguousarray(b, dtype=np.float32), mask)
    return h, c, LSTMCache(x, h, c, gates, tanh_c, Wx, Wh, mask)


def lstm_backward_bf16(dh, cache, dhT=None, dcT=None, trace=None, *, workspace=None, into=None):
    """`lstm_backward` in bf16 mixed precision: the gate arithmetic and the state gradients are
    float32 as there, and each product takes bf16 operands with float32 sums:

        dh_{t-1} = bf16(da_t) bf16(Wh^T)                  per step, Wh^T packed once per call
        dx = bf16(da) bf16(Wx^T)                          all steps at once
        [dWx; dWh; db] = bf16([x, h_{t-1}, 1])^T bf16(da)   one product, K = T N deep

    The weight gradients are float32 (float32 master weights and optimizer state). On tier none this
    is `lstm_backward` itself. Arguments and results as lstm_backward's (`into` too)."""
    from rnnkit.kernels import bf16

    if bf16.tier() == "none":
        return lstm_backward(dh, cache, dhT, dcT, trace, workspace=workspace, into=into)
    x, h, c, gates, tanh_c, Wx, Wh, mask = cache
    T, N, D = x.shape
    H = Wh.shape[0]
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    dh = np.ascontiguousarray(dh)
    dh_next = np.array(final_grad("dhT", dhT, N, H, x.dtype, np), dtype=np.float32, order="C")
    dc_next = np.array(final_grad("dcT", dcT, N, H, x.dtype, np), dtype=np.float32, order="C")
    da = empty(workspace, (T, N, 4 * H), np.float32, np)
    trace_dh = trace_dc = None
    if trace is not None:
        trace_dh = trace["dh"] = np.zeros((T + 1, N, H), dtype=np.float32)
        trace_dc = trace["dc"] = np.zeros((T + 1, N, H), dtype=np.float32)
    bf16.lstm_bw(T, N, H, dh, gates, c, tanh_c, bf16.pack(Wh.T), mask, dh_next, dc_next, da,
                 np.empty((N, H), dtype=np.float32), trace_dh, trace_dc)
    if trace is not None:
        trace_dh[0], trace_dc[0] = dh_next, dc_next
    da2 = da.reshape(T * N, 4 * H)
    dx, acc = into if into is not None else (None, None)
    if dx is not None and not dx.flags.c_contiguous:
        raise ValueError("into: dx must be C-contiguous")
    dx = bf16.matmul(da2, bf16.pack(Wx.T), out=None if dx is None else dx.reshape(T * N, D))
    # [x, h_{t-1}, 1] as the rows of one product (db from the row of ones), as lstm_backward
    xh = empty(workspace, (T * N, D + H + 1), np.float32, np)
    xh[:, :D] = x.reshape(T * N, D)
    xh[:, D:D + H] = h[:-1].reshape(T * N, H)
    xh[:, D + H] = 1
    if acc is not None and "dW" in acc:
        dW = bf16.matmul_tn(xh, da2, out=acc["dW"], accumulate=True)
    else:
        dW = bf16.matmul_tn(xh, da2)
        if acc is not None:
            acc["dW"] = dW
    if workspace is not None:
        workspace.give(da, xh)
    return dx.reshape(T, N, D), dh_next, dc_next, dW[:D], dW[D:D + H], dW[D + H]


def lstm_recompute_bf16(x, h, c0, Wx, Wh, b, mask=None, *, workspace=None):
    """`lstm_recompute` with the products of `lstm_forward_bf16` (x Wx and h_{t-1} Wh of all steps,
    bf16 operands, float32 sums), so that a segment's rebuilt cache is the bf16 forward's own up to
    the order of the float32 sums. tier none: `lstm_recompute`."""
    from rnnkit.kernels import bf16

    if bf16.tier() == "none":
        return lstm_recompute(x, h, c0, Wx, Wh, b, mask, workspace=workspace)
    T, N, D = x.shape
    H = Wh.shape[0]
    gates = empty(workspace, (T, N, 4 * H), np.float32, np)
    a = gates.reshape(T * N, 4 * H)
    pWx, pWh = lstm_pack_bf16(Wx, Wh)
    bf16.matmul(x.reshape(T * N, D), pWx, out=a)
    bf16.matmul(h[:-1].reshape(T * N, H), pWh, out=a, accumulate=True)
    c = empty(workspace, (T + 1, N, H), np.float32, np)
    c[0] = c0
    tanh_c = empty(workspace, (T, N, H), np.float32, np)
    get_ops(x, Wh).run(LSTM_CELLS, T=T, N=N, H=H, gates=gates, c=c, tanh_c=tanh_c, b=b, mask=mask)
    return LSTMCache(x, h, c, gates, tanh_c, Wx, Wh, mask)


def lstm_fw(T, N, H, gates, h, c, tanh_c, Wh, b, mask):
    """The forward time loop (the reference of lstm.c's `lstm_fw`, in place): gates (T, N, 4H) hold
    x_t Wx (+ b when b is None) on entry and the activations on return; h, c (T+1, N, H) with h[0], c[0]
    set; tanh_c (T, N, H) out."""
    xp = get_array_module(gates)
    if b is not None:
        gates += b
    hW = xp.empty((N, 4 * H), dtype=h.dtype)
    ig = xp.empty((N, H), dtype=h.dtype)
    for t in range(T):
        a = gates[t]
        xp.matmul(h[t], Wh, out=hW)
        a += hW  # a = x_t Wx + h_{t-1} Wh + b
        sigmoid_(a[:, : 3 * H], xp)  # i, f, o = sigmoid(.)
        xp.tanh(a[:, 3 * H :], out=a[:, 3 * H :])  # g = tanh(.)
        i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        xp.multiply(f, c[t], out=c[t + 1])
        xp.multiply(i, g, out=ig)
        c[t + 1] += ig  # c_t = f * c_{t-1} + i * g
        xp.tanh(c[t + 1], out=tanh_c[t])
        xp.multiply(o, tanh_c[t], out=h[t + 1])  # h_t = o * tanh(c_t)
        if mask is not None:
            keep = ~mask[t][:, None]  # padded rows keep the previous state
            xp.copyto(h[t + 1], h[t], where=keep)
            xp.copyto(c[t + 1], c[t], where=keep)


def lstm_recompute(x, h, c0, Wx, Wh, b, mask=None, *, workspace=None):
    """The cache of `lstm_forward` rebuilt from the hidden states that forward produced: exact BPTT in
    bounded memory (`recompute=k` on a layer) keeps h (the layer's output) and c every k steps, and
    rebuilds each segment's gates and cell states here just before back-propagating through it.

    With every h_{t-1} known, no step waits for the one before: the pre-activations of all T steps are
    two products, x Wx and h_{t-1} Wh over all T*N rows (the second added into the first by the BLAS),
    where the forward ran T small ones in turn; only the cell state is a scan, element-wise,
    c_t = f_t c_{t-1} + i_t g_t. The result equals the forward's cache to rounding (the products sum in
    another order).
    x: (T, N, D); h: (T+1, N, H) the forward's hidden states (h[0] the segment's initial state); c0: (N, H)
    the cell state at the start; the rest as lstm_forward. Returns an LSTMCache whose h is `h` itself.
    """
    T, N, D = x.shape
    H = Wh.shape[0]
    xp = get_array_module(x)
    gates = empty(workspace, (T, N, 4 * H), x.dtype, xp)
    a = gates.reshape(T * N, 4 * H)
    ops = get_ops(x, Wh)
    ops.matmul(x.reshape(T * N, D), Wx, out=a)
    ops.matmul(h[:-1].reshape(T * N, H), Wh, out=a, accumulate=True)
    c = empty(workspace, (T + 1, N, H), x.dtype, xp)
    c[0] = c0
    tanh_c = empty(workspace, (T, N, H), x.dtype, xp)
    ops.run(LSTM_CELLS, T=T, N=N, H=H, gates=gates, c=c, tanh_c=tanh_c, b=b, mask=mask)
    return LSTMCache(x, h, c, gates, tanh_c, Wx, Wh, mask)


def lstm_cells(T, N, H, gates, c, tanh_c, b, mask):
    """The element-wise part of `lstm_recompute` (the reference of lstm.c's `lstm_cells`): gates hold
    x_t Wx + h_{t-1} Wh on entry; activations of all steps at once, then the cell-state scan (the same
    operations as `lstm_fw` after its product)."""
    xp = get_array_module(gates)
    gates += b  # a = x_t Wx + h_{t-1} Wh + b
    sigmoid_(gates[..., : 3 * H], xp)  # i, f, o = sigmoid(.)
    xp.tanh(gates[..., 3 * H :], out=gates[..., 3 * H :])  # g = tanh(.)
    i, f, g = gates[..., :H], gates[..., H : 2 * H], gates[..., 3 * H :]
    ig = xp.empty((N, H), dtype=c.dtype)
    for t in range(T):
        xp.multiply(f[t], c[t], out=c[t + 1])
        xp.multiply(i[t], g[t], out=ig)
        c[t + 1] += ig  # c_t = f * c_{t-1} + i * g
        xp.tanh(c[t + 1], out=tanh_c[t])
        if mask is not None:
            xp.copyto(c[t + 1], c[t], where=~mask[t][:, None])


def lstm_backward(dh, cache, dhT=None, dcT=None, trace=None, *, workspace=None, into=None):
    """Backpropagation through time for `lstm_forward`.

    dh: (T, N, H) gradient of the outputs h[1:]; dhT, dcT: (N, H) gradients of the final state (from a later
    chunk or a decoder), or None. Gradients at padded steps are ignored.
    Returns dx (T, N, D), dh0 (N, H), dc0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    into: None for fresh results, or (dx, acc) for the segments of one sequence back-propagated in turn
    (exact BPTT in bounded memory): dx written into the given C-contiguous (T, N, D) array, and the weight
    gradients summed in the dict `acc` carried from call to call (the first call stores them, later calls
    add into them as the BLAS goes); the returned weight gradients are then views of acc's arrays.
    """
    x, h, c, gates, tanh_c, Wx, Wh, mask = cache
    T, N, D = x.shape
    H = Wh.shape[0]
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    dh_next = final_grad("dhT", dhT, N, H, x.dtype, xp)
    dc_next = final_grad("dcT", dcT, N, H, x.dtype, xp)
    da = empty(workspace, (T, N, 4 * H), x.dtype, xp)  # gradient of the gate pre-activations
    # Wh^T made contiguous once: a product with the transposed view is ~35% slower at every step.
    WhT = xp.ascontiguousarray(Wh.T)
    trace_dh = trace_dc = None
    if trace is not None:
        trace_dh = trace["dh"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
        trace_dc = trace["dc"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, gates, WhT).run(
        LSTM_BW, T=T, N=N, H=H, dh=dh, gates=gates, c=c, tanh_c=tanh_c, WhT=WhT, mask=mask,
        dh_next=dh_next, dc_next=dc_next, da=da, dht=xp.empty((N, H), dtype=x.dtype), trace_dh=trace_dh,
        trace_dc=trace_dc)
    if trace is not None:
        trace_dh[0], trace_dc[0] = dh_next, dc_next
    dx, dWx, dWh, db = input_and_weight_grads(x, h, da, Wx, workspace, xp, into)
    return dx, dh_next, dc_next, dWx, dWh, db


def lstm_bw(T, N, H, dh, gates, c, tanh_c, WhT, mask, dh_next, dc_next, da, dht, trace_dh, trace_dc):
    """The BPTT loop (the reference of lstm.c's `lstm_bw`, in place): fills da (T, N, 4H), turns dh_next
    / dc_next (N, H) from the final state's gradients into the initial state's; dht (N, H) scratch;
    trace_dh, trace_dc (T+1, N, H) or None."""
    xp = get_array_module(dh)
    dc = xp.empty((N, H), dtype=dh.dtype)
    tmp = xp.empty((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        a = gates[t]
        i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        dat = da[t]
        di, df, do, dg = dat[:, :H], dat[:, H : 2 * H], dat[:, 2 * H : 3 * H], dat[:, 3 * H :]
        if mask is None:
            xp.add(dh[t], dh_next, out=dht)
        else:
            m = mask[t][:, None]
            xp.multiply(dh[t], m, out=dht)
            dht += dh_next
        tc = tanh_c[t]
        xp.multiply(dht, tc, out=do)  # dL/do = dh * tanh(c)
        # dc = dc_next + dh * o * (1 - tanh(c)^2)
        xp.multiply(tc, tc, out=tmp)
        xp.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dht
        if mask is not None:
            tmp *= m  # a padded step's dh goes straight to h_{t-1}, not into the cell
        xp.add(dc_next, tmp, out=dc)
        if trace_dh is not None:
            trace_dh[t + 1] = dht
            trace_dc[t + 1] = dc
        xp.multiply(dc, c[t], out=df)  # dL/df = dc * c_{t-1}
        xp.multiply(dc, g, out=di)  # dL/di = dc * g
        xp.multiply(dc, i, out=dg)  # dL/dg = dc * i
        # Through the activations: sigmoid' = s (1 - s) on [i, f, o]; tanh' = 1 - g^2 on g.
        s = a[:, : 3 * H]
        ds = dat[:, : 3 * H]
        ds *= s
        ds *= 1 - s
        xp.multiply(g, g, out=tmp)
        xp.subtract(1, tmp, out=tmp)
        dg *= tmp
        if mask is None:
            xp.multiply(dc, f, out=dc_next)  # dc_{t-1} = dc * f
            xp.matmul(dat, WhT, out=dh_next)  # dh_{t-1} = da Wh^T
        else:
            keep = ~m
            xp.copyto(dat, 0, where=keep)  # a padded step receives no gradient ...
            xp.multiply(dc, f, out=dc_next)
            xp.copyto(dc_next, dc, where=keep)  # ... and passes the state gradient through unchanged
            xp.matmul(dat, WhT, out=dh_next)
            xp.copyto(dh_next, dht, where=keep)


def lstm_step(x, h, c, Wx, Wh, b, *, x_gates=None):
    """One LSTM step for inference: x (N, D), h, c (N, H) -> (h_new, c_new). No cache; the weights are
    not scanned for NaN/inf (lstm_forward does that). Same arithmetic as one step of lstm_forward.
    x_gates: (N, 4H) x Wx + b computed ahead (a row of `embedding @ Wx + b`), used in place of x."""
    xp = get_array_module(h)
    H = Wh.shape[0]
    gates = step_gates(x, x_gates, {"h": h, "c": c}, Wx, b, 4 * H)
    N = gates.shape[1]
    hh = xp.empty((2, N, H), dtype=gates.dtype)
    cc = xp.empty((2, N, H), dtype=gates.dtype)
    hh[0], cc[0] = h, c
    tanh_c = xp.empty((1, N, H), dtype=gates.dtype)
    get_ops(gates, Wh).run(LSTM_FW, T=1, N=N, H=H, gates=gates, h=hh, c=cc, tanh_c=tanh_c, Wh=Wh,
                           b=None, mask=None)  # b is in gates already
    return hh[1], cc[1]


# The compiled time loops: each the entry point of the same name in lstm.c, with the function above as
# its reference (the same arguments by name).
LSTM_FW = LoopKernel("lstm_fw", SOURCE, lstm_fw, blocks=4)
LSTM_CELLS = LoopKernel("lstm_cells", SOURCE, lstm_cells, blocks=4)
LSTM_BW = LoopKernel("lstm_bw", SOURCE, lstm_bw, blocks=4)


def _reorder(w, H):
    """Swap the last two gate blocks along axis 0: [i, f, g, o] <-> [i, f, o, g] (its own inverse)."""
    return np.concatenate([w[: 2 * H], w[3 * H : 4 * H], w[2 * H : 3 * H]], axis=0)


@dataclass
class LSTMCell(Cell):
    """LSTM with gates [i, f, o, g]: one layer and direction has Wx (D, 4H), Wh (H, 4H), b (4H,) and
    the state (h, c)."""

    # the forget gate's bias at initialisation: 1.0 is the usual choice (Jozefowicz et al. 2015), so a
    # new cell keeps its state by default; None keeps PyTorch's uniform initialisation
    forget_bias: float | None = field(default=None, metadata={
        "help": "the forget gate's bias at initialisation (1.0 keeps the state; default: uniform)"})

    name = "lstm"
    title = "LSTM"
    summary = "long short-term memory: a cell state c carried additively, input/forget/output gates"
    state = ("h", "c")
    gates = (Gate("i", "input gate"), Gate("f", "forget gate"), Gate("o", "output gate"),
             Gate("g", "candidate (tanh)", "tanh"))
    scratch = ("c", "gates", "tanh_c")
    writes_into = True
    blocks = 4
    step_blocks = 4
    torch_mode = "LSTM"

    def param_shapes(self, D, H):
        return {"Wx": (D, 4 * H), "Wh": (H, 4 * H), "b": (4 * H,)}

    def init_params(self, rng, D, H, dtype):
        p = super().init_params(rng, D, H, dtype)
        if self.forget_bias is not None:
            p["b"][H:2 * H] = self.forget_bias
        return p

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        h, c, cache = lstm_forward(x, state[0], state[1], p["Wx"], p["Wh"], p["b"], mask,
                                   workspace=workspace, scan_weights=scan_weights)
        return h[1:], (h[-1], c[-1]), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        dx, dh0, dc0, dWx, dWh, db = lstm_backward(dy, cache, dstate[0], dstate[1], trace,
                                                   workspace=workspace, into=into)
        return dx, (dh0, dc0), {"Wx": dWx, "Wh": dWh, "b": db}

    def backward_params(self, p, xp):
        return wh_transposed_once(p, xp)

    def recompute(self, x, h, kept, p, mask=None, *, workspace=None):
        return lstm_recompute(x, h, kept[0], p["Wx"], p["Wh"], p["b"], mask, workspace=workspace)

    def step(self, x, state, p, *, x_gates=None):
        h, c = lstm_step(x, state[0], state[1], p["Wx"], p["Wh"], p["b"], x_gates=x_gates)
        return h, (h, c)

    def views(self, cache):
        gates = super().views(cache)
        return {"h": gates.pop("h"), "c": cache.c[1:], **gates}  # the state's parts, then the gates

    def to_torch(self, p, H):
        return _reorder(p["Wx"].T, H), _reorder(p["Wh"].T, H), _reorder(p["b"], H), np.zeros_like(p["b"])

    def from_torch(self, w_ih, w_hh, b_ih, b_hh, H):
        return {"Wx": _reorder(w_ih, H).T, "Wh": _reorder(w_hh, H).T, "b": _reorder(b_ih + b_hh, H)}

    def bf16_mixed(self):
        """This cell computing in bf16 mixed precision (`LSTMBf16Cell`): what a layer built with
        precision="bf16-mixed" runs."""
        return LSTMBf16Cell(**self.options())


def _bf16_operand(x):
    return isinstance(x, np.ndarray) and x.dtype == np.float32


class LSTMBf16Cell(LSTMCell):
    """The LSTM in bf16 mixed precision (`lstm_forward_bf16`, `lstm_backward_bf16`): the same
    parameters, state and options as LSTMCell, float32 master weights, bf16 products. Not registered:
    a layer's precision="bf16-mixed" makes it from the registered cell."""

    precision = "bf16-mixed"

    # float64 (a gradient check) and other array modules (CuPy) run LSTMCell's exact math: the bf16
    # products are for float32 NumPy training

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        if not _bf16_operand(x):
            return super().forward(x, state, p, mask, workspace=workspace, scan_weights=scan_weights)
        h, c, cache = lstm_forward_bf16(x, state[0], state[1], p["Wx"], p["Wh"], p["b"], mask,
                                        workspace=workspace, scan_weights=scan_weights)
        return h[1:], (h[-1], c[-1]), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        if not _bf16_operand(cache.x):
            return super().backward(dy, cache, dstate, workspace=workspace, into=into, trace=trace)
        dx, dh0, dc0, dWx, dWh, db = lstm_backward_bf16(dy, cache, dstate[0], dstate[1], trace,
                                                        workspace=workspace, into=into)
        return dx, (dh0, dc0), {"Wx": dWx, "Wh": dWh, "b": db}

    def backward_params(self, p, xp):
        # lstm_backward_bf16 packs Wh^T itself: no contiguous copy to make
        return p if _bf16_operand(p["Wh"]) else super().backward_params(p, xp)

    def recompute(self, x, h, kept, p, mask=None, *, workspace=None):
        if not _bf16_operand(x):
            return super().recompute(x, h, kept, p, mask, workspace=workspace)
        return lstm_recompute_bf16(x, h, kept[0], p["Wx"], p["Wh"], p["b"], mask,
                                   workspace=workspace)
