"""Character-level language model (char-rnn): embedding -> recurrent stack -> dropout -> linear.

Many-to-many, same length: at every step the model reads a character and predicts the next one.

Dimensions, declared once for this module:
    T  time steps    N  batch (parallel streams)    E  embedding size    H  hidden size    V  vocabulary
    L  layers

    tokens  (T, N) int       logits  (T, N, V)       state  LMState: h (L, N, H) (and c for the LSTM)

`CharLM.forward` / `backward` train it (truncated BPTT: pass the previous chunk's final state in; no
gradient crosses the boundary). `CharLM.step(tokens, state)` is the streaming inference API: feed one
token (N,) or a chunk (T, N) together with a state, get the logits and the new state; the state is a plain
dataclass of arrays with `to_dict` / `from_dict`, so a stream can be paused, saved and resumed.
`rnnkit.tasks.lm.LMTask` plugs the model into `rnnkit.train.loop.fit`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rnnkit.backend import DEFAULT_DTYPE
from rnnkit.layers import Dropout, Embedding, Linear, make_recurrent
from rnnkit.layers.module import Module


@dataclass
class LMConfig:
    vocab_size: int
    cell: str = "lstm"  # lstm | gru | rnn | mingru
    embed: int = 64  # embedding size E
    hidden: int = 256  # hidden size H
    layers: int = 2  # recurrent layers L
    dropout: float = 0.0  # between recurrent layers and before the output layer
    seed: int = 0

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class LMState:
    """The recurrent state between calls: h (L, N, H), and c (L, N, H) for the LSTM (else None)."""

    h: np.ndarray
    c: np.ndarray | None = None

    def as_layer_state(self):
        return self.h if self.c is None else (self.h, self.c)

    @classmethod
    def from_layer_state(cls, s):
        return cls(s[0], s[1]) if isinstance(s, tuple) else cls(s, None)

    def copy(self):
        return LMState(self.h.copy(), None if self.c is None else self.c.copy())

    def to_dict(self) -> dict:
        """Arrays by name (safetensors-ready; `np.savez` works too)."""
        return {"h": self.h} if self.c is None else {"h": self.h, "c": self.c}

    @classmethod
    def from_dict(cls, d: dict) -> "LMState":
        return cls(np.asarray(d["h"]), None if d.get("c") is None else np.asarray(d["c"]))


class CharLM(Module):
    def __init__(self, cfg: LMConfig, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.cfg = cfg
        s = cfg.seed
        self.embed = Embedding(cfg.vocab_size, cfg.embed, dtype=dtype, seed=s)
        kw = {"forget_bias": 1.0} if cfg.cell == "lstm" else {}
        self.rnn = make_recurrent(cfg.cell, cfg.embed, cfg.hidden, num_layers=cfg.layers,
                                  dropout=cfg.dropout, dtype=dtype, seed=s + 1, **kw)
        self.drop = Dropout(cfg.dropout, seed=s + 2)
        self.head = Linear(cfg.hidden, cfg.vocab_size, dtype=dtype, seed=s + 3)

    def init_state(self, N) -> LMState:
        return LMState.from_layer_state(self.rnn.init_state(N))

    # --- training -----------------------------------------------------------------------------

    def forward(self, tokens, state: LMState | None = None):
        """tokens (T, N) -> logits (T, N, V), final LMState. Keeps the caches for one backward."""
        s = None if state is None else state.as_layer_state()
        out, final = self.rnn.forward(self.embed.forward(tokens), s)
        return self.head.forward(self.drop.forward(out)), LMState.from_layer_state(final)

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

        A single step runs the cell equations directly (one x Wx + h Wh product per layer and a few
        element-wise operations on (N, H) arrays), skipping the whole-sequence functions' argument and
        finiteness checks, which would read every weight on every step. A chunk goes through the
        sequence functions (their input projection is one product for the whole chunk)."""
        tokens = np.asarray(tokens)
        single = tokens.ndim == 1
        if state is None:
            state = self.init_state(tokens.shape[-1])
        rnn = self.rnn
        x = self.embed.params["W"][tokens]  # (N, E) or (T, N, E)
        parts = (state.h, state.c) if state.c is not None else (state.h,)
        new = [np.empty_like(p) for p in parts]
        for k in range(rnn.num_layers):
            if single:
                x = self._cell_step(k, x, new, parts)
            else:
                h, final, _ = rnn.kind.forward(x, tuple(p[k] for p in parts), rnn._layer_params(k, 0),
                                               None)
                for dst, src in zip(new, final):
                    dst[k] = src
                x = h[1:]
        head = self.head.params
        logits = x @ head["W"] + head["b"]
        return logits, LMState(new[0], new[1] if len(new) > 1 else None)

    def _cell_step(self, k, x, new, parts):
        """One time step of layer k: x (N, D) and the state parts[.][k] -> h (N, H), written to new[.][k].
        The equations are those of rnnkit.functional (gate order [i, f, o, g]; GRU [r, z, n]; minGRU
        [z, c])."""
        rnn = self.rnn
        p = rnn.params
        pre = f"l{k}."
        H = rnn.hidden_size
        h0 = parts[0][k]
        a = x @ p[pre + "Wx"]
        a += p[pre + "b"]
        name = rnn.kind.name
        if name == "lstm":
            a += h0 @ p[pre + "Wh"]
            ifo = 0.5 * np.tanh(0.5 * a[:, :3 * H]) + 0.5  # sigmoid
            g = np.tanh(a[:, 3 * H:])
            c = ifo[:, H:2 * H] * parts[1][k] + ifo[:, :H] * g  # c = f * c_prev + i * g
            h = ifo[:, 2 * H:] * np.tanh(c)  # h = o * tanh(c)
            new[1][k] = c
        elif name == "gru":
            hw = h0 @ p[pre + "Wh"]
            rz = 0.5 * np.tanh(0.5 * (a[:, :2 * H] + hw[:, :2 * H])) + 0.5
            r, z = rz[:, :H], rz[:, H:]
            n = np.tanh(a[:, 2 * H:] + r * (hw[:, 2 * H:] + p[pre + "bhn"]))
            h = n + z * (h0 - n)  # h = (1 - z) n + z h_prev
        elif name == "mingru":
            z = 0.5 * np.tanh(0.5 * a[:, :H]) + 0.5  # the gates read x only: no h Wh product
            h = (1 - z) * h0 + z * a[:, H:]  # h = (1 - z) h_prev + z c
        else:
            a += h0 @ p[pre + "Wh"]
            h = np.maximum(a, 0) if getattr(rnn, "nonlinearity", "tanh") == "relu" else np.tanh(a)
        new[0][k] = h
        return h


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


def softmax_cross_entropy_loss_only(logits, y):
    """The mean cross-entropy without building the gradient (evaluation)."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V).astype(np.float64)
    m = flat.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(flat - m).sum(axis=1)) + m[:, 0]
    nll = log_z - flat[np.arange(flat.shape[0]), y.reshape(-1)]
    return float(nll.mean()), None


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
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(z.size, p=p))


def config_dict(cfg: LMConfig) -> dict:
    return asdict(cfg)
