"""Translation (an encoder-decoder with attention) as a task: the training loop's view of a `Seq2Seq`
(`TranslateTask`: teacher forcing with a ratio, scored on the dev split), the run's data split and
batches, decoding token lists in batches, BLEU / chrF / exact match, and the run directory of
`rnnkit train translate`.

The checkpoint meta's "config" holds {"model": Seq2SeqConfig, "src_vocab", "tgt_vocab", "data": the data
settings (`load_split` reads them: a parallel TSV, or the generated date task), "teacher_forcing", ...}.
"""

from __future__ import annotations

import numpy as np

from rnnkit.data.parallel import collate, detokenize, pad_batch, read_parallel, split_by_source
from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError
from rnnkit.models.seq2seq import BOS, Seq2Seq, Seq2SeqConfig
from rnnkit.train.batches import IndexBatches, LengthBatches
from rnnkit.train.checkpoint import has_checkpoint, load_checkpoint

TASK = "translate"
# Beam search ranks finished hypotheses by log p / length**LENGTH_PENALTY. 0.6 was chosen on the dev split
# of docs/RESULTS.md's run 10 (dev BLEU with beam 5: 0 -> 50.56, 0.3 -> 50.89, 0.6 -> 51.12,
# 1.0 -> 50.47, 1.4 -> 49.40); `rnnkit eval DIR --split dev --length-penalty A` repeats the choice.
LENGTH_PENALTY = 0.6
BATCHINGS = ("random", "length")


def dev_batches(items, size=256):
    """Dev pairs in batches of `size`, sorted by length so that the forward passes run over little
    padding (the loss summed over them is that of any order)."""
    items = sorted(items, key=lambda it: (len(it[0]), len(it[1])))
    return [collate(items[i:i + size], BOS) for i in range(0, len(items), size)]


# --- the training task -----------------------------------------------------------------------------


class TranslateTask:
    """What `rnnkit.train.loop.fit` trains: one Seq2Seq, teacher forcing with a ratio."""

    task = TASK
    batch_flag = "--batch-size"  # the flag a data-parallel split names

    def __init__(self, model: Seq2Seq, dev_items, dev_groups, tgt_vocab, teacher_forcing=1.0, seed=0,
                 batch_size=64, max_dev_decode=500, tokenizer="word"):
        self.model = model
        self.modules = {"model": model}
        self.dev_items = dev_items  # encoded (src ids, tgt ids) pairs
        self._dev = None  # their batches, made on first use
        self.dev_groups = dev_groups[:max_dev_decode]  # (src tokens, refs) for exact match / BLEU
        self.tgt_vocab = tgt_vocab
        self.src_vocab = None
        self.ratio = teacher_forcing
        self.smoothing = 0.0  # label smoothing of the training loss (the dev loss stays plain)
        self.rng = np.random.default_rng(seed + 17)
        self.batch_size = batch_size
        self.tokenizer = tokenizer

    def train_step(self, batch):
        m = self.model
        tgt_in = batch["tgt_in"]
        if self.ratio < 1.0:
            tgt_in = m.scheduled_inputs(batch["src"], batch["src_mask"], tgt_in, self.ratio, self.rng)
        # logits only at the valid target positions (the output layer is the costly part)
        loss, dlogits = m.loss(batch["src"], batch["src_mask"], tgt_in, batch["tgt_out"], batch["tgt_mask"],
                               smoothing=self.smoothing)
        m.backward(dlogits)
        return {"loss": loss, "tokens": int(batch["tgt_mask"].sum())}

    def _dev_batches(self):
        if self._dev is None:  # built once
            self._dev = dev_batches(self.dev_items)
        return self._dev

    def evaluate(self):
        tot, count = 0.0, 0
        for b in self._dev_batches():
            n = int(b["tgt_mask"].sum())
            loss, _ = self.model.loss(b["src"], b["src_mask"], b["tgt_in"], b["tgt_out"], b["tgt_mask"])
            tot += loss * n
            count += n
        out = {"val_loss": tot / max(count, 1)}
        if self.dev_groups and self.src_vocab is not None:
            hyps = translate_tokens(self.model, self.src_vocab, self.tgt_vocab,
                                    [s for s, _ in self.dev_groups], beam=1)
            out["val_exact"] = float(np.mean([h in refs for h, (_, refs) in zip(hyps, self.dev_groups)]))
        return out

    def extra_state(self):
        return {}, {"teacher_forcing_rng": self.rng.bit_generator.state}

    def load_extra_state(self, arrays, obj):
        if "teacher_forcing_rng" in obj:
            self.rng.bit_generator.state = obj["teacher_forcing_rng"]


# --- decoding helpers ------------------------------------------------------------------------------


def translate_tokens(model, src_vocab, tgt_vocab, sources, beam=1, max_len=None,
                     length_penalty=LENGTH_PENALTY, batch_size=128, return_attention=False):
    """Token lists -> translated token lists (same order); empty sources give empty translations.
    Batches are formed by source length so that little is padded."""
    out = [[] for _ in sources]
    atts = [None for _ in sources]
    order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        src, mask = pad_batch([src_vocab.encode(sources[i]) for i in idx])
        ml = max_len or 2 * src.shape[0] + 10
        res = model.translate_ids(src, mask, beam=beam, max_len=ml, length_penalty=length_penalty,
                                  return_attention=return_attention)
        hyps, at = res if return_attention else (res, None)
        for j, i in enumerate(idx):
            out[i] = tgt_vocab.decode(hyps[j], strip_specials=True)
            if at:
                atts[i] = at[j]
    return (out, atts) if return_attention else out


def score(hyps, refs_lists, tokenizer="word"):
    """BLEU and chrF (sacrebleu, every reference of each source) and exact match, in percent, on the
    lowercased tokens joined by spaces (characters joined for the date task)."""
    try:
        import sacrebleu
    except ImportError:
        raise UserError("BLEU and chrF need sacrebleu: pip install 'rnnkit[translate]'") from None
    H = [detokenize(h, tokenizer) for h in hyps]
    R = [[detokenize(r, tokenizer) for r in refs] for refs in refs_lists]
    k = max(len(r) for r in R)
    streams = [[r[j] if j < len(r) else None for r in R] for j in range(k)]
    tok = "char" if tokenizer == "char" else "13a"
    return {"bleu": sacrebleu.corpus_bleu(H, streams, tokenize=tok, force=True).score,
            "chrf": sacrebleu.corpus_chrf(H, streams).score,
            "exact": 100.0 * float(np.mean([h in r for h, r in zip(H, R)])),
            "sentences": len(H), "references": sum(len(r) for r in R)}


# --- the run's data and batches --------------------------------------------------------------------


def make_batches(items, batch_size, seed, batching="length"):
    """The training batches of encoded pairs: `random`, or `length` (pairs of similar source, then
    target, length batched together, so that the recurrent loops run over little padding)."""

    def col(idx):
        return collate([items[i] for i in idx], BOS)

    if batching == "length":
        lengths = np.array([(len(s), len(t)) for s, t in items])
        return LengthBatches(lengths, batch_size, seed=seed, collate=col)
    return IndexBatches(len(items), batch_size, seed=seed, collate=col)


def load_split(ds: dict, warn=None):
    """(train pairs, dev pairs, test groups, dev groups) from the run's data settings. warn: called with
    the line that says which rows of a TSV were skipped, if any (default: say nothing)."""
    if ds["kind"] == "dates":
        from rnnkit.data.dates import date_pairs

        train, dev, test = date_pairs(ds["n_train"], ds["n_dev"], ds["n_test"], ds["seed"])
        return train, dev, [(s, [t]) for s, t in test], [(s, [t]) for s, t in dev]
    pairs, rep = read_parallel(ds["path"], ds["reverse"], ds["max_words"], ds["tokenizer"],
                               ds.get("encoding", "utf-8"))
    if rep.skipped and warn is not None:
        warn(rep.summary(ds["path"]))
    sp = split_by_source(pairs, ds["dev_frac"], ds["test_frac"], ds["seed"], ds.get("max_test"),
                         max_dev=5000)
    return sp.train, sp.dev, sp.test, sp.dev_refs


# --- loading a run ---------------------------------------------------------------------------------


def load_run(run_dir, which=None):
    """Rebuild (model, src_vocab, tgt_vocab, config) from a run directory."""
    which = which or ("best" if has_checkpoint(run_dir, "best") else "last")
    arrays, meta, _ = load_checkpoint(run_dir, which, TASK)
    config = meta.get("config") or {}
    try:
        model = Seq2Seq(Seq2SeqConfig(**config["model"]))
        src_vocab = Vocab.from_dict(config["src_vocab"], f"{run_dir}: source vocabulary")
        tgt_vocab = Vocab.from_dict(config["tgt_vocab"], f"{run_dir}: target vocabulary")
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir}/{which}.json: not a usable translation checkpoint ({e})") from None
    model.eval()
    return model, src_vocab, tgt_vocab, config
