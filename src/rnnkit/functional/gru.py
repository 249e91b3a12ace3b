"""GRU over a whole sequence, in PyTorch's formulation so that weights are interchangeable.

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
b_hn cannot be folded into b because r multiplies it. Derivation in docs/derivations/gru.md.
"""

from __future__ import annotations

from typing import NamedTuple

from rnnkit import kernels
from rnnkit.backend import get_array_module
from rnnkit.functional._checks import check_recurrent_args, expect_float, expect_shape
from rnnkit.functional.lstm import _bytes, _step_gates, input_grad, sigmoid_, summed
from rnnkit.kernels.workspace import empty


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
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    gates = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    kernels.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, 3 * H))  # hoisted input projection
    gates += b
    hn = empty(workspace, (T, N, H), x.dtype, xp)
    hW = xp.empty((N, 3 * H), dtype=x.dtype)
    fast = kernels.kernel("gru_fw", x.dtype, x, Wh, bhn)
    if fast is not None:  # the same loop compiled (rnnkit.kernels), tested equal to the one below
        fast(T, N, H, gates, h, hn, hW, xp.ascontiguousarray(Wh), xp.ascontiguousarray(bhn),
             _bytes(mask))
    else:
        _gru_forward_loop(gates, h, hn, hW, Wh, bhn, mask, xp)
    return h, GRUCache(x, h, gates, hn, Wx, Wh, mask)


def _gru_forward_loop(gates, h, hn, hW, Wh, bhn, mask, xp):
    """The reference time loop of `gru_forward` (plain NumPy, in place)."""
    T, N, H = hn.shape
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
    gates = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    kernels.matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, 3 * H))
    gates += b
    hW = empty(workspace, (T, N, 3 * H), x.dtype, xp)
    kernels.matmul(h[:-1].reshape(T * N, H), Wh, out=hW.reshape(T * N, 3 * H))  # h_{t-1} Wh, all t
    hn = empty(workspace, (T, N, H), x.dtype, xp)
    fast = kernels.kernel("gru_cells", x.dtype, x, gates, bhn)
    if fast is not None:  # the element-wise step of gru_fw compiled, tested equal to the one below
        fast(T, N, H, gates, hW, hn, xp.ascontiguousarray(bhn))
    else:
        gates[..., : 2 * H] += hW[..., : 2 * H]
        sigmoid_(gates[..., : 2 * H], xp)  # r, z
        xp.add(hW[..., 2 * H :], bhn, out=hn)
        n = gates[..., 2 * H :]
        n += gates[..., :H] * hn
        xp.tanh(n, out=n)  # n = tanh(x W_xn + b_in + r * (h W_hn + b_hn))
    if workspace is not None:
        workspace.give(hW)
    return GRUCache(x, h, gates, hn, Wx, Wh, mask)


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
    dh_next = xp.zeros((N, H), dtype=x.dtype)
    if dhT is not None:
        expect_shape("dhT", dhT, (N, H), ("N", "H"))
        dh_next += dhT
    dxa = empty(workspace, (T, N, 3 * H), x.dtype, xp)  # gradient of the input-side pre-activations
    dha = empty(workspace, (T, N, 3 * H), x.dtype, xp)  # gradient of h_{t-1} Wh (+ b_hn)
    WhT = xp.ascontiguousarray(Wh.T)  # contiguous once: faster than the transposed view at every step
    trace_dh = None
    if trace is not None:
        trace_dh = trace["dh"] = xp.zeros((T + 1, N, H), dtype=x.dtype)
    fast = kernels.kernel("gru_bw", x.dtype, dh, gates, WhT)
    if fast is not None:  # the same loop compiled (rnnkit.kernels), tested equal to the one below
        dht = xp.empty((N, H), dtype=x.dtype)
        fast(T, N, H, xp.ascontiguousarray(dh), gates, h, hn, WhT, _bytes(mask), dh_next, dxa, dha, dht,
             trace_dh)
    else:
        _gru_backward_loop(dh, gates, h, hn, WhT, mask, dh_next, dxa, dha, trace_dh, xp)
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


def _gru_backward_loop(dh, gates, h, hn, WhT, mask, dh_next, dxa, dha, trace_dh, xp):
    """The reference time loop of `gru_backward` (plain NumPy, in place): fills dxa, dha, and dh_next
    with the initial state's gradient."""
    T, N, H = dh.shape
    dht = xp.empty((N, H), dtype=dh.dtype)
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
    gates = _step_gates(x, x_gates, {"h": h}, Wx, b, 3 * H, xp)
    N = gates.shape[1]
    hh = xp.empty((2, N, H), dtype=gates.dtype)
    hh[0] = h
    hn = xp.empty((1, N, H), dtype=gates.dtype)
    hW = xp.empty((N, 3 * H), dtype=gates.dtype)
    fast = kernels.kernel("gru_fw", gates.dtype, gates, Wh, bhn)
    if fast is not None:
        fast(1, N, H, gates, hh, hn, hW, xp.ascontiguousarray(Wh), xp.ascontiguousarray(bhn), None)
    else:
        _gru_forward_loop(gates, hh, hn, hW, Wh, bhn, None, xp)
    return hh[1]
