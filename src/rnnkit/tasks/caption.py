"""Image captioning as a task: the training loop's view of a `Captioner` (`CaptionTask`, scored on the
dev split by loss and BLEU-4), caption decoding in batches, and the run directory of
`rnnkit train caption`.

Dimensions: T caption length in tokens, M captions in a batch.

The checkpoint meta's "config" holds {"model": the captioner's config_dict (its CaptionerConfig and
special-token ids), "vocab": the word vocabulary, "images", "captions": where the data came from, ...};
the image vector's running statistics are saved as the task's extra state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError
from rnnkit.metrics.bleu import corpus_bleu
from rnnkit.models.captioner import Captioner, CaptionerConfig
from rnnkit.train.checkpoint import has_checkpoint, load_checkpoint


class CaptionTask:
    """`rnnkit.train.loop.fit`'s view of the captioner: one module, "model"."""

    task = "caption"

    def __init__(self, model, inputs, vocab, dev=None, eval_batch=256):
        """inputs: every image's encoder input (N_img, ...); dev: (image rows (n,), caption ids (T, M),
        caption -> position in the image rows (M,), references (n lists))."""
        self.model, self.inputs, self.vocab, self.dev = model, inputs, vocab, dev
        self.eval_batch = eval_batch
        self.modules = {"model": model}

    def train_step(self, batch):
        img_rows, ids, rows = batch
        loss, ntok = self.model.loss_and_backward(self.inputs[img_rows], ids, rows)
        return {"loss": loss, "tokens": ntok}

    def evaluate(self):
        if self.dev is None:
            return {}
        img_rows, ids, cap_img, refs = self.dev
        total = count = 0.0
        B = 64  # images per pass, each encoded once for all of its captions
        for i in range(0, len(img_rows), B):
            sel = np.nonzero((cap_img >= i) & (cap_img < i + B))[0]
            b = ids[:, sel]
            loss, n = self.model.loss(self.inputs[img_rows[i:i + B]], b[:used_len(b)], cap_img[sel] - i)
            total += loss * n
            count += n
        hyps = decode_batches(self.model, self.inputs[img_rows], beam=1)
        bl = corpus_bleu([self.vocab.decode(h) for h in hyps], refs)
        return {"val_loss": total / max(count, 1), "val_bleu4": bl["bleu4"], "val_bleu1": bl["bleu1"]}

    def extra_state(self):
        return self.model.buffers(), {}

    def load_extra_state(self, arrays, obj):
        self.model.load_buffers(arrays)


def used_len(ids):
    """Rows up to the last non-pad token of a (T, M) id batch (so short batches run fewer steps)."""
    used = np.nonzero((ids != 0).any(axis=1))[0]
    return int(used[-1]) + 1 if len(used) else 1


def decode_batches(model, inputs, beam=1, max_len=20, batch=64, length_penalty=0.0):
    """The caption ids of each image's encoder input, `batch` images at a time (greedy at beam 1)."""
    out = []
    for i in range(0, len(inputs), batch):
        out += model.beam_search(inputs[i:i + batch], beam=beam, max_len=max_len,
                                 length_penalty=length_penalty)
    return out


# --- loading a run -----------------------------------------------------------------------------------


def load_run(run_dir, which=None):
    """(model, vocab, config) of a captioning run; `which` is best/last (default: best if present)."""
    run_dir = Path(run_dir)
    which = which or ("best" if has_checkpoint(run_dir, "best") else "last")
    arrays, meta, _ = load_checkpoint(run_dir, which, "caption")
    config = meta.get("config") or {}
    try:
        mc = config["model"]
        vocab = Vocab.from_dict(config["vocab"], f"{run_dir}/{which}.json")
        model = Captioner(CaptionerConfig.from_dict(mc["model"]), mc["bos_id"], mc["eos_id"],
                          mc["pad_id"], mc["unk_id"])
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        model.load_buffers({k[6:]: v for k, v in arrays.items() if k.startswith("extra/")})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir}/{which}.json: not a captioning checkpoint this version can load "
                        f"({e.__class__.__name__}: {e})") from None
    model.eval()
    return model, vocab, config
