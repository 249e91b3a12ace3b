"""Models for the long-range memory tasks (`rnnkit.data.synthetic`): a recurrent stack and a linear head.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size    H  hidden size
    V  vocabulary (copy: 10; selection tasks and recall: the run's)    E  token embedding (recall)
    K  answer steps of a selection task, or queries of recall (P)

    adding:  x (T, N, 2)  -> recurrent -> out[T-1] (N, H) -> Linear -> prediction (N,)      loss: MSE
    copy:    x (T+20, N) tokens -> one-hot (T+20, N, V) -> recurrent -> out (T+20, N, H)
             -> Linear at every step -> logits (T+20, N, V)                                   loss: CE
    selective-copy, induction:  x (T, N) tokens -> one-hot (T, N, V) -> recurrent -> out (T, N, H)
             -> out[T-K:] -> Linear -> logits (K, N, V)        loss: CE at the K answer steps alone
    recall:  x (T, N) tokens -> embedding (T, N, E) (one-hot (T, N, V) with embed 0) -> recurrent
             -> out (T, N, H) -> out at each sequence's K query steps (K, N, H) -> Linear
             -> logits (K, N, V)                               loss: CE at the K query steps alone

The backward reads as the forward run bottom-up. `rnnkit.tasks.memory.MemoryTask` is what
`rnnkit.train.loop.fit` trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnkit.backend import get_array_module
from rnnkit.data.synthetic import COPY_VOCAB, SELECTION_TASKS, TASKS, adding_baseline, answer_steps, \
    copy_baseline, recall_answers, recall_baseline, recall_pairs_at, selection_baseline
from rnnkit.functional import mse_backward, mse_forward, softmax_cross_entropy
from rnnkit.layers import Embedding, Linear, Module, make_recurrent
from rnnkit.models.cell_options import recurrent_options



# --- the model -------------------------------------------------------------------------------------


@dataclass
class MemoryConfig:
    task: str = "adding"  # adding | copy | selective-copy | induction | recall
    length: int = 100  # T of the task (copy sequences are T+20 long)
    tokens: int = 8  # selective-copy: M data tokens to remember (the Mamba paper's 16 is slow on a CPU)
    # selective-copy and induction: V tokens, noise, V-2 symbols and the marker; recall: keys in the
    # lower half, values in the upper (`rnnkit train recall` sets 256, Zoology's small configuration)
    vocab: int = 16
    pairs: int = 4  # recall: P key-value pairs, each queried once (Zoology's small config: 4 at T = 64)
    embed: int = 0  # token tasks: an embedding of this size for the input (0: one-hot, V wide)
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
        return 2 if self.task == "adding" else self.vocab_size()

    def output_size(self):
        return 1 if self.task == "adding" else self.vocab_size()

    def vocab_size(self):
        """V of a token task."""
        return self.vocab if self.task in SELECTION_TASKS + ("recall",) else COPY_VOCAB

    def data_options(self, length=None):
        """The generator's own options of this task (`rnnkit.data.synthetic.make_batch`), at the run's
        length or at another: recall's pairs grow with the length (`recall_pairs_at`)."""
        if self.task == "recall":
            return {"pairs": self.pairs_at(length or self.length), "vocab": self.vocab}
        return {"tokens": self.tokens, "vocab": self.vocab} if self.task in SELECTION_TASKS else {}

    def pairs_at(self, length):
        """Recall's P at a test length."""
        return recall_pairs_at(self.pairs, self.length, length)

    def answers(self):
        """K, the answer steps at the end of a selection task's sequence; None for adding and copy."""
        return answer_steps(self.task, self.tokens) if self.task in SELECTION_TASKS else None


def one_hot(tokens, V, dtype):
    """tokens (T, N) ints -> (T, N, V)."""
    out = np.zeros(tokens.shape + (V,), dtype=dtype)
    np.put_along_axis(out, tokens[..., None], 1, axis=-1)
    return out


class MemoryModel(Module):
    """Recurrent stack -> Linear: at the last step (adding), at every step (copy), at the K answer
    steps (selective-copy, induction), or at each sequence's query steps (recall)."""

    def __init__(self, cfg: MemoryConfig, dtype=None):
        super().__init__()
        dtype = np.dtype(dtype or cfg.dtype)
        if cfg.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        if cfg.embed and cfg.task != "adding":
            self.embed = Embedding(cfg.vocab_size(), cfg.embed, dtype=dtype, seed=cfg.seed + 2)
        D = cfg.embed if cfg.embed and cfg.task != "adding" else cfg.input_size()
        self.rnn = make_recurrent(cfg.cell, D, cfg.hidden, num_layers=cfg.layers,
                                  seed=cfg.seed, dtype=dtype,
                                  **recurrent_options(cfg.cell, cfg.cell_options,
                                                      forget_bias=cfg.forget_bias,
                                                      update_bias=cfg.update_bias))
        self.head = Linear(cfg.hidden, cfg.output_size(), seed=cfg.seed + 1, dtype=dtype)
        self._shape = self._at = None

    def _embeds(self):
        return "embed" in self._children

    def inputs(self, x):
        """The recurrent stack's input (T, N, D) for a batch's x."""
        if self.cfg.task == "adding":
            return x.astype(self.dtype, copy=False)
        if self._embeds():
            return self.embed.forward(x)
        return one_hot(x, self.cfg.vocab_size(), self.dtype)

    def forward(self, x, at=None):
        """adding: prediction (N,); copy: logits (T+20, N, V); selection: logits (K, N, V); recall:
        logits (K, N, V) at the steps `at` (K, N) of each sequence's queries (None: every step)."""
        out, _ = self.rnn.forward(self.inputs(x))
        self._shape, self._at = out.shape, at
        if self.cfg.task == "adding":
            return self.head.forward(out[-1])[:, 0]
        if at is not None:
            cols = get_array_module(out).arange(out.shape[1])
            return self.head.forward(out[at, cols])  # (K, N, H) -> (K, N, V)
        if self.cfg.answers():
            return self.head.forward(out[-self.cfg.answers():])
        return self.head.forward(out)

    def backward(self, dpred):
        """dpred: gradient of forward's output. Adds into the parameter gradients."""
        xp = get_array_module(dpred)
        if self.cfg.task == "adding":
            dlast = self.head.backward(dpred[:, None])  # (N, H)
            dout = xp.zeros(self._shape, dtype=dlast.dtype)
            dout[-1] = dlast  # the loss sees only the last step
        elif self._at is not None:
            danswers = self.head.backward(dpred)  # (K, N, H)
            dout = xp.zeros(self._shape, dtype=danswers.dtype)
            # a sequence's query steps are distinct, so assignment is the gather's adjoint
            dout[self._at, xp.arange(self._shape[1])] = danswers
        elif self.cfg.answers():
            danswers = self.head.backward(dpred)  # (K, N, H)
            dout = xp.zeros(self._shape, dtype=danswers.dtype)
            dout[-self.cfg.answers():] = danswers  # the loss sees only the answer steps
        else:
            dout = self.head.backward(dpred)
        dx, _ = self.rnn.backward(dout)
        if self._embeds():
            self.embed.backward(dx)

    def loss(self, x, y):
        """Forward and the loss: (loss, dpred) with dpred the gradient of the output. Recall's y (T, N)
        marks its answers: the cross-entropy is taken at the query steps alone."""
        if self.cfg.task == "recall":
            at, values = recall_answers(y)
            return softmax_cross_entropy(self.forward(x, at), values)
        pred = self.forward(x)
        if self.cfg.task == "adding":
            loss, cache = mse_forward(pred, y)
            return loss, mse_backward(cache)
        return softmax_cross_entropy(pred, y)

    def last_step_grad(self, out_last, y):
        """dL/d out[T-1] (N, H) of the loss at the last step alone, for the gradient-flow diagnostic.

        adding: the MSE of the prediction. Token tasks: the cross-entropy of the last step's prediction.
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
    """The loss of a model that predicts without memory (adding: 0.167; copy: 10 ln 8 / (T+20);
    selection: ln(V-2); recall: ln(V - V/2), a guess among the values)."""
    if cfg.task == "recall":
        return recall_baseline(cfg.vocab)[0]
    if cfg.task in SELECTION_TASKS:
        return selection_baseline(cfg.vocab)[0]
    return adding_baseline() if cfg.task == "adding" else copy_baseline(cfg.length)


def evaluate_model(model: MemoryModel, x, y, batch=500):
    """Test figures: adding {"test_mse"}; copy {"test_loss", "test_acc" (on the 10 recalled symbols)};
    selection {"test_loss", "test_acc" (on the answers), "test_seq_acc" (selective-copy: sequences with
    every answer right), "chance_acc"}; recall as selection, its answers at the query steps, with
    "pairs"."""
    cfg = model.cfg
    model.eval()
    losses, correct, count, whole = [], 0, 0, 0
    N = x.shape[1]
    if cfg.task == "recall":  # the longer test lengths in as many values at once as at T = 64
        batch = max(1, min(batch, batch * 64 // x.shape[0]))
    for s in range(0, N, batch):
        xb, yb = x[:, s:s + batch], y[s:s + batch] if cfg.task == "adding" else y[:, s:s + batch]
        if cfg.task == "recall":
            at, yb = recall_answers(yb)
            pred = model.forward(xb, at)
        else:
            pred = model.forward(xb)
        if cfg.task == "adding":
            losses.append(mse_forward(pred, yb)[0] * xb.shape[1])
        elif cfg.answers() or cfg.task == "recall":
            losses.append(softmax_cross_entropy(pred, yb)[0] * xb.shape[1])
            right = pred.argmax(-1) == yb  # (K, N)
            correct += int(right.sum())
            count += right.size
            whole += int(right.all(axis=0).sum())
        else:
            losses.append(softmax_cross_entropy(pred, yb)[0] * xb.shape[1])
            recall = pred[-10:].argmax(-1)
            correct += int((recall == yb[-10:]).sum())
            count += recall.size
    mean = float(sum(losses) / N)
    if cfg.task == "adding":
        return {"test_mse": mean, "baseline": baseline(cfg)}
    if cfg.task == "recall":
        return {"test_loss": mean, "test_acc": correct / count, "test_seq_acc": whole / N,
                "pairs": count // N, "baseline": baseline(cfg),
                "chance_acc": recall_baseline(cfg.vocab)[1]}
    if cfg.answers():
        seq = {"test_seq_acc": whole / N} if cfg.answers() > 1 else {}
        return {"test_loss": mean, "test_acc": correct / count, **seq, "baseline": baseline(cfg),
                "chance_acc": selection_baseline(cfg.vocab)[1]}
    return {"test_loss": mean, "test_acc": correct / count, "baseline": baseline(cfg)}
