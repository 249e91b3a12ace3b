"""Math shared by the cells: the sigmoid, the input and weight gradients taken after a backward loop,
gradients summed across the segments of one sequence, and the argument checks (of a whole sequence,
`check_recurrent_args`, and of one inference step), and `InputOnlyCell`, the declaration of the cells
whose gates read the input alone (minGRU, minLSTM). Public, so that a cell written outside the package
can use them as the built-in ones do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rnnkit import kernels
from rnnkit.backend import get_array_module, get_ops
from rnnkit.functional._checks import (  # noqa: F401 - re-exported for cells written elsewhere
    check_mask,
    check_recurrent_args,
    expect_finite,
    expect_float,
    expect_shape,
)
from rnnkit.cells.cell import Cell
from rnnkit.kernels.workspace import empty


def sigmoid_(a, xp):
    """In place: sigmoid(a) = 0.5 * tanh(0.5 a) + 0.5, which never overflows and takes three passes."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def input_and_weight_grads(x, h, da, Wx, workspace, xp, into=None):
    """After the backward loop, for every step at once: dx = da Wx^T, and [dWx; dWh; db] =
    [x, h_{t-1}, 1]^T da as one product with D + H + 1 rows (a taller product runs faster than two of D
    and H rows, and db = sum da comes with it as the row of ones, where a separate sum over da was
    another pass over memory). da: (T, N, G*H) pre-activation gradients; gives `da` back to the
    workspace. into: see `rnnkit.cells.lstm.lstm_backward`. Returns dx, dWx, dWh, db."""
    T, N, D = x.shape
    H = h.shape[-1]
    da2 = da.reshape(T * N, da.shape[-1])
    dx, acc = into if into is not None else (None, None)
    dx = input_grad(da2, Wx, dx, (T, N, D))
    # rows padded to D + H + 16 columns: the product reads xh by columns, and rows of an odd length
    # put them off the 64-byte lines (measured ~15% slower with MKL)
    xh = empty(workspace, (T * N, D + H + 16), x.dtype, xp)
    xh[:, :D] = x.reshape(T * N, D)
    xh[:, D:D + H] = h[:-1].reshape(T * N, H)
    xh[:, D + H] = 1
    dW = summed(acc, "dW", xh[:, :D + H + 1].T, da2)
    if workspace is not None:
        workspace.give(da, xh)
    return dx, dW[:D], dW[D:D + H], dW[D + H]


def input_grad(da2, Wx, dx, shape):
    """dx = da Wx^T as `shape` (T, N, D): a fresh array, or written into the given C-contiguous dx."""
    if dx is None:
        return kernels.matmul(da2, Wx.T).reshape(shape)
    if not dx.flags.c_contiguous:
        raise ValueError("into: dx must be C-contiguous")
    kernels.matmul(da2, Wx.T, out=dx.reshape(-1, shape[-1]))
    return dx


def summed(acc, name, a, b=None):
    """a @ b (or a itself when b is None), summed across calls in acc[name]: the first call stores it,
    later calls add into it (a product through the BLAS's beta = 1, no temporary). acc None: just the
    value."""
    if acc is not None and name in acc:
        if b is None:
            acc[name] += a
        else:
            kernels.matmul(a, b, out=acc[name], accumulate=True)
        return acc[name]
    value = a if b is None else kernels.matmul(a, b)
    if acc is not None:
        acc[name] = value
    return value


def final_grad(name, dT, N, H, dtype, xp):
    """The gradient carried into the last step: zeros, plus the final state's gradient `dT` (N, H)
    from a later chunk or a decoder where given."""
    g = xp.zeros((N, H), dtype=dtype)
    if dT is not None:
        expect_shape(name, dT, (N, H), ("N", "H"))
        g += dT
    return g


def step_checks(x, states, H):
    """The checks of one inference step: x (N, D) and the state; the weights are checked by the
    full-sequence forward, not at every sampled character."""
    expect_shape("x", x, (None, None), ("N", "D"))
    N = x.shape[0]
    for name, s in states.items():
        expect_shape(name, s, (N, H), ("N", "H"))
        expect_float(name, s, x.dtype)
    for name, a in (("x", x), *states.items()):
        expect_finite(name, a)


def step_gates(x, x_gates, states, Wx, b, G):
    """The checked x-side pre-activations of one step, (1, N, G): x Wx + b, or a copy of x_gates."""
    H = next(iter(states.values())).shape[-1]
    if x_gates is not None:
        expect_shape("x_gates", x_gates, (None, G), ("N", "G*H"))
        x = x_gates
    step_checks(x, states, H)
    if x_gates is not None:
        return x_gates[None].astype(x_gates.dtype, copy=True)
    gates = (x @ Wx)[None]
    gates += b
    return gates


def wh_transposed_once(p, xp):
    """p with Wh^T made contiguous once, for all the segments of one backward: the caches carry Wh as
    the transpose of that copy, whose .T each segment's backward then finds contiguous as it is."""
    return dict(p, Wh=xp.ascontiguousarray(p["Wh"].T).T)


# --- cells whose gates read the input only (Feng et al.'s minimal GRU and LSTM): x Wx + b of every
# step is the only product of the forward, and dx, dWx, db the only products of the backward

def input_only_args(x, h0, Wx, b, mask, scan_weights, G, parts):
    """The checks of such a cell's forward: Wx (D, G*H) and b (G*H,) = [the G blocks named `parts`].
    Returns (T, N, D, H, mask)."""
    expect_shape("b", b, (None,), (f"{G}H",))
    if b.shape[0] % G:
        raise ValueError(f"b has shape {tuple(b.shape)}, expected ({G}H,): [{' | '.join(parts)}]")
    H = b.shape[0] // G
    T, N, D, mask = check_recurrent_args(
        x,
        {"h0": (h0, (x.shape[1] if x.ndim == 3 else None, H))},
        {"Wx": (Wx, (x.shape[-1], G * H), ("D", f"{G}H")), "b": (b, (G * H,), (f"{G}H",))},
        mask,
        scan_weights,
    )
    return T, N, D, H, mask


def input_projection(x, Wx, b):
    """x Wx + b (T, N, G*H) for every step at once."""
    T, N, D = x.shape
    xp = get_array_module(x)
    gates = xp.empty((T, N, Wx.shape[1]), dtype=x.dtype)
    get_ops(x, Wx).matmul(x.reshape(T * N, D), Wx, out=gates.reshape(T * N, Wx.shape[1]))
    gates += b
    return gates


def input_projection_grads(x, dgates, Wx, into=None):
    """The backward of `input_projection` from the pre-activations' gradient dgates (T, N, G*H):
    dx = dgates Wx^T, dWx = x^T dgates, db = the sum of dgates over every step. into: (dx, acc) as in
    `rnnkit.cells.lstm.lstm_backward`. Returns dx, dWx, db."""
    T, N, D = x.shape
    dg2 = dgates.reshape(T * N, dgates.shape[-1])
    dx, acc = into if into is not None else (None, None)
    dx = input_grad(dg2, Wx, dx, (T, N, D))
    dWx = summed(acc, "Wx", x.reshape(T * N, D).T, dg2)
    db = summed(acc, "b", dg2.sum(axis=0))
    return dx, dWx, db


@dataclass
class InputOnlyCell(Cell):
    """The declaration minGRU and minLSTM share: one layer and direction has Wx (D, G*H) and b (G*H,)
    (G = `blocks`), the state is h alone, and the math is four functions of the cell's module,
    `functions` = (forward, backward, recompute, step), each taking (x, h, Wx, b) as mingru_forward and
    its siblings do; backward writes into the caller's buffers (`writes_into`)."""

    writes_into = True
    functions: ClassVar[tuple] = ()

    def param_shapes(self, D, H):
        return {"Wx": (D, self.blocks * H), "b": (self.blocks * H,)}

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        h, cache = self.functions[0](x, state[0], p["Wx"], p["b"], mask, scan_weights=scan_weights)
        return h[1:], (h[-1],), cache

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        dx, dh0, dWx, db = self.functions[1](dy, cache, dstate[0], trace, into=into)
        return dx, (dh0,), {"Wx": dWx, "b": db}

    def recompute(self, x, h, kept, p, mask=None, *, workspace=None):
        return self.functions[2](x, h, p["Wx"], p["b"], mask)

    def step(self, x, state, p, *, x_gates=None):
        h = self.functions[3](x, state[0], p["Wx"], p["b"], x_gates=x_gates)
        return h, (h,)
