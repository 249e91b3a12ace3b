"""`Cell`: what one recurrence declares, once, for everything that uses it.

A cell is one class in one module of its own (`rnnkit/cells/lstm.py`, or a module anywhere outside the
package, registered with `rnnkit.cells.register`), its compiled loops in a C source of its own. The
class holds the cell's options as typed fields (the LSTM's `forget_bias`, the RNN's `nonlinearity`) and
declares:

    param_shapes(D, H)      the parameters of one layer and direction: {"Wx": (D, 4H), ...}
    init_params(rng, ...)   their initial values (init_layer_params: those of one layer of a stack,
                            where they depend on the depth)
    state                   the names of the state's parts: ("h",), ("h", "c"); each (N, H) unless
                            `state_shape` says otherwise (a matrix state)
    gates                   the named blocks of the cache's `gates` that diagnostics and the report show

and writes the math as stateless functions of (inputs, parameters dict):

    forward(x, state, p, mask)      x (T, N, D), state a tuple of its parts -> (y (T, N, O) the output
                                    at every step, the final state, cache)
    backward(dy, cache, dstate)     -> (dx, the initial state's gradient, {parameter name: gradient})
    step(x, state, p)               one time step for inference -> (y (N, O), new state)
    recompute(x, h, kept, p, mask)  optional: the cache rebuilt from the outputs forward kept (exact BPTT
                                    in bounded memory); without it, `Recurrent(recompute=k)` keeps each
                                    segment's whole starting state and runs forward again in backward
    views(cache)                    the arrays diagnostics show: state parts and gates, each (T, N, H)

The layer (`rnnkit.layers.Recurrent`) owns the parameters and does the rest once for every cell:
stacks, both directions, masks of variable lengths, dropout between layers, recompute, one-step
inference; the models, diagnostics, the report, interop and the CLI's `--cell` choices read the
registry. Arrays are time-major; the array module comes from the inputs; backward returns fresh
gradients (the layer adds them into its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np



@dataclass(frozen=True)
class Gate:
    """A block of H columns of the cache's activated `gates`, as diagnostics show it."""

    name: str  # "f"
    title: str  # "forget gate"
    activation: str = "sigmoid"  # sigmoid (values in [0, 1]) | tanh ([-1, 1]) | linear (unbounded)


@dataclass
class Cell:
    """Base of every cell; subclasses are dataclasses whose fields are the cell's options."""

    name: ClassVar[str] = ""  # registry key and --cell value: "lstm"
    title: ClassVar[str] = ""  # the layer class's name: "LSTM"
    summary: ClassVar[str] = ""  # one line for help texts
    state: ClassVar[tuple] = ("h",)  # the state's parts; the output at each step is state[0] unless
    # the cell says otherwise (`output_is_state`)
    output_is_state: ClassVar[bool] = True
    # the state part whose gradient diagnostics draw as the gradient through time, ||dL/dh_t||
    flow_part: ClassVar[str] = "h"
    gates: ClassVar[tuple] = ()  # Gate blocks of cache.gates, in column order
    scratch: ClassVar[tuple] = ()  # cache fields that are the cell's own buffers (pooled once used)
    blocks: ClassVar[int] = 1  # G: the input projection x Wx + b has G*H columns (x_gates, input_gates)
    # a step's work per batch row in units of H x H multiply-adds (4 for the LSTM's h Wh), for the
    # estimate of whether cutting a recompute's batch rows across threads pays; a loop with no product
    # counts a small number (its gate blocks, or 1) so that long loops still split
    step_blocks: ClassVar[int] = 1
    # the name of an array (T, N, H) the first layer of a stack computes and every later layer reads
    # (RWKV-7's value residual, v_first), or None. A cell with one takes `shared=` in forward and step
    # (None in the first layer), gives the first layer's through `shared_of(cache)` (and step returns it
    # third), and its backward takes `dshared=` (the first layer's: the sum of the later layers'
    # gradients) and returns the gradient of the one it was given fourth
    shared: ClassVar[str | None] = None
    torch_mode: ClassVar[str | None] = None  # PyTorch's nn.RNNBase mode (interop), or None
    # backward takes into=(dx, acc): dx written into the given array, the weight gradients summed into
    # the dict acc across calls (the segments of one recompute backward, with no copies); a cell
    # without it returns fresh arrays and the layer sums them
    writes_into: ClassVar[bool] = False

    # --- declared -------------------------------------------------------------------------------

    def param_shapes(self, D: int, H: int) -> dict:
        raise NotImplementedError

    def init_params(self, rng, D: int, H: int, dtype) -> dict:
        """PyTorch's initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)), drawn in the order of
        `param_shapes`. Cells with other initial values (a forget bias) adjust them after."""
        bound = 1.0 / math.sqrt(H)
        return {name: rng.uniform(-bound, bound, shape).astype(dtype)
                for name, shape in self.param_shapes(D, H).items()}

    def init_layer_params(self, rng, D: int, H: int, dtype, layer: int, layers: int) -> dict:
        """The initial values of layer `layer` of a stack of `layers` (cells whose initialisation
        depends on the depth, as RWKV's, override this); `init_params` otherwise."""
        return self.init_params(rng, D, H, dtype)

    def shared_of(self, cache):
        """The first layer's shared array (cells with `shared`)."""
        raise NotImplementedError

    def state_shape(self, N: int, H: int) -> dict:
        """The shape of each part of the state of one layer and direction."""
        return {part: (N, H) for part in self.state}

    def output_size(self, H: int) -> int:
        return H

    def options(self) -> dict:
        """The cell's option values by name (the dataclass fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # --- the math -------------------------------------------------------------------------------

    def forward(self, x, state, p, mask=None, *, workspace=None, scan_weights=True):
        raise NotImplementedError

    def backward(self, dy, cache, dstate, *, workspace=None, into=None, trace=None):
        raise NotImplementedError

    def step(self, x, state, p, *, x_gates=None):
        raise NotImplementedError

    recompute = None  # (x, h (T+1, N, H), kept state beyond h, p, mask, workspace=) -> cache

    def backward_params(self, p, xp):
        """The parameters as the segments of one backward read them, prepared once for all of them
        (the classic cells: Wh^T made contiguous)."""
        return p

    def views(self, cache) -> dict:
        """{name: (T, N, H)}: the hidden states and the gates of `cache`, for diagnostics."""
        out = {"h": cache.h[1:]}
        gates = getattr(cache, "gates", None)
        H = out["h"].shape[-1]
        for j, g in enumerate(self.gates):
            out[g.name] = gates[:, :, j * H:(j + 1) * H]
        return out

    def input_gates(self, E, p):
        """E (V, D) -> E Wx + b (V, G*H): the input side of a step read from a table (an embedding)."""
        return E @ p["Wx"] + p["b"]

    # --- PyTorch interop (cells with a `torch_mode`) --------------------------------------------

    def to_torch(self, p: dict, H: int) -> dict:
        """One layer's parameters as PyTorch's (weight_ih, weight_hh, bias_ih, bias_hh)."""
        raise ValueError(f"a {self.name} layer has no PyTorch counterpart (nn.RNN, nn.LSTM or nn.GRU) "
                         f"to convert to or from")

    def from_torch(self, w_ih, w_hh, b_ih, b_hh, H: int) -> dict:
        raise ValueError(f"a {self.name} layer has no PyTorch counterpart (nn.RNN, nn.LSTM or nn.GRU) "
                         f"to convert to or from")

    def torch_kwargs(self) -> dict:
        """Constructor arguments of the PyTorch module beyond the sizes (the RNN's nonlinearity)."""
        return {}
