"""Weights to and from PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` state_dicts.

rnnkit stores Wx as (D, G*H) so that `x @ Wx` needs no transpose; PyTorch stores weight_ih as (G*H, D).
PyTorch's LSTM gate order is [i, f, g, o], rnnkit's [i, f, o, g]; the GRU order [r, z, n] is shared.
PyTorch keeps two biases; rnnkit folds them into one, except the GRU's b_hn, which the reset gate
multiplies and so stays apart. PyTorch is never imported here except by `to_torch_module`.
"""

from __future__ import annotations

import numpy as np

from rnnkit import cells
from rnnkit.backend import to_numpy
from rnnkit.layers.recurrent import Recurrent, layer_class

__all__ = ["from_torch_module", "load_torch_state_dict", "to_torch_module", "to_torch_state_dict"]


def _suffix(k, d):
    return f"_l{k}{'_reverse' if d else ''}"


def _torch_cell(layer):
    """The layer's cell, where PyTorch has the same cell (`Cell.torch_mode`)."""
    if layer.cell.torch_mode is None:
        layer.cell.to_torch({}, layer.hidden_size)  # raises the cell's own message
    return layer.cell


def load_torch_state_dict(layer: Recurrent, state_dict):
    """Load a torch RNN/LSTM/GRU state_dict (tensors or arrays) into `layer`, in place."""
    H, cell = layer.hidden_size, _torch_cell(layer)
    sd = {k: to_numpy(v) for k, v in state_dict.items()}
    ours = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            s = _suffix(k, d)
            try:
                w_ih, w_hh = sd["weight_ih" + s], sd["weight_hh" + s]
                b_ih = sd.get("bias_ih" + s, np.zeros(w_ih.shape[0], w_ih.dtype))
                b_hh = sd.get("bias_hh" + s, np.zeros(w_ih.shape[0], w_ih.dtype))
            except KeyError as e:
                raise ValueError(f"torch state_dict has no {e.args[0]} (expected {layer.num_layers} "
                                 f"layers, bidirectional={layer.bidirectional})") from None
            pre = layer._prefix(k, d)
            for name, value in cell.from_torch(w_ih, w_hh, b_ih, b_hh, H).items():
                ours[pre + name] = value
    layer.load_state_dict(ours)
    return layer


def to_torch_state_dict(layer: Recurrent):
    """Return the torch-keyed state_dict of `layer` as NumPy arrays (wrap with torch.from_numpy)."""
    H, cell = layer.hidden_size, _torch_cell(layer)
    out = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            s = _suffix(k, d)
            w_ih, w_hh, b_ih, b_hh = cell.to_torch(layer.layer_params(k, d), H)
            out["weight_ih" + s] = np.ascontiguousarray(w_ih)
            out["weight_hh" + s] = np.ascontiguousarray(w_hh)
            out["bias_ih" + s] = np.array(b_ih)
            out["bias_hh" + s] = np.array(b_hh)
    return out


def _cell_for_mode(mode):
    """The registered cell PyTorch's module `mode` ("LSTM", "RNN_RELU", ...) corresponds to."""
    for name in cells.names():
        cell = cells.create(name)
        if cell.torch_mode == mode:
            return cell
    return None


def from_torch_module(module, dtype=None):
    """Build the rnnkit layer equivalent to a torch `nn.RNN`, `nn.LSTM` or `nn.GRU` (batch_first=False)."""
    mode = getattr(module, "mode", None)
    if getattr(module, "batch_first", False):
        raise ValueError("from_torch_module expects batch_first=False (rnnkit is time-major)")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size is not supported")
    cell = _cell_for_mode(mode) if isinstance(mode, str) else None
    if cell is None:
        raise ValueError(f"expected a torch nn.RNN, nn.LSTM or nn.GRU, got {type(module).__name__}")
    sd = {k: to_numpy(v) for k, v in module.state_dict().items()}
    layer = layer_class(type(cell)).from_cell(
        cell, module.input_size, module.hidden_size, num_layers=module.num_layers,
        bidirectional=module.bidirectional, dropout=float(module.dropout),
        dtype=dtype or sd["weight_ih_l0"].dtype)
    return load_torch_state_dict(layer, sd)


def to_torch_module(layer: Recurrent):
    """Build the equivalent torch module (imports torch, an optional dependency)."""
    cell = _torch_cell(layer)
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch_module needs PyTorch: pip install 'rnnkit[torch]'") from None
    cls = getattr(torch.nn, cell.torch_mode.split("_")[0])  # RNN_TANH and RNN_RELU are nn.RNN
    module = cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                 bidirectional=layer.bidirectional, dropout=layer.dropout, **cell.torch_kwargs())
    tdtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    module = module.to(tdtype)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(layer).items()})
    return module
