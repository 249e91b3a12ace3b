"""Image captioner (one-to-many): image -> features -> initial state of an LSTM/GRU -> words.

Dimensions, declared once for this module:
    N  images in a batch     T  caption steps          V  vocabulary        E  word embedding size
    H  hidden size           C  feature channels       L  feature-map locations (h * w)
    S  image side (pixels)   Df feature vector size (C for the conv encoder)

Pipeline (teacher forcing in training: the decoder reads the true previous word):
    pixels (N, 3, S, S) --conv encoder--> fmap (N, C, h, w) --global average--> v (N, C)
       or precomputed features: v (N, Df), or a map (N, C, h, w) averaged the same way
    vhat = (v - mean) / std              standardised per feature (batch statistics in training)
    h0 = tanh(vhat Wp + bp)              (N, H); the LSTM's c0 too, from its own columns of Wp
    x_t = Emb[w_t]                       (T, N, E), w_0 = <bos>
    h_t = LSTM/GRU(x_t, h_{t-1})         (T, N, H)
    z_t = h_t, or with attention "luong" (Luong et al. 2015, "general" score, on the decoder output):
        alpha_t = softmax_l( h_t . (a_l Wa) / sqrt(H) ),  ctx_t = sum_l alpha_tl a_l    (a_l = fmap at l)
        z_t = tanh([h_t; ctx_t] Wc + bc)
    logits_t = z_t Wo + bo               (T, N, V)

With attention "sat" (show-attend-tell, Xu et al. 2015) the context is read with the previous state and
fed into the cell with the word instead:
        alpha_t = softmax_l( h_{t-1} . (a_l Wa) / sqrt(H) ),  ctx_t = sum_l alpha_tl a_l
        h_t = LSTM/GRU([x_t; ctx_t], h_{t-1}),               z_t = h_t
    (a_l here standardised over its channels first: the raw ReLU map would saturate the gates)
    which makes the recurrence itself depend on the attention, so the sequence runs step by step
    (the cell's forward over one step at a time, BPTT by its one-step backward calls carrying the
    state's gradient).
    Xu et al. score with a small MLP and add a gating scalar and a deep output; here the score is the
    same bilinear one as "luong", and the output reads h_t alone.

The stateless pieces are in `rnnkit.functional` (`image_attention`, `norms`); greedy decoding and beam
search in `rnnkit.models.decoding`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from rnnkit.backend import DEFAULT_DTYPE
from rnnkit import cells
from rnnkit.functional import (
    channel_norm_backward,
    channel_norm_forward,
    feature_norm_backward,
    feature_norm_forward,
    image_attention_backward,
    image_attention_forward,
    log_softmax,
    sat_context_backward,
    sat_context_forward,
    softmax_cross_entropy,
)
from rnnkit.functional.conv import global_avgpool_backward, global_avgpool_forward
from rnnkit.layers import Dropout, Embedding, Linear, Module, make_recurrent
from rnnkit.layers.conv import Conv2d, MaxPool2d, ReLU, Sequential
from rnnkit.models import decoding
from rnnkit.models.cell_options import recurrent_options


@dataclass
class CaptionerConfig:
    vocab_size: int
    cell: str = "lstm"  # any registered cell whose state is parts of (N, H): lstm, gru, ...
    embed: int = 128  # word embedding size E
    hidden: int = 256  # decoder hidden size H
    encoder: str = "conv"  # conv: trained end to end from pixels; features: precomputed vectors / maps
    image_size: int = 64  # S, conv encoder only
    channels: tuple = (16, 32, 64)  # filters of each block (3x3 conv, ReLU, 2x2 max pool)
    feature_shape: tuple | None = None  # features encoder: (Df,) or (C, h, w)
    attention: str = "none"  # over the feature map: none | luong (on the output) | sat (on the input)
    pool: str = "avg"  # image vector from the map: "avg" (global average, C) or "flatten" (C*h*w)
    dropout: float = 0.0  # on the image vector, the word embeddings and the decoder output
    seed: int = 0
    # the cell's own options (rnnkit.cells.options(cell)), e.g. {"forget_bias": 1.0}; empty: its defaults
    cell_options: dict = field(default_factory=dict)

    def to_dict(self):
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["feature_shape"] = None if self.feature_shape is None else list(self.feature_shape)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        if isinstance(d.get("attention"), bool):  # runs saved before the kinds were named
            d["attention"] = "luong" if d["attention"] else "none"
        d["channels"] = tuple(d.get("channels", (16, 32, 64)))
        if d.get("feature_shape") is not None:
            d["feature_shape"] = tuple(d["feature_shape"])
        return cls(**d)


# --- the model -------------------------------------------------------------------------------------


def _scatter_rows(d, rows, N):
    """The adjoint of `x[rows]`: out[i] = sum of d[m] over the m with rows[m] == i."""
    out = np.zeros((N,) + d.shape[1:], dtype=d.dtype)
    np.add.at(out, rows, d)
    return out


class ConvEncoder(Sequential):
    """Blocks of 3x3 conv (padding 1) + ReLU + 2x2 max pool: (N, 3, S, S) -> (N, C, S/2^k, S/2^k)."""

    def __init__(self, channels=(16, 32, 64), dtype=DEFAULT_DTYPE, seed=0):
        layers, cin = [], 3
        for i, c in enumerate(channels):
            layers += [Conv2d(cin, c, 3, padding=1, dtype=dtype, seed=seed + i), ReLU(), MaxPool2d(2)]
            cin = c
        super().__init__(*layers)


class Captioner(Module):
    """See the module docstring. `loss_and_backward` trains; `greedy` and `beam_search` decode."""

    def __init__(self, cfg: CaptionerConfig, bos_id: int, eos_id: int, pad_id: int = 0, unk_id: int = 1,
                 dtype=DEFAULT_DTYPE):
        super().__init__()
        self.cfg = cfg
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
        self.dtype = np.dtype(dtype)
        s = cfg.seed
        options = recurrent_options(cfg.cell, cfg.cell_options)
        cell = cells.create(cfg.cell, **options)  # its options may shape its state
        if not cell.output_is_state or any(shape != (1, cfg.hidden)
                                           for shape in cell.state_shape(1, cfg.hidden).values()):
            raise ValueError(f"the captioner's decoder needs a cell whose state is (N, H) arrays, the "
                             f"first its output; {cfg.cell} is not")
        if cfg.encoder == "conv":
            if cfg.image_size % (2 ** len(cfg.channels)):
                raise ValueError(f"image_size {cfg.image_size} must be divisible by 2^{len(cfg.channels)}")
            self.encoder = ConvEncoder(cfg.channels, dtype=dtype, seed=s + 10)
            C = cfg.channels[-1]
            side = cfg.image_size // 2 ** len(cfg.channels)
            Dv = C * side * side if cfg.pool == "flatten" else C
        elif cfg.encoder == "features":
            if not cfg.feature_shape or len(cfg.feature_shape) not in (1, 3):
                raise ValueError(f"features encoder needs feature_shape (Df,) or (C, h, w), got "
                                 f"{cfg.feature_shape}")
            self.encoder = None
            C = cfg.feature_shape[0]
            Dv = int(np.prod(cfg.feature_shape)) if cfg.pool == "flatten" else C
            if cfg.attention != "none" and len(cfg.feature_shape) != 3:
                raise ValueError("attention needs a feature map (C, h, w), not feature vectors")
        else:
            raise ValueError(f"encoder must be conv or features, got {cfg.encoder!r}")
        if cfg.attention not in ("none", "luong", "sat"):
            raise ValueError(f"attention must be none, luong or sat, got {cfg.attention!r}")
        if cfg.pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be avg or flatten, got {cfg.pool!r}")
        H, E, V = cfg.hidden, cfg.embed, cfg.vocab_size
        self.feat_dim = C
        # every part of the state comes from the image (the LSTM's c0 too: the cell state carries it
        # further than h0 alone)
        self.img_proj = Linear(Dv, len(cell.state) * H, dtype=dtype, seed=s + 1)
        self.embed = Embedding(V, E, dtype=dtype, seed=s + 2)
        self.sat = cfg.attention == "sat"
        self.rnn = make_recurrent(cfg.cell, E + (C if self.sat else 0), H, dtype=dtype, seed=s + 3,
                                  **options)
        if cfg.attention != "none":
            rng = np.random.default_rng(s + 4)
            self.add_param("att_Wa", rng.uniform(-1, 1, (C, H)).astype(dtype) / math.sqrt(C))
        if cfg.attention == "luong":
            self.add_param("att_Wc", rng.uniform(-1, 1, (H + C, H)).astype(dtype) / math.sqrt(H + C))
            self.add_param("att_bc", np.zeros(H, dtype))
        self.head = Linear(H, V, dtype=dtype, seed=s + 5)
        # running mean / variance of the image vector (buffers, not parameters: checkpointed as extra state)
        self.norm_mean, self.norm_var = np.zeros(Dv, dtype), np.ones(Dv, dtype)
        self.norm_momentum = 0.1
        self.drop_img = Dropout(cfg.dropout, seed=s + 6)
        self.drop_emb = Dropout(cfg.dropout, seed=s + 7)
        self.drop_out = Dropout(cfg.dropout, seed=s + 8)
        self._cache = None

    # --- pieces shared by training and decoding ---------------------------------------------------

    def encode(self, images):
        """images: pixels (N, 3, S, S) or features (N, Df) / (N, C, h, w)
        -> v (N, Dv), A (N, L, C) or None, cache."""
        images = np.asarray(images, dtype=self.dtype)
        fmap = self.encoder.forward(images) if self.encoder is not None else images
        if fmap.ndim == 2:
            return fmap, None, None
        N, C = fmap.shape[:2]
        if self.cfg.pool == "flatten":
            v, gap_cache = fmap.reshape(N, -1), None
        else:
            v, gap_cache = global_avgpool_forward(fmap)
        A = fmap.reshape(N, C, -1).transpose(0, 2, 1) if self.cfg.attention != "none" else None
        return v, A, (fmap.shape, gap_cache)

    def _encode_backward(self, dv, dA, cache):
        if self.encoder is None or cache is None:
            return  # precomputed features have no parameters
        fshape, gap_cache = cache
        if self.cfg.pool == "flatten":
            dfmap = dv.reshape(fshape).copy()
        else:
            dfmap = global_avgpool_backward(dv, gap_cache)
        if dA is not None:
            N, C = fshape[:2]
            dfmap += dA.transpose(0, 2, 1).reshape(fshape)
        self.encoder.backward(dfmap)

    def normalise(self, v):
        """Batch statistics in training (and the running averages updated), running averages in eval."""
        if self.training and v.shape[0] > 1:
            vhat, cache = feature_norm_forward(v)
            m = self.norm_momentum
            self.norm_mean = (1 - m) * self.norm_mean + m * v.mean(axis=0)
            self.norm_var = (1 - m) * self.norm_var + m * v.var(axis=0)
            return vhat, cache
        return feature_norm_forward(v, self.norm_mean, self.norm_var)

    def initial_state(self, v):
        """Every part of the state from the image: [h0; c0] = tanh(v Wp + bp) for the LSTM, h0 for the
        GRU; each (1, N, H).

        The tanh keeps the initial state in the range of the states the cell produces itself: an
        unbounded projection of ReLU features (|h0| ~ 10-100) saturates every gate at the first step,
        and the decoder then learns to ignore the image."""
        s = np.tanh(self.img_proj.forward(v))[None]
        self._s0 = s
        H = self.cfg.hidden
        return self.rnn.join_state(tuple(s[..., i * H:(i + 1) * H].copy()
                                         for i in range(len(self.rnn.cell.state))))

    def _attend(self, out, A):
        if self.cfg.attention != "luong":
            return out, None
        z, _, cache = image_attention_forward(out, A, self.params["att_Wa"], self.params["att_Wc"],
                                              self.params["att_bc"])
        return z, cache

    # --- training -----------------------------------------------------------------------------------

    def forward(self, images, ids, rows=None):
        """Teacher forcing: ids (T+1, M) = <bos> w1 .. <eos> <pad>..; returns logits (T, M, V).

        rows: (M,) which image each caption belongs to (images are then encoded once for all of their
        captions, and the gradients of the shared encodings add up); None: caption m is of image m.
        """
        v, A, enc_cache = self.encode(images)
        N = v.shape[0]
        if rows is not None:
            v = v[rows]
            A = A[rows] if A is not None else None
        vn, norm_cache = self.normalise(v)
        vd = self.drop_img.forward(vn)
        state = self.initial_state(vd)
        x = self.drop_emb.forward(self.embed.forward(ids[:-1]))
        if self.sat:
            # the raw ReLU map is ~10x the size of a word vector and would saturate the cell's gates
            An, cn_cache = channel_norm_forward(A)
            out, att_cache = self._sat_forward(x, state, An)
            att_cache = (att_cache, cn_cache)
        else:
            out, _ = self.rnn.forward(x, state)
        z, luong_cache = self._attend(out, A)
        att_cache = att_cache if self.sat else luong_cache
        logits = self.head.forward(self.drop_out.forward(z))
        self._cache = (enc_cache, att_cache, rows, N, norm_cache)
        return logits

    def backward(self, dlogits):
        """Adds every parameter's gradient; the reverse of `forward`, bottom-up."""
        enc_cache, att_cache, rows, N, norm_cache = self._cache
        dz = self.drop_out.backward(self.head.backward(dlogits))
        dA = None
        if self.sat:
            dx, dstate0, dAn = self._sat_backward(dz, att_cache[0])
            dA = channel_norm_backward(dAn, att_cache[1])
        elif att_cache is not None:
            dout, dA, dWa, dWc, dbc = image_attention_backward(dz, att_cache)
            self.grads["att_Wa"] += dWa
            self.grads["att_Wc"] += dWc
            self.grads["att_bc"] += dbc
        else:
            dout = dz
        if not self.sat:
            dx, dstate0 = self.rnn.backward(dout)
        self.embed.backward(self.drop_emb.backward(dx))
        ds0 = np.concatenate(self.rnn.state_parts(dstate0), axis=-1)
        ds0 = ds0 * (1 - self._s0 * self._s0)  # through the tanh
        dv = feature_norm_backward(self.drop_img.backward(self.img_proj.backward(ds0[0])), norm_cache)
        if rows is not None:  # an image shared by several captions gets the sum of their gradients
            dv = _scatter_rows(dv, rows, N)
            dA = _scatter_rows(dA, rows, N) if dA is not None else None
        self._encode_backward(dv, dA, enc_cache)

    def loss_and_backward(self, images, ids, rows=None):
        """Mean cross-entropy per word (the <eos> included, padding excluded); gradients added.
        Returns (loss, number of target tokens)."""
        logits = self.forward(images, ids, rows)
        y = ids[1:]
        mask = y != self.pad_id
        loss, dlogits = softmax_cross_entropy(logits, y, mask)
        self.backward(dlogits)
        return loss, int(mask.sum())

    def loss(self, images, ids, rows=None):
        """The same loss with no backward (validation)."""
        logits = self.forward(images, ids, rows)
        y = ids[1:]
        mask = y != self.pad_id
        loss, _ = softmax_cross_entropy(logits, y, mask)
        return loss, int(mask.sum())

    # --- show-attend-tell: the recurrence step by step -------------------------------------------------

    def _sat_forward(self, x, state, A):
        """x (T, N, E) embedded words; state the initial state; A (N, L, C). Returns out (T, N, H).
        Each step is the cell's own forward over one step, which keeps the cache its backward needs."""
        rnn = self.rnn
        if rnn.num_layers != 1 or rnn.bidirectional:
            raise ValueError("show-attend-tell runs one unidirectional layer")
        cell, p = rnn.cell, rnn.layer_params(0)
        s = tuple(part[0] for part in rnn.state_parts(state))  # (N, H) each; s[0] is h
        K = A @ self.params["att_Wa"]  # (N, L, H): the keys, projected once for every step
        steps, out = [], np.empty((x.shape[0],) + s[0].shape, dtype=x.dtype)
        for t in range(x.shape[0]):
            ctx, acache = sat_context_forward(s[0], A, K)
            xt = np.concatenate([x[t], ctx], axis=-1)[None]  # (1, N, E + C)
            y, s, cache = cell.forward(xt, s, p)
            out[t] = y[0]
            steps.append((acache, cache))
        return out, (steps, A, K)

    def _sat_backward(self, dout, sat_cache):
        """dout (T, N, H) -> dx (T, N, E), the initial state's gradient (like Recurrent.backward), dA.
        Step t's cell backward gets dout[t] plus the carried state gradient from step t+1; the context
        read at step t adds its share to dh_{t-1}."""
        steps, A, K = sat_cache
        rnn = self.rnn
        cell = rnn.cell
        E = self.cfg.embed
        T, N, H = dout.shape
        ds = tuple(np.zeros((N, H), dout.dtype) for _ in cell.state)
        dx = np.empty((T, N, E), dout.dtype)
        dK, dA = np.zeros_like(K), np.zeros_like(A)
        g = {k: np.zeros_like(v) for k, v in rnn.layer_params(0).items()}
        for t in reversed(range(T)):
            acache, cache = steps[t]
            dxt, ds, grads = cell.backward(dout[t][None], cache, ds)
            for k, v in grads.items():
                g[k] += v
            dx[t] = dxt[0, :, :E]
            dh_att, dA_t, dK_t = sat_context_backward(dxt[0, :, E:], acache)
            ds = (ds[0] + dh_att,) + tuple(ds[1:])
            dA += dA_t
            dK += dK_t
        for k, v in g.items():
            rnn.grads["l0." + k] += v
        # K = A Wa
        self.grads["att_Wa"] += A.reshape(-1, A.shape[-1]).T @ dK.reshape(-1, H)
        dA += dK @ self.params["att_Wa"].T
        return dx, rnn.join_state(tuple(d[None] for d in ds)), dA

    # --- decoding -----------------------------------------------------------------------------------

    def _step_logp(self, tokens, state, A):
        """One decoder step for a batch of previous tokens (B,) -> log-probabilities (B, V), new state,
        and no extra (the `decoding` step signature)."""
        x = self.embed.params["W"][tokens]  # (B, E)
        if self.sat:
            h = self.rnn.state_parts(state)[0][0]
            ctx, _ = sat_context_forward(h, A, A @ self.params["att_Wa"])
            x = np.concatenate([x, ctx], axis=-1)
        out, state = self.rnn.step(x, state)  # the cell's one-step function
        out, _ = self._attend(out[None], A)
        logits = self.head.forward(out)[0].astype(np.float64)
        # never generate the reserved tokens: <unk> would match no reference word
        logits[:, [self.pad_id, self.unk_id, self.bos_id]] = -np.inf
        return log_softmax(logits), state, None

    def _no_grad_encode(self, images):
        was = self.training
        self.eval()
        try:
            v, A, _ = self.encode(images)
            if self.sat and A is not None:
                A = channel_norm_forward(A)[0]
            return self.normalise(v)[0], A
        finally:
            self.train(was)

    def greedy(self, images, max_len=20) -> list[list[int]]:
        """The most probable next word at every step, until <eos> or max_len words. One id list per image."""
        v, A = self._no_grad_encode(images)
        step = partial(self._step_logp, A=A)
        hyps, _ = decoding.greedy(step, self.initial_state(v), v.shape[0], self.bos_id, self.eos_id,
                                  max_len)
        return hyps

    def beam_search(self, images, beam=5, max_len=20, length_penalty=0.0) -> list[list[int]]:
        """Beam search, all images at once (N * beam rows); see `rnnkit.models.decoding.beam_search`.
        length_penalty 0 ranks the finished captions by their plain log-probability."""
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        if beam == 1:
            return self.greedy(images, max_len)
        v, A = self._no_grad_encode(images)
        N, K = v.shape[0], beam
        v = np.repeat(v, K, axis=0)  # row n*K + k is beam k of image n
        A = np.repeat(A, K, axis=0) if A is not None else None
        step = partial(self._step_logp, A=A)
        hyps, _ = decoding.beam_search(step, self.initial_state(v), N, K, self.bos_id, self.eos_id,
                                       max_len, length_penalty)
        return hyps

    def buffers(self):
        return {"norm_mean": self.norm_mean, "norm_var": self.norm_var}

    def load_buffers(self, arrays):
        for k in ("norm_mean", "norm_var"):
            if k in arrays:
                setattr(self, k, np.asarray(arrays[k], dtype=self.dtype).copy())

    def config_dict(self):
        return {"model": self.cfg.to_dict(), "bos_id": self.bos_id, "eos_id": self.eos_id,
                "pad_id": self.pad_id, "unk_id": self.unk_id}
