"""Encoder-decoder (many-to-many with different lengths), the lecture's translation picture: an encoder
reads the source; a decoder, started from the encoder's final state, writes the target one token at a
time. Optional attention (Luong dot / general, Bahdanau additive) over the encoder's outputs.

Dimensions, declared once for this module:
    S  source steps    T  target steps    N  batch size    D  embedding size    H  hidden size
    K  encoder directions (1 or 2)        E  key size = K*H (H when dot attention sums the directions)
    L  layers (encoder and decoder alike) V  target vocabulary

    src       (S, N)     source token ids; src_mask (S, N) the valid positions (a prefix per column)
    tgt_in    (T, N)     decoder inputs: <bos> y_1 ... y_{T-1} (teacher forcing)
    logits    (T, N, V)  scores of the next token y_1 ... y_T (<eos> last)

Bridge for a bidirectional encoder: the decoder's initial state of layer l is the SUM of the two
directions' final states of encoder layer l (h and, for the LSTM, c alike); its backward copies the
gradient to both directions. No parameters, and the decoder keeps the size H.

With attention (Luong et al. 2015, without input feeding, so the decoder runs over the whole target in
one call during training):
    ctx_t, alpha_t = attention(h_t, keys)          h_t the decoder's state, keys the encoder outputs
    ht_t = tanh([ctx_t; h_t] Wc + bc)              the attentional state (`combine`)
    logits_t = ht_t Wo + bo                         (`out`); without attention, logits_t = h_t Wo + bo
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from rnnkit import cells, kernels
from rnnkit.backend import DEFAULT_DTYPE
from rnnkit.functional import log_softmax, softmax_cross_entropy
from rnnkit.functional.attention import attention_backward, attention_forward, attention_params
from rnnkit.layers import Dropout, Embedding, Linear, Module, make_recurrent
from rnnkit.models import decoding
from rnnkit.models.cell_options import recurrent_options

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # special token ids shared by both vocabularies
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
ATTENTIONS = ("none", "dot", "general", "additive")


@dataclass
class Seq2SeqConfig:
    src_vocab: int  # source vocabulary size (specials included)
    tgt_vocab: int  # target vocabulary size (specials included)
    emb: int = 256  # embedding size D, both sides
    hidden: int = 256  # hidden size H of the encoder (each direction) and the decoder
    cell: str = "lstm"  # any registered cell (rnnkit.cells.names()), both sides
    layers: int = 1  # recurrent layers L, both sides
    bidirectional: bool = True  # bidirectional encoder; the bridge sums the directions
    attention: str = "general"  # none | dot | general | additive
    dropout: float = 0.0  # on the embeddings and the attentional state (and between layers)
    forget_bias: float | None = 1.0  # LSTM forget-gate bias at initialisation
    seed: int = 0
    # the cell's own options (rnnkit.cells.options(cell)) over forget_bias, both sides; empty: the
    # defaults
    cell_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.cell not in cells.names():
            raise ValueError(f"cell must be one of {', '.join(cells.names())}; got {self.cell!r}")


class Attention(Module):
    """Owns the attention parameters; the math is `rnnkit.functional.attention`."""

    def __init__(self, kind, H, E, dtype=DEFAULT_DTYPE, seed=0):
        super().__init__()
        self.kind = kind
        for name, p in attention_params(kind, H, E, rng=np.random.default_rng(seed), dtype=dtype).items():
            self.add_param(name, p)
        self._cache = None

    def forward(self, q, keys, mask):
        ctx, alpha, self._cache = attention_forward(q, keys, mask, self.kind, self.params)
        return ctx, alpha

    def backward(self, dctx):
        dq, dkeys, grads = attention_backward(dctx, self._cache)
        for name, g in grads.items():
            self.grads[name] += g
        return dq, dkeys


class Seq2Seq(Module):
    def __init__(self, cfg: Seq2SeqConfig, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        D, H, s = cfg.emb, cfg.hidden, cfg.seed
        self.K = 2 if cfg.bidirectional else 1
        rec = dict(num_layers=cfg.layers, dropout=cfg.dropout if cfg.layers > 1 else 0.0, dtype=dtype,
                   **recurrent_options(cfg.cell, cfg.cell_options, forget_bias=cfg.forget_bias))
        self.src_emb = Embedding(cfg.src_vocab, D, dtype=dtype, seed=s + 1)
        self.tgt_emb = Embedding(cfg.tgt_vocab, D, dtype=dtype, seed=s + 2)
        self.encoder = make_recurrent(cfg.cell, D, H, bidirectional=cfg.bidirectional, seed=s + 3, **rec)
        self.decoder = make_recurrent(cfg.cell, D, H, seed=s + 4, **rec)
        # dot attention compares h_t with the keys directly, so the two directions are summed to size H
        self.sum_keys = cfg.attention == "dot" and self.K == 2
        self.E = H if self.sum_keys else self.K * H
        if cfg.attention != "none":
            self.attn = Attention(cfg.attention, H, self.E, dtype=dtype, seed=s + 5)
            self.combine = Linear(self.E + H, H, dtype=dtype, seed=s + 6)
        self.out = Linear(H, cfg.tgt_vocab, dtype=dtype, seed=s + 7)
        self.drop_src = Dropout(cfg.dropout, seed=s + 8)
        self.drop_tgt = Dropout(cfg.dropout, seed=s + 9)
        self.drop_out = Dropout(cfg.dropout, seed=s + 10)
        self._cache = None
        self._ht = None

    def config_dict(self):
        return asdict(self.cfg)

    # --- encoder and bridge ------------------------------------------------------------------------

    def encode(self, src, src_mask):
        """src (S, N) -> keys (S, N, E) and the decoder's initial state (L, N, H) (a tuple of such
        arrays for a cell whose state has several parts: the LSTM's h and c)."""
        x = self.drop_src.forward(self.src_emb.forward(src))
        out, final = self.encoder.forward(x, None, src_mask)
        H = self.cfg.hidden
        keys = out[..., :H] + out[..., H:] if self.sum_keys else out
        return keys, self._bridge(final)

    def _bridge(self, final):
        """Sum the directions of each layer: (L*K, N, H) -> (L, N, H)."""
        parts = self.encoder.state_parts(final)
        if self.K == 2:
            parts = tuple(p.reshape(self.cfg.layers, 2, *p.shape[1:]).sum(axis=1) for p in parts)
        return self.decoder.join_state(parts)

    def _bridge_backward(self, dstate):
        """(L, N, H) -> (L*K, N, H): the sum's gradient goes to both directions."""
        parts = self.decoder.state_parts(dstate)
        if self.K == 2:
            parts = tuple(np.repeat(p, 2, axis=0) for p in parts)  # layer-major, then direction
        return self.encoder.join_state(parts)

    # --- decoder head ------------------------------------------------------------------------------

    def _head(self, dec, keys, src_mask, rows=None):
        """Decoder states (T, N, H) -> logits (T, N, V), attention weights (T, N, S) or None.

        rows: flat indices into the T*N positions, or None for all; with rows the output layer runs only
        there and the logits are (len(rows), V): the padded positions of a batch never reach the
        (costly) V-sized layer."""
        alpha = None
        if self.cfg.attention != "none":
            ctx, alpha = self.attn.forward(dec, keys, src_mask)
            ht = np.tanh(self.combine.forward(np.concatenate([ctx, dec], axis=-1)))  # ht = tanh([c; h] Wc)
            self._ht = ht
            top = ht
        else:
            self._ht = None
            top = dec
        if rows is not None:
            top = top.reshape(-1, top.shape[-1])[rows]
        return self.out.forward(self.drop_out.forward(top)), alpha

    def forward(self, src, src_mask, tgt_in, rows=None):
        """Teacher-forced pass: logits (T, N, V) of the tokens that follow each of `tgt_in` (with `rows`,
        flat indices of the positions wanted, (len(rows), V) for those only)."""
        keys, state = self.encode(src, src_mask)
        x = self.drop_tgt.forward(self.tgt_emb.forward(tgt_in))
        dec, _ = self.decoder.forward(x, state)
        logits, _ = self._head(dec, keys, src_mask, rows)
        self._cache = (keys.shape, dec.shape, rows)
        return logits

    def loss(self, src, src_mask, tgt_in, tgt_out, tgt_mask, smoothing=0.0):
        """Mean cross-entropy over the valid target tokens (label-smoothed by `smoothing`), computing
        logits only there; then call `backward(dlogits)` with the returned gradient. Same value and
        gradients as forward over every position + `softmax_cross_entropy(logits, tgt_out, tgt_mask)`
        (tested), less work."""
        rows = np.flatnonzero(tgt_mask.reshape(-1))
        logits = self.forward(src, src_mask, tgt_in, rows)
        return softmax_cross_entropy(logits, tgt_out.reshape(-1)[rows], smoothing=smoothing)

    def backward(self, dlogits):
        """Adds every parameter's gradient; the model's forward read bottom-up."""
        if self._cache is None:
            raise RuntimeError("backward called before forward")
        (S, N, _), dec_shape, rows = self._cache
        H = self.cfg.hidden
        dtop = self.drop_out.backward(self.out.backward(dlogits))
        if rows is not None:  # scatter back to every position; the others get no gradient
            full = np.zeros((dec_shape[0] * dec_shape[1], dtop.shape[-1]), dtype=dtop.dtype)
            full[rows] = dtop
            dtop = full.reshape(dec_shape[0], dec_shape[1], -1)
        dkeys = None
        if self.cfg.attention != "none":
            dpre = dtop * (1 - self._ht * self._ht)  # tanh' = 1 - ht^2
            dcat = self.combine.backward(dpre)
            dctx, ddec = dcat[..., :self.E], dcat[..., self.E:]
            dq, dkeys = self.attn.backward(np.ascontiguousarray(dctx))
            ddec = ddec + dq
        else:
            ddec = dtop
        dx, dstate0 = self.decoder.backward(np.ascontiguousarray(ddec), None)
        self.tgt_emb.backward(self.drop_tgt.backward(dx))
        if dkeys is None:
            dout = np.zeros((S, N, self.K * H), dtype=dtop.dtype)
        elif self.sum_keys:
            dout = np.concatenate([dkeys, dkeys], axis=-1)
        else:
            dout = dkeys
        dxs, _ = self.encoder.backward(np.ascontiguousarray(dout), self._bridge_backward(dstate0))
        self.src_emb.backward(self.drop_src.backward(dxs))
        self._cache = None

    # --- decoding ----------------------------------------------------------------------------------

    def _step(self, tok, state, keys, src_mask):
        """One decoder step for tokens (N,) -> log-probabilities (N, V), new state, alpha (N, S) or None."""
        x = self.tgt_emb.params["W"][tok]  # (N, D)
        dec, state = self.decoder.step(x, state)  # the cell's one-step function, every layer
        logits, alpha = self._head(dec[None], keys, src_mask)
        return log_softmax(logits[0]), state, (alpha[0] if alpha is not None else None)

    def scheduled_inputs(self, src, src_mask, tgt_in, ratio, rng):
        """Decoder inputs for teacher forcing with ratio r: at each step the gold token with probability r,
        else the model's own greedy prediction (treated as a constant: no gradient through the choice)."""
        inputs = tgt_in.copy()
        if ratio >= 1.0:
            return inputs
        training = self.training
        self.eval()
        try:
            keys, state = self.encode(src, src_mask)
            for t in range(tgt_in.shape[0] - 1):
                logp, state, _ = self._step(inputs[t], state, keys, src_mask)
                use_gold = rng.random(tgt_in.shape[1]) < ratio
                inputs[t + 1] = np.where(use_gold, tgt_in[t + 1], logp.argmax(axis=-1))
        finally:
            self.train(training)
        return inputs

    def greedy(self, src, src_mask, max_len, return_attention=False):
        """Greedy decoding of a batch. Returns a list of N token-id lists (no <bos>/<eos>) and, with
        return_attention, a list of (len+1, S) weight arrays (the <eos> step included)."""
        training = self.training
        self.eval()
        try:
            keys, state = self.encode(src, src_mask)
            step = partial(self._step, keys=keys, src_mask=src_mask)
            hyps, atts = decoding.greedy(step, state, src.shape[1], BOS, EOS, max_len,
                                         keep_extra=return_attention)
        finally:
            self.train(training)
        return (hyps, atts) if return_attention else hyps

    def beam_search(self, src, src_mask, beam=5, max_len=50, length_penalty=1.0, return_attention=False):
        """Batched beam search: K = `beam` hypotheses per sentence, all sentences in one decoder call per
        step (`rnnkit.models.decoding.beam_search`). A finished hypothesis (it emitted <eos>) stays in
        its beam with its score frozen. The final choice maximises score / length**length_penalty
        (length counts <eos>; 0 turns normalisation off). Returns like `greedy`."""
        K = int(beam)
        if K < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        training = self.training
        self.eval()
        try:
            keys, state = self.encode(src, src_mask)
            N = src.shape[1]
            rows = np.repeat(np.arange(N), K)  # each sentence's K copies side by side
            mask = src_mask[:, rows] if src_mask is not None else None
            step = partial(self._step, keys=keys[:, rows], src_mask=mask)
            hyps, atts = decoding.beam_search(step, decoding.select_rows(state, rows), N, K, BOS, EOS,
                                              max_len, length_penalty, keep_extra=return_attention)
        finally:
            self.train(training)
        return (hyps, atts) if return_attention else hyps

    def translate_ids(self, src, src_mask, beam=1, max_len=50, length_penalty=1.0, return_attention=False):
        # as in training (`fit`): subnormal attention weights would take the processor's slow path
        with kernels.flush_subnormals():
            if beam <= 1:
                return self.greedy(src, src_mask, max_len, return_attention)
            return self.beam_search(src, src_mask, beam, max_len, length_penalty, return_attention)
