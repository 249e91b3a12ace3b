"""The character-level language model as a task: the training loop's view of it (`LMTask`), its corpus
and the run directory of `rnnkit train lm`.

A run directory holds the checkpoints (`last`, `best`), `metrics.jsonl` and `loss.png`; the checkpoint
meta's "config" holds everything needed to rebuild the model and its corpus: {"model": LMConfig,
"vocab": CharVocab JSON, "corpus": where the text came from, "data_args": the data settings, ...}.
"""

from __future__ import annotations

from pathlib import Path

from rnnkit.data.text import CharVocab, decode_bytes, read_bytes, stdlib_corpus, text_sha256
from rnnkit.errors import UserError
from rnnkit.functional import softmax_cross_entropy
from rnnkit.models.lm import CharLM, LMConfig, LMState, evaluate_stream
from rnnkit.train.checkpoint import load_checkpoint
from rnnkit.train.distributed import gather_rows

# A run's data settings where its checkpoint lacks one (also the defaults of the flags that set them).
DATA_DEFAULTS = {"data": None, "encoding": "utf-8", "bytes": False, "val_frac": 0.1, "batch": 32,
                 "seq_len": 64}


class LMTask:
    """The language model as a `rnnkit.train.loop` task: truncated BPTT over `StreamBatches`.

    The hidden state at the end of each chunk is carried into the next (values only) and reset to zeros
    at each epoch's start; it is part of the checkpoint (`extra_state`), so a resumed run continues the
    same streams. Under data-parallel training (`shard`) each rank carries its own streams' state
    and the checkpoint holds every stream's, by global stream, so the run resumes on any number of
    ranks.
    """

    task = "lm"

    def __init__(self, model: CharLM, val_ids=None, eval_chars: int | None = None, eval_batch: int = 64):
        self.model = model
        self.modules = {"model": model}
        self.val_ids = val_ids
        self.eval_chars = eval_chars
        self.eval_batch = eval_batch
        self.state: LMState | None = None
        self.comm, self.rows = None, None  # data-parallel: the communicator, the source's rows

    def shard(self, comm, source):
        """Train on the streams source.window = (lo, hi, N) of the rank `comm.rank`."""
        self.comm, self.rows = comm, source

    def train_step(self, batch):
        if batch.reset or self.state is None or self.state.batch_size != batch.x.shape[1]:
            self.state = self.model.init_state(batch.x.shape[1])
        logits, self.state = self.model.forward(batch.x, self.state)
        loss, dlogits = softmax_cross_entropy(logits, batch.y)
        self.model.backward(dlogits)
        return {"loss": loss, "tokens": int(batch.x.size)}

    def evaluate(self):
        if self.val_ids is None or len(self.val_ids) < 2:
            return {}
        ids = self.val_ids if not self.eval_chars else self.val_ids[: self.eval_chars + 1]
        return evaluate_stream(self.model, ids, batch=self.eval_batch)

    def extra_state(self):
        if self.state is None:
            return {}, {"carried_state": False}
        parts = self.state.to_dict()
        if self.comm is not None:  # each part (L, N, ...): every rank's streams in their places
            lo, _, n = self.rows.window
            parts = {k: gather_rows(self.comm, v, lo, n, axis=1) for k, v in parts.items()}
        return {f"state.{k}": v for k, v in parts.items()}, {"carried_state": True}

    def load_extra_state(self, arrays, obj):
        if obj.get("carried_state"):
            lo, hi, _ = self.rows.window if self.comm is not None else (0, None, None)
            self.state = LMState.from_dict({k[6:]: v[:, lo:hi].copy() for k, v in arrays.items()
                                            if k.startswith("state.")})
        else:
            self.state = None


# --- corpus ----------------------------------------------------------------------------------------


def load_corpus(data, encoding, as_bytes):
    """(text, description dict): a str, or bytes with `as_bytes` (raw file bytes, no decoding).
    The default corpus is the Python standard library."""
    if data is None:
        text, info = stdlib_corpus()
        return (text.encode("utf-8") if as_bytes else text), info
    raw = read_bytes(data)
    if as_bytes:
        if not raw:
            raise UserError(f"{data}: the file is empty")
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise UserError(f"{data}: looks like a binary file (NUL byte at byte {nul}); "
                            f"expected a text file")
        text = raw
    else:
        text = decode_bytes(raw, str(data), encoding)
    info = {"source": "file", "path": str(Path(data).resolve()), "encoding": encoding, "chars": len(text),
            "sha256": text_sha256(text)}
    return text, info


def run_data_args(meta):
    """The data settings of a run from its checkpoint meta, each missing one at its default."""
    return {**DATA_DEFAULTS, **((meta.get("config") or {}).get("data_args") or {})}


# --- loading a run -----------------------------------------------------------------------------------


def load_run(run_dir, which=None):
    """(model, vocab, meta, name) of a language-model run; `which` None picks best, else last."""
    run_dir = Path(run_dir)
    if which is None:
        which = "best" if (run_dir / "best.json").exists() else "last"
    arrays, meta, _ = load_checkpoint(run_dir, which, "lm")
    cfg = meta.get("config")
    where = f"{run_dir}/{which}.json"
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise UserError(f"{where}: not a language-model checkpoint (config missing)")
    vocab = CharVocab.from_json(cfg.get("vocab"), where)
    try:
        lm_cfg = LMConfig.from_dict(cfg["model"])
        if lm_cfg.vocab_size != len(vocab):
            raise ValueError("vocabulary size differs from the model's")
        model = CharLM(lm_cfg)
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{where}: checkpoint does not describe a valid model ({e})") from None
    model.eval()
    return model, vocab, meta, which
