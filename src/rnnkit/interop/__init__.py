"""Weights to and from PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` state_dicts.

rnnkit stores Wx as (D, G*H) so that `x @ Wx` needs no transpose; PyTorch stores weight_ih as (G*H, D).
PyTorch's LSTM gate order is [i, f, g, o], rnnkit's [i, f, o, g]; the GRU order [r, z, n] is shared.
PyTorch keeps two biases; rnnkit folds them into one, except the GRU's b_hn, which the reset gate
multiplies and so stays apart. PyTorch is never imported here except by `to_torch_module`.
"""

from __future__ import annotations

import numpy as np

from rnnkit.backend import to_numpy
from rnnkit.layers.recurrent import GRU, LSTM, RNN, Recurrent

__all__ = ["from_torch_module", "load_torch_state_dict", "to_torch_module", "to_torch_state_dict"]


def _lstm_reorder(w, H):
    """Swap the last two gate blocks along axis 0: [i, f, g, o] <-> [i, f, o, g] (its own inverse)."""
    return np.concatenate([w[: 2 * H], w[3 * H : 4 * H], w[2 * H : 3 * H]], axis=0)


def _suffix(k, d):
    return f"_l{k}{'_reverse' if d else ''}"


def _torch_kind(layer):
    """The layer's cell name, where PyTorch has the same cell (minGRU: none)."""
    if layer.kind.name not in ("lstm", "gru", "rnn"):
        raise ValueError(f"a {layer.kind.name} layer has no PyTorch counterpart (nn.RNN, nn.LSTM or "
                         f"nn.GRU) to convert to or from")
    return layer.kind.name


def load_torch_state_dict(layer: Recurrent, state_dict):
    """Load a torch RNN/LSTM/GRU state_dict (tensors or arrays) into `layer`, in place."""
    H, name = layer.hidden_size, _torch_kind(layer)
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
            if name == "lstm":
                w_ih, w_hh = _lstm_reorder(w_ih, H), _lstm_reorder(w_hh, H)
                b = _lstm_reorder(b_ih + b_hh, H)
            elif name == "gru":
                b = b_ih.copy()
                b[: 2 * H] += b_hh[: 2 * H]
                ours[pre + "bhn"] = b_hh[2 * H :]
            else:
                b = b_ih + b_hh
            ours[pre + "Wx"], ours[pre + "Wh"], ours[pre + "b"] = w_ih.T, w_hh.T, b
    layer.load_state_dict(ours)
    return layer


def to_torch_state_dict(layer: Recurrent):
    """Return the torch-keyed state_dict of `layer` as NumPy arrays (wrap with torch.from_numpy)."""
    H, name = layer.hidden_size, _torch_kind(layer)
    out = {}
    for k in range(layer.num_layers):
        for d in range(layer.num_directions):
            p = layer._layer_params(k, d)
            s = _suffix(k, d)
            w_ih, w_hh, b = p["Wx"].T, p["Wh"].T, p["b"]
            b_hh = np.zeros_like(b)
            if name == "lstm":
                w_ih, w_hh, b = _lstm_reorder(w_ih, H), _lstm_reorder(w_hh, H), _lstm_reorder(b, H)
            elif name == "gru":
                b_hh[2 * H :] = p["bhn"]
            out["weight_ih" + s] = np.ascontiguousarray(w_ih)
            out["weight_hh" + s] = np.ascontiguousarray(w_hh)
            out["bias_ih" + s] = b.copy()
            out["bias_hh" + s] = b_hh
    return out


def from_torch_module(module, dtype=None):
    """Build the rnnkit layer equivalent to a torch `nn.RNN`, `nn.LSTM` or `nn.GRU` (batch_first=False)."""
    mode = getattr(module, "mode", None)
    if getattr(module, "batch_first", False):
        raise ValueError("from_torch_module expects batch_first=False (rnnkit is time-major)")
    if getattr(module, "proj_size", 0):
        raise ValueError("LSTM with proj_size is not supported")
    sd = {k: to_numpy(v) for k, v in module.state_dict().items()}
    dtype = dtype or sd["weight_ih_l0"].dtype
    args = dict(num_layers=module.num_layers, bidirectional=module.bidirectional,
                dropout=float(module.dropout), dtype=dtype)
    if mode == "LSTM":
        layer = LSTM(module.input_size, module.hidden_size, **args)
    elif mode == "GRU":
        layer = GRU(module.input_size, module.hidden_size, **args)
    elif mode in ("RNN_TANH", "RNN_RELU"):
        layer = RNN(module.input_size, module.hidden_size,
                    nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **args)
    else:
        raise ValueError(f"expected a torch nn.RNN, nn.LSTM or nn.GRU, got {type(module).__name__}")
    return load_torch_state_dict(layer, sd)


def to_torch_module(layer: Recurrent):
    """Build the equivalent torch module (imports torch, an optional dependency)."""
    try:
        import torch
    except ImportError:
        raise ImportError("to_torch_module needs PyTorch: pip install 'rnnkit[torch]'") from None
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[_torch_kind(layer)]
    kwargs = dict(num_layers=layer.num_layers, bidirectional=layer.bidirectional, dropout=layer.dropout)
    if layer.kind.name == "rnn":
        kwargs["nonlinearity"] = layer.nonlinearity
    module = cls(layer.input_size, layer.hidden_size, **kwargs)
    tdtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    module = module.to(tdtype)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(layer).items()})
    return module
