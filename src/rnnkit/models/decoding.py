"""Decoding one token at a time, for any model that can take a step: greedy decoding and batched beam
search. The translator (`Seq2Seq`) and the captioner (`Captioner`) both decode through here.

Dimensions, declared once for this module:
    N  items decoded together (sentences, images)    K  beam width    V  vocabulary
    B  rows one step reads: N for greedy, N*K for beam search (row n*K + k is hypothesis k of item n)

A step is a callable
    step(tokens (B,), state) -> (logp (B, V), new state, extra)
logp: log-probabilities of the next token after each row's `tokens`; extra: something per row to keep
with the tokens chosen (attention weights, (B, ...)), or None. The state is opaque here: beam search only
moves its rows, through `reorder(state, rows)` (rows (B,): the row each new row is copied from).

Beam search keeps the K best hypotheses of each item by total log-probability. A hypothesis that has
emitted <eos> stays in its beam with its score frozen (it may only continue with <eos>, at no cost). At
the end each item's choice maximises score / length^length_penalty, the length counting the <eos>
(0: the plain log-probability).
"""

from __future__ import annotations

import numpy as np


def select_rows(state, rows):
    """`reorder` for rnnkit's recurrent state: an array (L, B, H), or a tuple of them (the LSTM's h, c),
    rows taken along axis 1."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def greedy(step, state, batch, bos, eos, max_len, keep_extra=False):
    """The most probable token at every step, from <bos> until every row has emitted <eos>, or max_len
    steps. state: the step's initial state for the `batch` (N) rows.

    Returns (hyps, extras): N token-id lists without <bos> and <eos>; with keep_extra (and a step that
    gives extras), for each item its steps' extras stacked, (len + 1, ...) with the <eos> step (len when
    the sequence was cut at max_len); else an empty list."""
    tok = np.full(batch, bos, dtype=np.int64)
    done = np.zeros(batch, bool)
    steps, extras = [], []
    for _ in range(max_len):
        logp, state, extra = step(tok, state)
        tok = logp.argmax(axis=-1)
        tok[done] = eos  # a finished row only repeats <eos>, which the trimming drops
        steps.append(tok)
        extras.append(extra)
        done |= tok == eos
        if done.all():
            break
    seq = np.stack(steps) if steps else np.zeros((0, batch), dtype=np.int64)  # (steps, N)
    hyps = [_until_eos(seq[:, n], eos) for n in range(batch)]
    if not (keep_extra and extras and extras[0] is not None):
        return hyps, []
    return hyps, [np.stack([e[n] for e in extras[:len(h) + 1]]) for n, h in enumerate(hyps)]


def beam_search(step, state, batch, beam, bos, eos, max_len, length_penalty=0.0, reorder=select_rows,
                keep_extra=False):
    """Beam search of width K = `beam` for `batch` (N) items at once, one step call of N*K rows per step.

    state: the initial state with each item's row repeated K times side by side (row n*K + k), as is
    anything the step reads per row (encoder outputs, image features): the caller repeats them, since
    only it knows what they are. Returns like `greedy`."""
    N, K = batch, int(beam)
    if K < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    scores = np.full((N, K), -np.inf)
    scores[:, 0] = 0.0  # the K copies start identical: expand only the first, or it would fill the beam
    done = np.zeros((N, K), bool)
    lengths = np.zeros((N, K), dtype=np.int64)
    tok = np.full(N * K, bos, dtype=np.int64)
    first = np.arange(N)[:, None] * K  # (N, 1) each item's first row
    parents, tokens, extras = [], [], []  # per step: source row (N*K,), token (N*K,), extra of the row
    for _ in range(max_len):
        logp, state, extra = step(tok, state)
        V = logp.shape[-1]
        cand = scores[:, :, None] + logp.reshape(N, K, V)  # float64 whatever the step's dtype
        cand[done] = -np.inf
        cand[done, eos] = scores[done]  # a finished hypothesis continues with <eos> at no cost
        cand = cand.reshape(N, K * V)
        top = np.argpartition(-cand, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(cand, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)  # (N, K) best first
        scores = np.take_along_axis(cand, top, axis=1)
        src = top // V  # (N, K) the hypothesis each new one extends
        tok = (top % V).reshape(-1)
        rows = (first + src).reshape(-1)
        prev_done = np.take_along_axis(done, src, axis=1)
        lengths = np.take_along_axis(lengths, src, axis=1) + ~prev_done  # a live one grows by a token
        done = prev_done | (tok.reshape(N, K) == eos)
        parents.append(rows)
        tokens.append(tok)
        extras.append(None if extra is None else extra[rows])
        state = reorder(state, rows)
        if done.all():
            break
    final = scores / np.maximum(lengths, 1) ** length_penalty
    final[~np.isfinite(scores)] = -np.inf  # argmax would pick a NaN (from NaN logits) first
    best = (first[:, 0] + final.argmax(axis=1)).tolist()  # the chosen row of each item
    seqs, kept = [], []
    for r in best:
        ids, ext = [], []
        for t in reversed(range(len(tokens))):  # follow the parents back from the last step
            ids.append(tokens[t][r])
            ext.append(extras[t][r] if extras[t] is not None else None)
            r = parents[t][r]
        seqs.append(np.array(ids[::-1], dtype=np.int64))
        kept.append(ext[::-1])
    hyps = [_until_eos(s, eos) for s in seqs]
    if not (keep_extra and extras and extras[0] is not None):
        return hyps, []
    return hyps, [np.stack(e[:len(h) + 1]) for h, e in zip(hyps, kept)]


def _until_eos(ids, eos):
    """The token ids (1-D) before the first <eos>, as a list of ints."""
    ends = np.flatnonzero(ids == eos)
    return ids[:int(ends[0]) if ends.size else ids.shape[0]].tolist()
