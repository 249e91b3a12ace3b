"""Models for the long-range memory tasks (`rnnkit.data.synthetic`): a recurrent stack and a linear head.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size    V  copy-task vocabulary (10)

    adding:  x (T, N, 2)  -> recurrent -> out[T-1] (N, H) -> Linear -> prediction (N,)      loss: MSE
    copy:    x (T+20, N) tokens -> one-hot (T+20, N, V) -> recurrent -> out (T+20, N, H)
             -> Linear at every step -> logits (T+20, N, V)                                   loss: CE

The backward reads as the forward run bottom-up. `rnnkit.tasks.memory.MemoryTask` is what
`rnnkit.train.loop.fit` trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnkit.backend import get_array_module
from rnnkit.data.synthetic import COPY_VOCAB, TASKS, adding_baseline, copy_baseline
from rnnkit.functional import mse_backward, mse_forward, softmax_cross_entropy
from rnnkit.layers import Linear, Module, make_recurrent
from rnnkit.models.cell_options import recurrent_options



# --- the model -------------------------------------------------------------------------------------


@dataclass
class MemoryConfig:
    task: str = "adding"  # adding | copy
    length: int = 100  # T of the task (copy sequences are T+20 long)
    cell: str = "lstm"  # any registered cell: rnnkit.cells.names()
    hidden: int = 64  # H
    layers: int = 1  # stacked recurrent layers
    forget_bias: float = 1.0  # LSTM forget-gate bias at initialisation
    # the update gate's bias at initialisation, for a cell that has that option (None: uniform)
    update_bias: float | None = None
    # the cell's own options (rnnkit.cells.options(cell)) over the two above; empty: the defaults
    cell_options: dict = field(default_factory=dict)
    seed: int = 0  # weights
    batch_size: int = 64  # training batch
    test_size: int = 1000  # fixed test set drawn from its own seed
    # float64, not rnnkit's usual float32: a gradient vanishing over hundreds of steps passes through
    # float32's subnormal numbers, on which NumPy's arithmetic is about 10x slower (and then flushes to 0)
    dtype: str = "float64"

    def input_size(self):
        return 2 if self.task == "adding" else COPY_VOCAB

    def output_size(self):
        return 1 if self.task == "adding" else COPY_VOCAB


def one_hot(tokens, V, dtype):
    """tokens (T, N) ints -> (T, N, V)."""
    out = np.zeros(tokens.shape + (V,), dtype=dtype)
    np.put_along_axis(out, tokens[..., None], 1, axis=-1)
    return out


class MemoryModel(Module):
    """Recurrent stack -> Linear: at the last step (adding) or at every step (copy)."""

    def __init__(self, cfg: MemoryConfig, dtype=None):
        super().__init__()
        dtype = np.dtype(dtype or cfg.dtype)
        if cfg.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        self.rnn = make_recurrent(cfg.cell, cfg.input_size(), cfg.hidden, num_layers=cfg.layers,
                                  seed=cfg.seed, dtype=dtype,
                                  **recurrent_options(cfg.cell, cfg.cell_options,
                                                      forget_bias=cfg.forget_bias,
                                                      update_bias=cfg.update_bias))
        self.head = Linear(cfg.hidden, cfg.output_size(), seed=cfg.seed + 1, dtype=dtype)
        self._shape = None

    def inputs(self, x):
        """The recurrent stack's input (T, N, D) for a batch's x."""
        if self.cfg.task == "copy":
            return one_hot(x, COPY_VOCAB, self.dtype)
        return x.astype(self.dtype, copy=False)

    def forward(self, x):
        """adding: prediction (N,); copy: logits (T+20, N, V)."""
        out, _ = self.rnn.forward(self.inputs(x))
        self._shape = out.shape
        if self.cfg.task == "adding":
            return self.head.forward(out[-1])[:, 0]
        return self.head.forward(out)

    def backward(self, dpred):
        """dpred: gradient of forward's output. Adds into the parameter gradients."""
        xp = get_array_module(dpred)
        if self.cfg.task == "adding":
            dlast = self.head.backward(dpred[:, None])  # (N, H)
            dout = xp.zeros(self._shape, dtype=dlast.dtype)
            dout[-1] = dlast  # the loss sees only the last step
        else:
            dout = self.head.backward(dpred)
        self.rnn.backward(dout)

    def loss(self, x, y):
        """Forward and the loss: (loss, dpred) with dpred the gradient of the output."""
        pred = self.forward(x)
        if self.cfg.task == "adding":
            loss, cache = mse_forward(pred, y)
            return loss, mse_backward(cache)
        return softmax_cross_entropy(pred, y)

    def last_step_grad(self, out_last, y):
        """dL/d out[T-1] (N, H) of the loss at the last step alone, for the gradient-flow diagnostic.

        adding: the MSE of the prediction. copy: the cross-entropy of the last step's prediction.
        """
        W, b = self.head.params["W"], self.head.params["b"]
        if self.cfg.task == "adding":
            pred = (out_last @ W + b)[:, 0]
            _, cache = mse_forward(pred, y.astype(pred.dtype))
            return mse_backward(cache)[:, None] @ W.T
        _, dlogits = softmax_cross_entropy(out_last @ W + b, y[-1])
        return dlogits @ W.T


# --- evaluation ------------------------------------------------------------------------------------


def baseline(cfg: MemoryConfig):
    """The loss of a model that predicts without memory (adding: 0.167; copy: 10 ln 8 / (T+20))."""
    return adding_baseline() if cfg.task == "adding" else copy_baseline(cfg.length)


def evaluate_model(model: MemoryModel, x, y, batch=500):
    """Test figures: adding {"test_mse"}; copy {"test_loss", "test_acc" (on the 10 recalled symbols)}."""
    cfg = model.cfg
    model.eval()
    losses, correct, count = [], 0, 0
    N = x.shape[1]
    for s in range(0, N, batch):
        xb, yb = x[:, s:s + batch], y[..., s:s + batch] if cfg.task == "copy" else y[s:s + batch]
        pred = model.forward(xb)
        if cfg.task == "adding":
            losses.append(mse_forward(pred, yb)[0] * xb.shape[1])
        else:
            losses.append(softmax_cross_entropy(pred, yb)[0] * xb.shape[1])
            recall = pred[-10:].argmax(-1)
            correct += int((recall == yb[-10:]).sum())
            count += recall.size
    mean = float(sum(losses) / N)
    if cfg.task == "adding":
        return {"test_mse": mean, "baseline": baseline(cfg)}
    return {"test_loss": mean, "test_acc": correct / count, "baseline": baseline(cfg)}
