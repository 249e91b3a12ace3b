"""IndRNN (Li, Li, Cook, Zhu and Gao 2018, "Independently Recurrent Neural Network (IndRNN): Building A
Longer and Deeper RNN"): a cell added to rnnkit from outside the package, the worked example of
docs/ADDING_A_CELL.md. Each unit has one recurrent weight of its own, so the recurrence is element-wise.

Dimensions, declared once for this module:
    T  time steps        N  batch size        D  input size        H  hidden size

    a_t = x_t Wx + u * h_{t-1} + b             u (H,): a weight VECTOR, * element-wise
    h_t = relu(a_t)

Buffers: x (T, N, D); h (T+1, N, H) with h[0] the initial state; Wx (D, H); u (H,); b (H,). As in the
vanilla RNN the input projection of every step is one product before the loop (h[1:] holds x_t Wx + b
on entry), but what is left inside the loop is element-wise, as in minGRU: no H x H product. Unit j
reads only its own past, h_t[j] = relu(... + u[j] h_{t-1}[j]), so its gradient through time is
u[j]^lag along a stretch where the unit stays active and 0 past a step where it does not: u[j] alone
decides how far back it reaches, and |u[j]| <= 1 keeps it from exploding. The units meet only through
the next layer's Wx (depth, not a Wh, mixes them). Derivation in docs/derivations/indrnn.md; the time
loops are written twice, here in NumPy (the reference) and in indrnn.c (compiled), and
tests/test_adding_a_cell.py checks they agree.

Initialisation. u ~ U(0, u_max) with u_max = 1 and b = 0, as the authors' own code does (IndRNN_pytorch,
its char-level PTB model: `weight_hh.uniform_(0, U_bound)` with U_bound = 1, biases 0), and batzner/
indrnn's TensorFlow cell (recurrent kernel U(0, 1), bias zeros): positive weights below 1 make every
unit a leaky integrator of its own, its memory from one step (u near 0) to long (u near 1), none
starting where its state grows without bound. The paper bounds |u| by 2^(1/T) for a relu IndRNN over T
steps (a gradient that may at most double across the sequence) and clips u to it after each update;
rnnkit's optimizers have no such constraint hook, so u_max here only sets the initial range (for long
sequences, u_max=2**(1/T): `make_recurrent("indrnn", ..., u_max=...)`). Wx takes PyTorch's
U(-1/sqrt(H), 1/sqrt(H)) like every other rnnkit cell, so runs compare (the authors' code draws it with
Kaiming's uniform and puts batch normalisation between layers, which rnnkit does not have).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

import rnnkit.cells
from rnnkit.backend import get_array_module, get_ops
from rnnkit.cells import Cell
from rnnkit.cells.common import (check_recurrent_args, expect_float, expect_shape, final_grad,
                                 input_grad, step_gates)
from rnnkit.kernels import LoopKernel, matmul

SOURCE = Path(__file__).with_name("indrnn.c")


class IndRNNCache(NamedTuple):
    x: object  # (T, N, D)
    h: object  # (T+1, N, H): relu's output is all backward needs of the activation
    Wx: object  # (D, H)
    u: object  # (H,)
    mask: object  # (T, N) bool or None


def indrnn_forward(x, h0, Wx, u, b, mask=None, *, scan_weights=True):
    """Run IndRNN over x (T, N, D) from h0 (N, H). Returns h (T+1, N, H) and the cache.

    At a padded step (mask 0) the state is carried: h_t = h_{t-1}. scan_weights: False skips the
    weights' NaN/inf scan (the layer's later segments of one sequence; shapes are still checked)."""
    expect_shape("u", u, (None,), ("H",))
    H = u.shape[0]
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], H), ("D", "H")), "u": (u, (H,), ("H",)), "b": (b, (H,), ("H",))},
        mask,
        scan_weights,
    )
    xp = get_array_module(x)
    ops = get_ops(x, Wx)
    h = xp.empty((T + 1, N, H), dtype=x.dtype)
    h[0] = h0
    ops.matmul(x.reshape(T * N, D), Wx, out=h[1:].reshape(T * N, H))  # x_t Wx for every step at once
    h[1:] += b
    ops.run(INDRNN_FW, T=T, N=N, H=H, h=h, u=u, mask=mask)
    return h, IndRNNCache(x, h, Wx, u, mask)


def indrnn_fw(T, N, H, h, u, mask):
    """The forward time loop (the reference of indrnn.c's `indrnn_fw`, in place): h (T+1, N, H) with
    h[0] the initial state and h[1:] holding x_t Wx + b on entry, relu(a_t) on return."""
    xp = get_array_module(h)
    uh = xp.empty((N, H), dtype=h.dtype)
    for t in range(T):
        xp.multiply(h[t], u, out=uh)
        h[t + 1] += uh                                  # a_t = x_t Wx + b + u * h_{t-1}
        xp.maximum(h[t + 1], 0, out=h[t + 1])           # h_t = relu(a_t)
        if mask is not None:                            # a padded step carries h_{t-1}
            xp.copyto(h[t + 1], h[t], where=~mask[t][:, None])


def indrnn_backward(dh, cache, dhT=None, trace=None):
    """BPTT for `indrnn_forward`. dh: (T, N, H) gradient of h[1:]; dhT: (N, H) gradient of h[T] (a
    later chunk's, or a decoder's), or None. Gradients at padded steps are ignored.
    trace: a dict to receive trace["dh"][t] = dL/dh_t, (T+1, N, H), for diagnostics; None to skip.

    Returns dx (T, N, D), dh0 (N, H), dWx (D, H), du (H,), db (H,).
    """
    x, h, Wx, u, mask = cache
    T, N, D = x.shape
    H = u.shape[0]
    xp = get_array_module(dh)
    expect_shape("dh", dh, (T, N, H), ("T", "N", "H"))
    expect_float("dh", dh, x.dtype)
    dh_prev = final_grad("dhT", dhT, N, H, x.dtype, xp)  # dL/dh_T in, dL/dh_0 out
    da = xp.empty((T, N, H), dtype=x.dtype)
    trace_dh = None if trace is None else xp.empty((T + 1, N, H), dtype=x.dtype)
    get_ops(dh, h, u).run(INDRNN_BW, T=T, N=N, H=H, dh=dh, h=h, u=u, mask=mask, dh_prev=dh_prev,
                          da=da, trace_dh=trace_dh)
    if trace is not None:
        trace_dh[0] = dh_prev
        trace["dh"] = trace_dh
    # After the loop, every step at once: u's gradient is element-wise (each unit its own weight), so
    # it is summed here rather than inside the loop, where the threads' row ranges would have to add
    # into one (H,) vector.
    da2 = da.reshape(T * N, H)
    dx = input_grad(da2, Wx, None, (T, N, D))          # dx = da Wx^T
    dWx = matmul(x.reshape(T * N, D).T, da2)          # dWx = x^T da
    du = (da * h[:-1]).sum(axis=(0, 1))                # du = sum over t, n of da_t * h_{t-1}
    db = da2.sum(axis=0)                               # db = sum over t, n of da_t
    return dx, dh_prev, dWx, du, db                    # dh_prev is dL/dh_0 now


def indrnn_bw(T, N, H, dh, h, u, mask, dh_prev, da, trace_dh):
    """The BPTT loop (the reference of indrnn.c's `indrnn_bw`, in place): fills da (T, N, H), the
    pre-activations' gradient (0 at padded steps), and turns dh_prev (N, H) from the gradient of h[T]
    into that of h[0] (between steps: of h_{t-1} through step t); trace_dh (T+1, N, H) or None:
    dL/dh_t at t >= 1."""
    xp = get_array_module(dh)
    for t in reversed(range(T)):
        g = da[t]                                       # g = dL/dh_t over every path, then da_t
        if mask is None:
            xp.add(dh[t], dh_prev, out=g)
        else:                                           # the loss never reads a padded output
            m = mask[t][:, None]
            xp.multiply(dh[t], m, out=g)
            g += dh_prev
        if trace_dh is not None:
            trace_dh[t + 1] = g
        g *= h[t + 1] > 0                               # da_t = g relu'(a_t); relu'(a) = [h_t > 0]
        if mask is None:
            xp.multiply(g, u, out=dh_prev)              # dh_prev = da_t * u
        else:                                           # a padded step: no gradient, and the state's
            xp.copyto(g, 0, where=~m)                   # passes through unchanged (h_t = h_{t-1})
            xp.copyto(dh_prev, g * u, where=m)


def indrnn_step(x, h, Wx, u, b, *, x_gates=None):
    """One IndRNN step for inference: x (N, D), h (N, H) -> h_t (N, H). No cache; the weights are not
    scanned for NaN/inf (indrnn_forward does that). The same arithmetic as one step of the forward.
    x_gates: (N, H) x Wx + b computed ahead (an embedding's rows), used in place of x."""
    xp = get_array_module(h)
    H = u.shape[0]
    a = step_gates(x, x_gates, {"h": h}, Wx, b, H)    # (1, N, H): x Wx + b, a fresh array
    N = a.shape[1]
    hh = xp.empty((2, N, H), dtype=a.dtype)
    hh[0] = h
    hh[1] = a[0]
    get_ops(hh, u).run(INDRNN_FW, T=1, N=N, H=H, h=hh, u=u, mask=None)
    return hh[1]


# The compiled time loops: each the entry point of the same name in indrnn.c, with the function above
# as its reference (the same arguments by name). No product in the loop: its O(N H) element-wise step
# is counted as one H x H block, as minGRU's is, so that long loops split across threads.
INDRNN_FW = LoopKernel("indrnn_fw", SOURCE, indrnn_fw, blocks=1)
INDRNN_BW = LoopKernel("indrnn_bw", SOURCE, indrnn_bw, blocks=1)


@dataclass
class IndRNNCell(Cell):
    """IndRNN (Li et al. 2018): h_t = relu(x_t Wx + u * h_{t-1} + b); one layer and direction has
    Wx (D, H), u (H,) and b (H,): one recurrent weight per unit, so the time loop is element-wise."""

    u_max: float = field(default=1.0, metadata={
        "help": "the recurrent weights u start uniform in (0, u_max); the paper bounds them by "
                "2^(1/T) for sequences of T steps"})

    name = "indrnn"
    title = "IndRNN"
    summary = "IndRNN (Li et al. 2018): h_t = relu(x_t Wx + u * h_{t-1} + b), one recurrent weight per unit"
    gates = ()  # no gates: diagnostics show the state h alone

    def __post_init__(self):
        if not self.u_max > 0:
            raise ValueError(f"u_max must be positive, got {self.u_max!r}")

    def param_shapes(self, D, H):
        return {"Wx": (D, H), "u": (H,), "b": (H,)}

    def init_params(self, rng, D, H, dtype):
        p = super().init_params(rng, D, H, dtype)  # Wx: PyTorch's U(-1/sqrt(H), 1/sqrt(H))
        p["u"] = rng.uniform(0.0, self.u_max, H).astype(dtype)
        p["b"] = np.zeros(H, dtype=dtype)
        return p

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        h, cache = indrnn_forward(x, state[0], p["Wx"], p["u"], p["b"], mask, scan_weights=scan_weights)
        return h[1:], (h[-1],), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        if into is not None:  # the layer passes it only to cells with writes_into
            raise ValueError("IndRNNCell.backward returns fresh gradients (writes_into is False)")
        dx, dh0, dWx, du, db = indrnn_backward(dy, cache, dstate[0], trace)
        return dx, (dh0,), {"Wx": dWx, "u": du, "b": db}

    def step(self, x, state, p, *, x_gates=None):
        h = indrnn_step(x, state[0], p["Wx"], p["u"], p["b"], x_gates=x_gates)
        return h, (h,)


rnnkit.cells.register(IndRNNCell)
