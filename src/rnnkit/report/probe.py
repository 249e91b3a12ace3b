"""What a report runs a trained model over: a `Probe` per run, whatever the task.

Dimensions, declared once for this module:
    T  time steps    N  batch size    D  input size of the recurrent stack    H  hidden size

A probe holds a recurrent stack (`rnnkit.layers.Recurrent`) and
    flow_x     (T, N, D)   a batch of inputs for the gradient flow and the gate statistics
    last_grad  out_last (N, H) -> dL/d out_last (N, H): the gradient the task's loss at the last step sends
               into the stack's top output (the head's backward)
    tokens     T' strings, the sequence shown in the activation viewer, and view_x (T', 1, D) its inputs
    features   name -> (T',) numbers about the sequence (inside quotes, position in line, ...): the units
               whose activation correlates best with one of them are listed as "most telling"

`text_probe` builds one for any model that reads tokens through an `embed` (Embedding), a `rnn`
(Recurrent) and a `head` (Linear) predicting the next token: a recurrent model that can be run over text.
`probe_for_run` picks the builder by the run's task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from rnnkit.errors import UserError


@dataclass
class Probe:
    title: str
    rnn: object  # rnnkit.layers.Recurrent
    flow_x: np.ndarray  # (T, N, D)
    last_grad: Callable
    tokens: list  # strings shown in the viewer
    view_x: np.ndarray  # (T', 1, D)
    features: dict = field(default_factory=dict)  # name -> (T',)
    marks: list | None = None  # optional: tokens to emphasise in the viewer (bool per token)
    notes: list = field(default_factory=list)  # lines shown under the title
    flow_what: str = "loss at the last step"


# --- features of a text ----------------------------------------------------------------------------

OPEN, CLOSE = "([{", ")]}"


def text_features(chars):
    """Per-character indicators of structure a unit may track. Constant features are dropped."""
    T = len(chars)
    f = {name: np.zeros(T) for name in ("inside double quotes", "inside single quotes",
                                        "inside brackets", "bracket depth", "position in line",
                                        "position in word", "space", "uppercase letter",
                                        "newline", "vowel", "digit", "punctuation")}
    dq = sq = False
    depth = col = word = 0
    prev = ""
    for t, ch in enumerate(chars):
        # an indicator holds for the quote or bracket characters themselves too (inclusive span)
        if ch == '"':
            dq = not dq
        if ch == "'" and not (prev.isalpha()):  # an apostrophe inside a word is not a quote
            sq = not sq
        if ch in OPEN:
            depth += 1
        f["inside double quotes"][t] = dq or ch == '"'
        f["inside single quotes"][t] = sq or (ch == "'" and not prev.isalpha())
        f["inside brackets"][t] = depth > 0
        f["bracket depth"][t] = depth
        if ch in CLOSE:
            depth = max(0, depth - 1)
        f["position in line"][t] = col
        col = 0 if ch == "\n" else col + 1
        f["position in word"][t] = word if ch.isalnum() else 0
        word = word + 1 if ch.isalnum() else 0
        f["space"][t] = ch == " "
        f["uppercase letter"][t] = ch.isupper()
        f["newline"][t] = ch == "\n"
        f["vowel"][t] = ch.lower() in "aeiou"
        f["digit"][t] = ch.isdigit()
        f["punctuation"][t] = (not ch.isalnum()) and not ch.isspace()
        prev = ch
    return {k: v for k, v in f.items() if v.std() > 0}


# --- builders ----------------------------------------------------------------------------------------


def text_probe(model, ids, decode, title="language model", flow_len=200, flow_batch=32, view_chars=1000,
               seed=0):
    """A probe for a next-token model with `embed`, `rnn` and `head` over the token ids `ids` (1-D).

    decode: id -> the string shown for the token. The gradient flow uses `flow_batch` windows of
    `flow_len` tokens and the cross-entropy of the prediction after the window's last token.
    """
    ids = np.asarray(ids)
    if ids.size < 3:
        raise UserError(f"{title}: the validation text has {ids.size} tokens; need at least 3 for a report")
    model.eval()
    W_emb = model.embed.params["W"]
    head = model.head.params
    L = int(min(flow_len, ids.size - 1))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, ids.size - L, flow_batch)  # windows with a next token after them
    win = np.stack([ids[s:s + L] for s in starts], axis=1)  # (L, N)
    target = ids[starts + L]

    def last_grad(out_last):
        from rnnkit.functional import softmax_cross_entropy

        logits = out_last @ head["W"] + head["b"]
        _, dlogits = softmax_cross_entropy(logits, target)
        return dlogits @ head["W"].T

    view = ids[:view_chars]
    tokens = [decode(int(i)) for i in view]
    return Probe(title=title, rnn=model.rnn, flow_x=W_emb[win], last_grad=last_grad, tokens=tokens,
                 view_x=W_emb[view][:, None, :], features=text_features(tokens),
                 flow_what=f"cross-entropy of the next token after {L} tokens")


def memory_probe(task, seed=0):
    """A probe for an adding or copy run (`rnnkit.tasks.memory.MemoryTask`)."""
    from rnnkit.data.synthetic import make_batch

    m = task.model
    cfg = task.cfg
    m.eval()
    rng = np.random.default_rng([seed, 4242])
    x, y = make_batch(cfg.task, 64, cfg.length, rng, m.dtype)
    view_x, view_y = make_batch(cfg.task, 1, cfg.length, rng, m.dtype)
    feats = {}
    if cfg.task == "adding":
        vals, marks = view_x[:, 0, 0], view_x[:, 0, 1]
        tokens = [str(min(9, int(v * 10))) for v in vals]  # the value's first decimal
        seen = np.cumsum(marks)
        feats = {"markers seen": seen, "marked sum so far": np.cumsum(vals * marks), "value": vals,
                 "step": np.arange(cfg.length, dtype=float)}
        mark_list = [bool(v) for v in marks]
        notes = [f"Adding problem, T={cfg.length}: each digit is the first decimal of a step's value; "
                 f"the two underlined steps are the marked ones whose sum is the target "
                 f"({float(view_y[0]):.3f})."]
    else:
        seq = view_x[:, 0]
        names = {0: "_", 9: ":"}
        tokens = [names.get(int(s), str(int(s))) for s in seq]
        S = 10
        t = np.arange(seq.size, dtype=float)
        feats = {"recall phase": (t >= cfg.length + S).astype(float), "step": t,
                 "reading symbols": (t < S).astype(float)}
        mark_list = [bool(s == 9) for s in seq]
        notes = [f"Copy task, T={cfg.length}: 10 symbols (1-8), blanks (_), the delimiter (:, "
                 f"underlined), then the model must repeat the symbols."]
    feats = {k: v for k, v in feats.items() if np.std(v) > 0}
    return Probe(title=f"{cfg.cell} on the {cfg.task} task, T={cfg.length}", rnn=m.rnn, flow_x=m.inputs(x),
                 last_grad=lambda out_last: m.last_step_grad(out_last, y), tokens=tokens,
                 view_x=m.inputs(view_x), features=feats, marks=mark_list, notes=notes,
                 flow_what="loss at the last step" + (" (the MSE of the sum)" if cfg.task == "adding"
                                                      else " (cross-entropy of the last symbol)"))


def _lm_probe(run_dir, view_chars):
    """A probe for a character language model run (`rnnkit train lm`) over its validation text."""
    from rnnkit.data.text import split_ids
    from rnnkit.tasks.lm import load_corpus, load_run, run_data_args

    model, vocab, meta, which = load_run(run_dir)
    data_args = run_data_args(meta)
    text, _ = load_corpus(data_args["data"], data_args["encoding"], vocab.mode == "byte")
    ids = vocab.encode(text, data_args["data"] or "the default corpus")
    _, val = split_ids(ids, data_args["val_frac"])
    if len(val) < 3:
        val = ids
    m = model.cfg
    return text_probe(model, val, vocab.decoder(), view_chars=view_chars,
                      title=f"character language model ({m.cell}, {m.layers}x{m.hidden}), "
                            f"{which} checkpoint at step {meta.get('step')}")


def _memory_run_probe(run_dir, view_chars):
    from rnnkit.tasks.memory import load_run

    task, _ = load_run(run_dir)
    return memory_probe(task)


# task -> builder(run_dir, view_chars) -> Probe. A task not listed gets a report of its metrics only.
TASK_PROBES = {"lm": _lm_probe, "adding": _memory_run_probe, "copy": _memory_run_probe}


def probe_for_run(run_dir, task, view_chars=1000):
    """The probe for a run of `task`, or None when there is no checkpoint or no builder for the task."""
    run_dir = Path(run_dir)
    if task not in TASK_PROBES:
        return None
    if not any((run_dir / f"{n}.json").exists() for n in ("best", "last")):
        return None
    return TASK_PROBES[task](run_dir, view_chars)
