"""Sentence classification (many-to-one) as a task: the training loop's views of a `SentenceClassifier`
(`ClassifyTask`) and of its language-model pretraining (`PretrainTask`), texts to padded batches
(`Encoded`, `fixed_batches`), probabilities in the input order (`predict_proba`), and the run directory
of `rnnkit train classify`.

A run directory holds everything prediction needs: the checkpoint's config carries the model
configuration, the tokenizer settings, the vocabulary and the label names.

Dimensions: T time steps, N batch size, C classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.data.subwords import SurfaceTable
from rnnkit.data.vocab import Vocab
from rnnkit.data.words import Tokenizer, pad_batch
from rnnkit.errors import UserError
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.classifier import ClassifierConfig, EncoderLM, SentenceClassifier
from rnnkit.train.checkpoint import load_checkpoint

TASK = "classify"


# --- data to batches -----------------------------------------------------------------------------


class Encoded:
    """Texts as word-id arrays (`ids`), and with a `SurfaceTable` also as surface-id arrays (`surf`,
    each word's own entry, for its n-grams). `batch(sel)` -> (idx, mask, bag or None)."""

    def __init__(self, texts, tokenizer: Tokenizer, vocab: Vocab, max_len=None, table=None):
        self.ids, self.truncated, self.table = [], 0, table
        self.surf = None if table is None else []
        for text in texts:
            toks = tokenizer(text) or [vocab.itos[vocab.unk_id]]  # a text with no tokens: one <unk>
            if max_len and len(toks) > max_len:
                toks = toks[:max_len]
                self.truncated += 1
            self.ids.append(np.asarray(vocab.encode(toks), dtype=np.int64))
            if table is not None:
                self.surf.append(np.asarray(table.ids(toks), dtype=np.int64))

    def __len__(self):
        return len(self.ids)

    def batch(self, sel):
        idx, mask = pad_batch([self.ids[i] for i in sel])
        if self.table is None:
            return idx, mask, None
        return idx, mask, self.table.bag(pad_batch([self.surf[i] for i in sel])[0])


def fixed_batches(enc: Encoded, y=None, batch_size=256):
    """Batches for evaluation / prediction, sorted by length: [(order indices, idx, mask, bag, y)]."""
    order = np.argsort([len(s) for s in enc.ids], kind="stable")
    out = []
    for i in range(0, len(order), batch_size):
        sel = order[i:i + batch_size]
        out.append((sel, *enc.batch(sel), None if y is None else y[sel]))
    return out


def predict_proba(model, batches, n):
    """(n, C) probabilities in the original order."""
    probs = np.zeros((n, model.cfg.num_classes), dtype=np.float64)
    for sel, idx, mask, bag, _ in batches:
        probs[sel] = model.predict_proba(idx, mask, bag)
    return probs


def surface_table(mcfg: ClassifierConfig):
    """A fresh table of words -> n-gram buckets for a model with subwords, else None."""
    hasher = mcfg.subwords
    return SurfaceTable(hasher) if hasher is not None else None


# --- the tasks for the training loop -------------------------------------------------------------


class ClassifyTask:
    """What `rnnkit.train.loop.fit` trains: one module, cross-entropy on (idx, mask, y) batches."""

    task = TASK
    batch_flag = "--batch-size"  # the flag a data-parallel split names

    def __init__(self, model: SentenceClassifier, dev_batches, n_dev):
        self.model = model
        self.modules = {"model": model}
        self.dev_batches, self.n_dev = dev_batches, n_dev

    def train_step(self, batch):
        idx, mask, bag, y = batch
        loss, _ = self.model.loss(idx, mask, y, bag)
        return {"loss": loss, "tokens": int(mask.sum()), "count": len(y)}  # a mean over sentences

    def evaluate(self):
        total_loss, correct = 0.0, 0
        for _, idx, mask, bag, y in self.dev_batches:
            logits = self.model.forward(idx, mask, bag)
            loss, _ = softmax_cross_entropy(logits, y)
            total_loss += loss * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())
        return {"val_loss": total_loss / self.n_dev, "val_acc": correct / self.n_dev}

    def extra_state(self):
        return {}, {}

    def load_extra_state(self, arrays, obj):
        pass


class PretrainTask:
    """What `fit` trains before the labels: `EncoderLM` on the training text, scored on the dev text."""

    task = TASK + "-pretrain"
    batch_flag = "--batch-size"  # the flag a data-parallel split names

    def __init__(self, lm: EncoderLM, dev_batches):
        self.lm = lm
        self.modules = {"model": lm}
        self.dev_batches = dev_batches

    def train_step(self, batch):
        idx, mask = batch
        loss, count = self.lm.loss(idx, mask)
        return {"loss": loss, "tokens": count}

    def evaluate(self):
        total, count = 0.0, 0
        for idx, mask in self.dev_batches:
            loss, n = self.lm.loss(idx, mask, backward=False)
            total, count = total + loss * n, count + n
        return {"val_loss": total / max(count, 1)}

    def extra_state(self):
        return {}, {}

    def load_extra_state(self, arrays, obj):
        pass


# --- loading a run -------------------------------------------------------------------------------


def load_run(run_dir, which=None):
    """(model in eval mode, tokenizer, vocab, n-gram table or None, labels, display names, config)
    from a run directory."""
    run_dir = Path(run_dir)
    if which is None:
        which = "best" if (run_dir / "best.json").exists() else "last"
    arrays, meta, _ = load_checkpoint(run_dir, which, TASK)
    cfg = meta.get("config") or {}
    try:
        mcfg = ClassifierConfig.from_dict(cfg["model"])
        vocab = Vocab.from_dict(cfg["vocab"], f"{run_dir}/{which}.json")
        tokenizer = Tokenizer.from_dict(cfg["tokenizer"])
        labels = [str(x) for x in cfg["labels"]]
        model = SentenceClassifier(mcfg)
        table = surface_table(mcfg)
        pre = "model."
        model.load_state_dict({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir}/{which}.json: not a usable classifier checkpoint "
                        f"({e.__class__.__name__}: {e})") from None
    if len(labels) != mcfg.num_classes or len(vocab) != mcfg.vocab_size:
        raise UserError(f"{run_dir}/{which}.json: labels or vocabulary do not match the model")
    names = cfg.get("label_names") or {}
    display = [names.get(lab, lab) for lab in labels]
    return model.eval(), tokenizer, vocab, table, labels, display, cfg
