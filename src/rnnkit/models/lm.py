"""Character-level language model (char-rnn): embedding -> recurrent stack -> dropout -> linear.

Many-to-many, same length: at every step the model reads a character and predicts the next one.

Dimensions, declared once for this module:
    T  time steps    N  batch (parallel streams)    E  embedding size    H  hidden size    V  vocabulary
    L  layers

    tokens  (T, N) int       logits  (T, N, V)       state  LMState: the cell's state parts, (L, N, H)
                                                            each (h; h and c for the LSTM)

`CharLM.forward` / `backward` train it (truncated BPTT: pass the previous chunk's final state in; no
gradient crosses the boundary). `CharLM.step(tokens, state)` is the streaming inference API: feed one
token (N,) or a chunk (T, N) together with a state, get the logits and the new state; the state is a plain
dataclass of arrays with `to_dict` / `from_dict`, so a stream can be paused, saved and resumed.
`rnnkit.tasks.lm.LMTask` plugs the model into `rnnkit.train.loop.fit`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from rnnkit.backend import DEFAULT_DTYPE
from rnnkit.functional import softmax, softmax_cross_entropy_loss_only
from rnnkit.layers import Dropout, Embedding, Linear, make_recurrent
from rnnkit.layers.module import Module
from rnnkit.models.cell_options import recurrent_options


@dataclass
class LMConfig:
    vocab_size: int
    cell: str = "lstm"  # any registered cell: rnnkit.cells.names()
    embed: int = 64  # embedding size E
    hidden: int = 256  # hidden size H
    layers: int = 2  # recurrent layers L
    dropout: float = 0.0  # between recurrent layers and before the output layer
    seed: int = 0
    # the cell's own options (rnnkit.cells.options(cell)), e.g. {"forget_bias": 2.0}; empty: its
    # defaults, and this model's (an LSTM's forget bias 1.0)
    cell_options: dict = field(default_factory=dict)
    # the recurrent layers' arithmetic (rnnkit.layers.Recurrent): "32", or "bf16-mixed" for bf16
    # products with float32 sums, weights and state; the weights are float32 either way
    precision: str = "32"

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class LMState:
    """The recurrent state between calls: the cell's state parts by name, each (L, N, ...): {"h": ...},
    "c" too for the LSTM, {"conv": ..., "ssm": ...} for Mamba."""

    parts: dict

    @property
    def h(self):
        """The hidden state (L, N, H), of the cells that have one."""
        return self.parts["h"]

    @property
    def batch_size(self) -> int:
        """N: the streams this state carries."""
        return next(iter(self.parts.values())).shape[1]

    def copy(self):
        return LMState({k: v.copy() for k, v in self.parts.items()})

    def to_dict(self) -> dict:
        """Arrays by name (safetensors-ready; `np.savez` works too)."""
        return dict(self.parts)

    @classmethod
    def from_dict(cls, d: dict) -> "LMState":
        return cls({k: np.asarray(v) for k, v in d.items() if v is not None})


class CharLM(Module):
    def __init__(self, cfg: LMConfig, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.cfg = cfg
        s = cfg.seed
        self.embed = Embedding(cfg.vocab_size, cfg.embed, dtype=dtype, seed=s)
        self.rnn = make_recurrent(cfg.cell, cfg.embed, cfg.hidden, num_layers=cfg.layers,
                                  dropout=cfg.dropout, dtype=dtype, seed=s + 1,
                                  precision=cfg.precision, **recurrent_options(cfg.cell, cfg.cell_options, forget_bias=1.0))
        self.drop = Dropout(cfg.dropout, seed=s + 2)
        self.head = Linear(cfg.hidden, cfg.vocab_size, dtype=dtype, seed=s + 3)

    def init_state(self, N) -> LMState:
        return self._lm_state(self.rnn.init_state(N))

    def _lm_state(self, layer_state) -> LMState:
        return LMState(dict(zip(self.rnn.cell.state, self.rnn.state_parts(layer_state))))

    def _layer_state(self, state: LMState):
        try:
            parts = tuple(state.parts[name] for name in self.rnn.cell.state)
        except KeyError as e:
            raise ValueError(f"the state has no part {e.args[0]!r}; a {self.rnn.cell.name} state has "
                             f"{', '.join(self.rnn.cell.state)}") from None
        return self.rnn.join_state(parts)

    # --- training -----------------------------------------------------------------------------

    def forward(self, tokens, state: LMState | None = None):
        """tokens (T, N) -> logits (T, N, V), final LMState. Keeps the caches for one backward."""
        s = None if state is None else self._layer_state(state)
        out, final = self.rnn.forward(self.embed.forward(tokens), s)
        return self.head.forward(self.drop.forward(out)), self._lm_state(final)

    def backward(self, dlogits):
        """Adds the gradients of every parameter; no gradient flows into the initial state (truncated
        BPTT stops at the chunk boundary)."""
        dout = self.drop.backward(self.head.backward(dlogits))
        dx, _ = self.rnn.backward(dout, None)
        idx, V = self.embed._cache
        if V <= 1024:
            # dW[v] = sum of dx where idx == v, as a one-hot product (V, T*N) @ (T*N, E): for a
            # character vocabulary this is several times faster than np.add.at, with the same sums.
            flat = idx.reshape(-1)
            onehot = np.zeros((V, flat.size), dtype=dx.dtype)
            onehot[flat, np.arange(flat.size)] = 1
            self.embed.grads["W"] += onehot @ dx.reshape(flat.size, -1)
        else:
            self.embed.backward(dx)

    # --- streaming inference ------------------------------------------------------------------

    def step(self, tokens, state: LMState | None = None):
        """Inference on one token per stream, tokens (N,) -> logits (N, V), or on a chunk, tokens (T, N)
        -> logits (T, N, V); returns (logits, new state). No dropout, no caches kept, the input state is
        not modified.

        A single step goes through the layer's one-step function (`Recurrent.step`, the cell's own
        `step`: one x Wx + h Wh product per layer and the element-wise update, without the whole-
        sequence functions' scan of every weight for NaN/inf); a chunk goes through each layer's
        sequence forward (its input projection is one product for the whole chunk)."""
        tokens = np.asarray(tokens)
        if state is None:
            state = self.init_state(tokens.shape[-1])
        rnn = self.rnn
        x = self.embed.params["W"][tokens]  # (N, E) or (T, N, E)
        s = self._layer_state(state)
        if tokens.ndim == 1:
            x, new = rnn.step(x, s)
        else:
            parts = rnn.state_parts(s)
            new = [np.empty_like(p) for p in parts]
            for k in range(rnn.num_layers):
                x, final, _ = rnn.cell.forward(x, tuple(p[k] for p in parts), rnn.layer_params(k, 0))
                for dst, src in zip(new, final):
                    dst[k] = src
            new = rnn.join_state(new)
        head = self.head.params
        logits = x @ head["W"] + head["b"]
        return logits, self._lm_state(new)


def evaluate_stream(model: CharLM, ids, batch: int = 64, chunk: int = 256, min_stream: int = 512) -> dict:
    """Mean next-character loss over the token stream `ids` (nats and bits per character), in eval mode.

    The stream is cut into at most `batch` parallel streams of at least `min_stream` tokens, run in chunks with the state carried along (so each
    character is predicted from all of its own stream's history); the few leftover tokens are dropped.
    """
    ids = np.asarray(ids)
    n = len(ids) - 1
    if n < 1:
        raise ValueError("need at least two tokens to evaluate")
    batch = max(1, min(batch, n // min_stream))  # long streams: little of the text is read cold
    L = n // batch  # predictions per stream
    x_all = ids[: batch * L].reshape(batch, L).T
    y_all = ids[1: batch * L + 1].reshape(batch, L).T
    state = model.init_state(batch)
    total, count = 0.0, 0
    for p in range(0, L, chunk):
        x, y = x_all[p:p + chunk], y_all[p:p + chunk]
        logits, state = model.step(x, state)
        loss, _ = softmax_cross_entropy_loss_only(logits, y)
        total += loss * y.size
        count += y.size
    nats = total / count
    return {"val_loss": nats, "bits_per_char": nats / math.log(2), "chars": count}


def sample(model: CharLM, prime_ids, length: int, temperature: float = 1.0, top_k: int | None = None,
           rng=None, state: LMState | None = None):
    """Yield `length` sampled token ids, one at a time, the state carried from step to step.

    prime_ids: the ids fed first (at least one). temperature 0 picks the most likely token (greedy).
    """
    rng = rng or np.random.default_rng()
    prime_ids = np.asarray(prime_ids, dtype=np.int64)
    if prime_ids.size < 1:
        raise ValueError("need at least one prime token")
    logits, state = model.step(prime_ids[:, None], state)
    logits = logits[-1, 0]
    for _ in range(length):
        nxt = pick(logits, temperature, top_k, rng)
        yield nxt
        logits, state = model.step(np.array([nxt]), state)
        logits = logits[0]


def pick(logits, temperature, top_k, rng) -> int:
    """One token from 1-D logits: greedy at temperature 0, else softmax(logits / T) over the top k."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    return int(rng.choice(z.size, p=softmax(z)))


def config_dict(cfg: LMConfig) -> dict:
    return asdict(cfg)
