"""Sentence classification (many-to-one) on the command line.

    rnnkit train classify --train TSV --dev TSV [--cell lstm] [--bidirectional] [--pooling max] ...
    rnnkit predict DIR [FILE|-]            a label and its probability for each input line
    rnnkit eval DIR --data TSV [--json]    (dispatched here by `rnnkit.cli.evaluate`): accuracy,
                                           macro-F1, per-class precision and recall, confusion matrix

A run directory holds everything prediction needs: the checkpoint's config carries the model
configuration, the tokenizer settings, the vocabulary and the label names. The task itself (training
tasks, batches, loading a run directory) is `rnnkit.tasks.classify`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from rnnkit.cli._cells import add_cell_args, cell_options
from rnnkit.cli._training import add_optimization_args, add_run_args, check, check_run_flags, \
    resolve, train_config
from rnnkit.data.tsv import read_labelled_tsv, read_text_lines
from rnnkit.data.vocab import Vocab
from rnnkit.data.words import MODES, Tokenizer, pad_batch
from rnnkit.errors import UserError
from rnnkit import cells
from rnnkit.models.classifier import POOLINGS, ClassifierConfig, EncoderLM, SentenceClassifier
from rnnkit.report.classification import classification_report, format_report
from rnnkit.tasks.classify import TASK, ClassifyTask, Encoded, PretrainTask, fixed_batches, load_run, \
    predict_proba, surface_table
from rnnkit.train.batches import LengthBatches
from rnnkit.train.checkpoint import check_run_dir, load_checkpoint, prepare_run_dir

# Defaults of the training flags; a resumed run keeps its own (`rnnkit.cli._training.resolve`). steps
# None: 5 epochs unless --epochs or --minutes; checkpoint_every None: --eval-every's.
TRAIN_DEFAULTS = {"steps": None, "minutes": None, "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0,
                  "clip": 5.0, "schedule": "constant", "warmup": 0, "eval_every": 200,
                  "checkpoint_every": None, "patience": 0, "ema": 0.0}


# --- argument parsing ----------------------------------------------------------------------------


def register(sub, train_sub):
    p = train_sub.add_parser("classify", help="sentence classification (e.g. sentiment) from a TSV file",
                             description="Train a many-to-one recurrent classifier on `text<TAB>label` "
                                         "files, keeping the checkpoint with the best dev accuracy.")
    d = p.add_argument_group("data")
    d.add_argument("--train", required=True, help="training TSV with header text<TAB>label")
    d.add_argument("--dev", required=True, help="dev TSV (same format): early stopping, best checkpoint")
    d.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (and count) malformed rows instead of stopping at the first")
    d.add_argument("--encoding", default="utf-8", help="text encoding of the TSV files")
    d.add_argument("--tokenizer", default="word", choices=MODES, help="word rules or whitespace split")
    d.add_argument("--no-lowercase", action="store_true", help="keep case (default: lower-case)")
    d.add_argument("--min-freq", type=int, default=1, help="keep words seen at least this often")
    d.add_argument("--max-vocab", type=int, default=None, help="largest vocabulary (incl. <pad>, <unk>)")
    d.add_argument("--max-len", type=int, default=100,
                   help="truncate training sentences to this many tokens (the count is reported)")
    d.add_argument("--label-names", default=None,
                   help="display names, e.g. '0=negative,1=positive' (labels stay as in the file)")
    m = p.add_argument_group("model")
    m.add_argument("--cell", default="lstm", choices=cells.names(), help=cells.describe())
    m.add_argument("--bidirectional", action="store_true")
    m.add_argument("--embed-dim", type=int, default=128)
    m.add_argument("--hidden", type=int, default=128, help="hidden size per direction")
    m.add_argument("--layers", type=int, default=1)
    m.add_argument("--pooling", default="max", choices=POOLINGS, help="over each sentence's valid steps")
    m.add_argument("--embed-dropout", type=float, default=0.5)
    m.add_argument("--word-dropout", type=float, default=0.1,
                   help="training only: probability of replacing a word by <unk>")
    m.add_argument("--dropout", type=float, default=0.5, help="before the output layer")
    m.add_argument("--layer-dropout", type=float, default=0.0, help="between stacked layers")
    m.add_argument("--embed-init-std", type=float, default=0.1,
                   help="initial embeddings N(0, std^2); 0.1 beat PyTorch's 1.0 on SST-2 (docs/RESULTS.md)")
    m.add_argument("--subwords", type=int, default=50_000, metavar="BUCKETS",
                   help="add the mean of each word's character n-gram vectors (fastText-style, hashed "
                        "into this many buckets) to its embedding, so unseen words keep their pieces "
                        "(+1.5 points on SST-2, docs/RESULTS.md); 0: off")
    m.add_argument("--subword-n", default="3-5", metavar="MIN-MAX",
                   help="n-gram lengths, counting the word markers < and >")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--epochs", type=float, default=None, help="stop after this many passes (sets --steps)")
    add_optimization_args(t, TRAIN_DEFAULTS, {"steps": "5 epochs", "checkpoint_every": "--eval-every"})
    t.add_argument("--pretrain-epochs", type=float, default=0.0,
                   help="first train the embedding and recurrent layer as a language model on the "
                        "training text for this many epochs (Dai and Le 2015); 0: off")
    t.add_argument("--pretrain-dropout", type=float, default=0.1,
                   help="dropout on the embeddings and features while pretraining")
    t.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    add_run_args(r, "runs/classify")
    r.add_argument("--quiet", dest="no_progress", action="store_true", help="the same as --no-progress")
    add_cell_args(p.add_argument_group("the cell's options (a resumed run keeps its own)"),
                  shown={"forget_bias": "1.0"})
    p.set_defaults(func=train)

    q = sub.add_parser("predict", help="classify each line of a file (or stdin) with a trained run")
    q.add_argument("dir", help="run directory written by `rnnkit train classify`")
    q.add_argument("file", nargs="?", default="-", help="text file, one input per line; '-': stdin")
    q.add_argument("--checkpoint", default=None, choices=("best", "last"),
                   help="which checkpoint (default: best if present, else last)")
    q.add_argument("--skip-bad-rows", action="store_true", help="skip (and count) blank lines")
    q.add_argument("--encoding", default="utf-8")
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--json", action="store_true", help="one JSON object per line, all probabilities")
    q.set_defaults(func=predict)


def _note(msg):
    print(f"rnnkit: {msg}", file=sys.stderr)


def _check_positive(args, *names):
    for name in names:
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UserError(f"--{name.replace('_', '-')}: expected a positive number, got {v}")


def _parse_label_names(spec, labels):
    if spec is None:
        return None
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise UserError(f"--label-names: expected LABEL=NAME pairs separated by commas, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in labels:
            raise UserError(f"--label-names: {k!r} is not a label of the training data "
                            f"({', '.join(labels)})")
        out[k] = v
    return out


def sort_labels(labels):
    """Class order: numerically when every label is an integer ("0" < "2" < "10"), else by string."""
    labels = sorted(set(labels))
    try:
        return sorted(labels, key=int)
    except ValueError:
        return labels


def _parse_subword_n(spec):
    try:
        lo, hi = (int(v) for v in spec.split("-", 1))
    except ValueError:
        raise UserError(f"--subword-n: expected MIN-MAX such as 3-5, got {spec!r}") from None
    if not 1 <= lo <= hi:
        raise UserError(f"--subword-n: expected 1 <= MIN <= MAX, got {spec!r}")
    return lo, hi


# --- pretraining ---------------------------------------------------------------------------------


def pretrain(model, x_tr, x_dev, args, run_dir, train_cfg):
    """Language-model pretraining of `model`'s embedding and recurrent layer (in place) on the distinct
    training texts of two or more tokens, with the classifier's optimizer settings (`train_cfg`) and a
    dev-loss evaluation at the end; the run goes to run_dir. Returns fit's summary."""
    from dataclasses import replace

    from rnnkit.train.loop import fit

    try:
        lm = EncoderLM(model, dropout=args.pretrain_dropout)
    except ValueError as e:
        raise UserError(f"--pretrain-epochs: {e}") from None
    texts = sorted({tuple(s) for s in x_tr if len(s) >= 2})
    if not texts:
        raise UserError("--pretrain-epochs: no training text has two or more tokens to learn from")
    seqs = [list(t) for t in texts]
    source = LengthBatches([len(s) for s in seqs], args.batch_size, seed=args.seed + 2,
                           collate=lambda sel: pad_batch([seqs[i] for i in sel]), pool=50)
    steps = max(1, int(round(args.pretrain_epochs * len(source.epoch_batches()))))
    dev = [pad_batch(x_dev[i:i + 256]) for i in range(0, len(x_dev), 256)]
    cfg = replace(train_cfg, steps=steps, minutes=None, eval_every=steps, checkpoint_every=steps,
                  monitor="val_loss", monitor_mode="min", patience=0, ema=0.0)
    summary = fit(PretrainTask(lm, dev), source, cfg, run_dir, {"pretrain_of": TASK},
                  progress=not args.no_progress)
    summary["texts"] = len(seqs)
    return summary


# --- rnnkit train classify -----------------------------------------------------------------------


def _read(path, args, known=None):
    data = read_labelled_tsv(path, skip_bad_rows=args.skip_bad_rows, known_labels=known,
                             encoding=args.encoding)
    for n in data.notes:
        _note(n)
    if data.skipped:
        _note(data.skipped_summary())
    return data


def train(args):
    from rnnkit.train.loop import fit

    check_run_flags(args)
    _check_positive(args, "epochs", "batch_size", "embed_dim", "hidden", "layers", "min_freq")
    if not args.pretrain_epochs >= 0:
        raise UserError(f"--pretrain-epochs: expected a number >= 0 (0: off), got {args.pretrain_epochs}")
    if not 0 <= args.pretrain_dropout < 1:
        raise UserError(f"--pretrain-dropout: expected a number in [0, 1), got {args.pretrain_dropout}")
    if args.max_len is not None and args.max_len < 1:
        raise UserError(f"--max-len: expected a positive integer, got {args.max_len}")
    out = Path(args.out)
    saved_train = {}
    if args.resume:
        # The vocabulary and labels come from the run, so the data must give the same ones.
        prepare_run_dir(out, resume=True)
        _, meta, _ = load_checkpoint(out, "last", TASK)
        saved_train = meta.get("train") or {}
        saved_model = (meta.get("config") or {}).get("model") or {}
        options = cell_options(args, saved_model.get("cell", args.cell),
                               saved=saved_model.get("cell_options", {}))
    else:
        options = cell_options(args, args.cell)
    train_args = resolve(args, TRAIN_DEFAULTS, saved_train)
    check(train_args)
    if not args.resume:
        check_run_dir(out, force=args.force)

    t0 = time.perf_counter()
    tr = _read(args.train, args)
    labels = sort_labels(tr.labels)
    if len(labels) < 2:
        raise UserError(f"{tr.path}: only one label ({labels[0]!r}); a classifier needs two or more")
    dev = _read(args.dev, args, known=labels)
    tokenizer = Tokenizer(lowercase=not args.no_lowercase, mode=args.tokenizer)
    if args.max_vocab is not None and args.max_vocab < 2:
        raise UserError(f"--max-vocab: expected at least 2 (<pad> and <unk>), got {args.max_vocab}")
    vocab = Vocab.build((tokenizer(t) for t in tr.texts), min_freq=args.min_freq, max_size=args.max_vocab)
    if args.resume and (meta["config"].get("vocab") != vocab.to_dict()
                        or meta["config"].get("labels") != labels):
        raise UserError(f"--resume: {args.train} gives another vocabulary or label set than the run in "
                        f"{out} was trained with")
    label_id = {lab: k for k, lab in enumerate(labels)}
    subword_n = _parse_subword_n(args.subword_n)
    try:
        mcfg = ClassifierConfig(
            vocab_size=len(vocab), num_classes=len(labels), embed_dim=args.embed_dim, hidden=args.hidden,
            cell=args.cell, layers=args.layers, bidirectional=args.bidirectional, pooling=args.pooling,
            embed_dropout=args.embed_dropout, word_dropout=args.word_dropout, dropout=args.dropout,
            layer_dropout=args.layer_dropout, embed_init_std=args.embed_init_std,
            subword_buckets=args.subwords, subword_min=subword_n[0], subword_max=subword_n[1],
            seed=args.seed, cell_options=options).validate()
    except ValueError as e:
        raise UserError(f"model configuration: {e}") from None
    table = surface_table(mcfg)  # one table for both files: it only hashes each word's spelling
    x_tr = Encoded(tr.texts, tokenizer, vocab, args.max_len, table)
    if x_tr.truncated:
        _note(f"{tr.path}: {x_tr.truncated} sentences longer than --max-len {args.max_len} tokens "
              f"truncated")
    y_tr = np.array([label_id[lab] for lab in tr.labels], dtype=np.int64)
    x_dev = Encoded(dev.texts, tokenizer, vocab, table=table)
    y_dev = np.array([label_id[lab] for lab in dev.labels], dtype=np.int64)
    dev_unk = vocab.unknown_rate(tokenizer(t) for t in dev.texts)

    model = SentenceClassifier(mcfg)

    def collate(sel):
        return (*x_tr.batch(sel), y_tr[sel])

    source = LengthBatches([len(s) for s in x_tr.ids], args.batch_size, seed=args.seed + 1,
                           collate=collate, pool=50)
    steps_per_epoch = len(source.epoch_batches())
    steps = train_args["steps"]
    if args.epochs is not None:
        steps = max(1, int(round(args.epochs * steps_per_epoch)))
    if steps is None and train_args["minutes"] is None:
        steps = 5 * steps_per_epoch
    cfg = train_config({**train_args, "steps": steps}, args.seed, "val_acc", "max")
    config = {"model": mcfg.to_dict(), "tokenizer": tokenizer.to_dict(), "vocab": vocab.to_dict(),
              "labels": labels, "label_names": _parse_label_names(args.label_names, labels),
              "data": {"train": str(args.train), "dev": str(args.dev), "encoding": args.encoding,
                       "max_len": args.max_len, "batch_size": args.batch_size}}
    task = ClassifyTask(model, fixed_batches(x_dev, y_dev), len(x_dev))
    if not args.resume:
        prepare_run_dir(out, force=args.force)
    pre = None
    if args.pretrain_epochs > 0 and not args.resume:
        pre = pretrain(model, x_tr.ids, x_dev.ids, args, out / "pretrain", cfg)
        if not args.no_progress:
            _note(f"pretrained as a language model on {pre['texts']} texts: {pre['step']} steps, dev "
                  f"loss {pre['last_eval'].get('val_loss', float('nan')):.3f} nats per word")
    if not args.no_progress:
        _note(f"{len(x_tr)} training sentences ({len(tr.skipped)} skipped), {len(x_dev)} dev, "
              f"{len(labels)} classes, vocabulary {len(vocab)} (dev unknown-word rate {dev_unk:.1%}), "
              f"{model.num_parameters():,} parameters, {steps_per_epoch} steps per epoch")
    summary = fit(task, source, cfg, out, config, resume=args.resume, progress=not args.no_progress)
    summary.update({"epochs": summary["step"] / steps_per_epoch, "wall_s": time.perf_counter() - t0,
                    "train_examples": len(x_tr), "train_skipped": len(tr.skipped),
                    "dev_examples": len(x_dev), "dev_skipped": len(dev.skipped), "vocab": len(vocab),
                    "parameters": model.num_parameters()})
    if pre is not None:
        summary["pretrain"] = {k: pre[k] for k in ("step", "last_eval", "elapsed", "texts")}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        best = summary["best"]
        print(f"best dev accuracy {best:.4f} at step {summary['best_step']} "
              f"({summary['best_step'] / steps_per_epoch:.2f} epochs); stopped after {summary['step']} "
              f"steps ({summary['stopped']}); {summary['wall_s']:.0f} s; run in {out}"
              if best is not None else f"no evaluation ran; run in {out}")
    return 0


# --- rnnkit predict ------------------------------------------------------------------------------


def predict(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    model, tokenizer, vocab, table, labels, display, _ = load_run(args.dir, args.checkpoint)
    rows, notes = read_text_lines(args.file, args.encoding)
    for n in notes:
        _note(n)
    name = "<stdin>" if args.file == "-" else args.file
    keep, skipped = [], []
    for line, text in rows:
        if text.strip():
            keep.append((line, text))
        elif args.skip_bad_rows:
            skipped.append(line)
        else:
            raise UserError(f"{name}:{line}: empty line; expected one text per line "
                            f"(--skip-bad-rows skips such lines)")
    if skipped:
        _note(f"{name}: skipped {len(skipped)} empty line{'s' if len(skipped) != 1 else ''} "
              f"(first: line {skipped[0]})")
    if not keep:
        raise UserError(f"{name}: no input lines to classify")
    enc = Encoded([t for _, t in keep], tokenizer, vocab, table=table)
    probs = predict_proba(model, fixed_batches(enc, batch_size=args.batch_size), len(enc))
    pred = probs.argmax(axis=1)
    out = sys.stdout
    for (line, text), k, p in zip(keep, pred, probs):
        if args.json:
            out.write(json.dumps({"line": line, "label": display[k], "probability": float(p[k]),
                                  "probabilities": {display[j]: float(p[j]) for j in range(len(labels))}},
                                 ensure_ascii=False) + "\n")
        else:
            out.write(f"{display[k]}\t{p[k]:.4f}\n")
    return 0


# --- rnnkit eval (task "classify") ---------------------------------------------------------------


def evaluate(args):
    """`rnnkit eval DIR [--data TSV] [--json]`: the classification report on a labelled TSV."""
    model, tokenizer, vocab, table, labels, display, cfg = load_run(args.dir,
                                                                    getattr(args, "checkpoint", None))
    path = args.data or (cfg.get("data") or {}).get("dev")
    if not path:
        raise UserError("--data: give the labelled TSV to evaluate on")
    data = read_labelled_tsv(path, skip_bad_rows=getattr(args, "skip_bad_rows", False),
                             known_labels=labels, encoding=getattr(args, "encoding", "utf-8"))
    for n in data.notes:
        _note(n)
    if data.skipped:
        _note(data.skipped_summary())
    label_id = {lab: k for k, lab in enumerate(labels)}
    enc = Encoded(data.texts, tokenizer, vocab, table=table)
    y = np.array([label_id[lab] for lab in data.labels], dtype=np.int64)
    probs = predict_proba(model, fixed_batches(enc, y), len(enc))
    rep = classification_report(y, probs.argmax(axis=1), display)
    rep["loss"] = float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300))))
    rep["data"] = data.path
    rep["skipped"] = len(data.skipped)
    if args.json:
        print(json.dumps(rep, indent=1, ensure_ascii=False))
    else:
        print(f"{data.path}" + (f" ({len(data.skipped)} bad rows skipped)" if data.skipped else ""))
        print(format_report(rep))
        print(f"loss      {rep['loss']:.4f} nats")
    return 0
