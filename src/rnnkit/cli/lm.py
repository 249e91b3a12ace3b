"""`rnnkit train lm`, `rnnkit sample` and the "lm" task of `rnnkit eval`: the character-level language
model from the command line. The task itself (training task, corpus, loading a run directory) is
`rnnkit.tasks.lm`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rnnkit import cells
from rnnkit.data.text import CharVocab, check_encoding, split_ids
from rnnkit.cli._cells import add_cell_args, cell_options
from rnnkit.cli._training import add_optimization_args, add_run_args, check, check_run_flags, \
    explicit, resolve, train_config
from rnnkit.errors import UserError
from rnnkit.layers.recurrent import PRECISIONS
from rnnkit.models.lm import CharLM, LMConfig, evaluate_stream, sample as sample_ids
from rnnkit.tasks.lm import DATA_DEFAULTS, LMTask, load_corpus, load_run, run_data_args
from rnnkit.train.batches import StreamBatches
from rnnkit.train import distributed
from rnnkit.train.checkpoint import check_run_dir, load_checkpoint, prepare_run_dir
from rnnkit.train.loop import fit

# Defaults of the flags (argparse defaults are None, so a resumed run can tell what the user set).
# DATA_DEFAULTS (--data to --seq-len) is rnnkit.tasks.lm's: it also fills the gaps of a saved run.
MODEL_DEFAULTS = {"cell": "lstm", "hidden": 256, "layers": 2, "embed": 64, "dropout": 0.0, "seed": 0}
TRAIN_DEFAULTS = {"steps": 1000, "minutes": None, "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0,
                  "clip": 5.0, "schedule": "constant", "warmup": 0, "eval_every": 200,
                  "checkpoint_every": 200, "patience": 0, "eval_chars": 100_000, "bptt_checkpoint": None,
                  "ema": 0.0, "precision": "32"}


def register(sub, train_sub):
    p = train_sub.add_parser("lm", help="train a character-level language model (truncated BPTT)",
                             description="Train a character-level language model on a text file (by "
                             "default: a few MB of this Python's own standard library).")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="a UTF-8 text file (default: the Python standard library's sources)")
    g.add_argument("--encoding", help="text encoding of --data (default utf-8)")
    g.add_argument("--bytes", action="store_true", default=None,
                   help="model raw bytes (vocabulary of 256) instead of characters")
    g.add_argument("--val-frac", type=float, help="the last fraction of the text for validation (0.1)")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=cells.names(), help=f"recurrent cell (lstm): {cells.describe()}")
    m.add_argument("--hidden", type=int, help="hidden units per layer (256)")
    m.add_argument("--layers", type=int, help="recurrent layers (2)")
    m.add_argument("--embed", type=int, help="character embedding size (64)")
    m.add_argument("--dropout", type=float, help="dropout between layers and before the output (0)")
    m.add_argument("--seed", type=int, help="seed of the weights, dropout and batch order (0)")
    t = p.add_argument_group("training")
    t.add_argument("--seq-len", type=int, help="truncated-BPTT chunk length k (64)")
    t.add_argument("--batch", type=int, help="parallel streams N (32)")
    add_optimization_args(t, TRAIN_DEFAULTS)
    t.add_argument("--eval-chars", type=int,
                   help="validation characters used during training (100000; 0: all); `rnnkit eval` "
                        "always uses all")
    t.add_argument("--bptt-checkpoint", type=_k_or_sqrt, metavar="K",
                   help="recompute BPTT: keep every K-th state (or 'sqrt': every sqrt(seq-len)-th) and "
                        "recompute the rest in backward; same gradients, less memory, more time")
    t.add_argument("--precision", choices=PRECISIONS,
                   help="the recurrent layers' arithmetic (32): bf16-mixed takes bf16 products with "
                        "float32 sums, weights, optimizer and state (PyTorch Lightning's names); "
                        "checkpoints are float32 either way, and a resumed run may change it")
    add_run_args(p.add_argument_group("run"), "runs/lm")
    # last, as in every verb: its own flags keep their names (a cell option of one is --cell-<name>)
    add_cell_args(p.add_argument_group("the cell's options (a resumed run keeps its own)"),
                  shown={"forget_bias": "1.0"})
    p.set_defaults(func=train)

    s = sub.add_parser("sample", help="sample text from a trained language model",
                       description="Print characters from a trained language model as they are generated.")
    s.add_argument("dir", help="run directory of `rnnkit train lm`")
    s.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    s.add_argument("--length", type=int, default=500, help="characters to generate (500)")
    s.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (1.0)")
    s.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    s.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")
    s.add_argument("--checkpoint", choices=["best", "last"], default=None,
                   help="which checkpoint (default: best if there is one, else last)")
    s.set_defaults(func=sample)


def _k_or_sqrt(text):
    if text == "sqrt":
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'sqrt', got {text!r}")
    return k


# --- train -----------------------------------------------------------------------------------------


def _check_positive(opts):
    for k in ("hidden", "layers", "embed", "batch", "seq_len"):
        if k in opts and opts[k] < 1:
            raise UserError(f"--{k.replace('_', '-')}: expected a positive integer, got {opts[k]}")
    if "dropout" in opts and not 0 <= opts["dropout"] < 1:
        raise UserError(f"--dropout: expected a number in [0, 1), got {opts['dropout']}")
    if opts.get("eval_chars") is not None and opts["eval_chars"] < 0:
        raise UserError(f"--eval-chars: expected an integer >= 0, got {opts['eval_chars']}")


def _check_precision(precision, cell):
    if precision != "32" and not hasattr(cells.create(cell), "bf16_mixed"):
        have = [n for n in cells.names() if hasattr(cells.create(n), "bf16_mixed")]
        raise UserError(f"--precision {precision}: the {cell} cell has no bf16 path yet (cells with "
                        f"one: {', '.join(have)})")


def apply_bptt_checkpoint(model, k):
    """Set the layers' recompute-BPTT interval where the layers have such an option."""
    if k is None:
        return
    for attr in ("recompute", "checkpoint_every", "bptt_checkpoint"):
        if hasattr(model.rnn, attr):
            setattr(model.rnn, attr, k)
            return
    raise UserError("--bptt-checkpoint: this version's recurrent layers have no recompute option")


def train(args):
    check_run_flags(args)
    out = Path(args.out)
    model_opts = explicit(args, MODEL_DEFAULTS)
    data_opts = explicit(args, DATA_DEFAULTS)
    train_opts = explicit(args, TRAIN_DEFAULTS)
    _check_positive({**model_opts, **data_opts, **train_opts})
    if args.resume:
        prepare_run_dir(out, resume=True)
        _, meta, _ = load_checkpoint(out, "last", "lm")
        cfg = meta.get("config") or {}
        saved_model, saved_data = cfg.get("model", {}), cfg.get("data_args", {})
        given = [(k, v, saved_model.get(k)) for k, v in model_opts.items()] + \
            [(k, v, saved_data.get(k)) for k, v in data_opts.items() if k != "data"]
        for k, v, saved in given:
            if saved is not None and v != saved:
                raise UserError(f"--{k.replace('_', '-')} {v} differs from the run's {saved!r}; "
                                f"a resumed run keeps its model and data")
        model_args = {k: saved_model.get(k, d) for k, d in MODEL_DEFAULTS.items()}
        model_args["cell_options"] = cell_options(args, model_args["cell"],
                                                  saved=saved_model.get("cell_options", {}))
        data_args = {k: saved_data.get(k, d) for k, d in DATA_DEFAULTS.items()}
        if "data" in data_opts:  # the text may have moved; its checksum is compared below
            data_args["data"] = data_opts["data"]
        saved_train = {**meta.get("train", {}), **cfg.get("train_extra", {})}
        train_args = resolve(args, TRAIN_DEFAULTS, saved_train)
    else:
        model_args = {**MODEL_DEFAULTS, **model_opts}
        model_args["cell_options"] = cell_options(args, model_args["cell"])
        data_args = {**DATA_DEFAULTS, **data_opts}
        train_args = resolve(args, TRAIN_DEFAULTS)
    check(train_args)
    _check_precision(train_args["precision"], model_args["cell"])
    if not args.resume:
        check_run_dir(out, force=args.force)

    check_encoding(data_args["encoding"])
    text, info = load_corpus(data_args["data"], data_args["encoding"], data_args["bytes"])
    if args.resume:
        saved_info = (meta.get("config") or {}).get("corpus", {})
        if saved_info.get("sha256") and saved_info["sha256"] != info["sha256"]:
            raise UserError(f"{info.get('path', 'the default corpus')}: the text differs from the one the "
                            f"run was trained on (sha256 mismatch); cannot resume on other data")
        vocab = CharVocab.from_json(cfg.get("vocab"), f"{out}/last.json")
    else:
        vocab = CharVocab.from_text(text, "byte" if data_args["bytes"] else "char")
    name = data_args["data"] or "the default corpus"
    ids = vocab.encode(text, name)
    train_ids, val_ids = split_ids(ids, data_args["val_frac"])
    N, T = data_args["batch"], data_args["seq_len"]
    distributed.check_rows(N, distributed.world().size)  # before --out is touched
    if len(train_ids) < N * (T + 1):
        raise UserError(f"{name}: {len(train_ids)} training characters is shorter than one chunk of "
                        f"--batch {N} x (--seq-len {T} + 1) = {N * (T + 1)}; use a longer text or "
                        f"smaller --batch / --seq-len")
    lm_cfg = LMConfig(vocab_size=len(vocab), **model_args, precision=train_args["precision"])
    model = CharLM(lm_cfg)
    apply_bptt_checkpoint(model, train_args.get("bptt_checkpoint"))
    source = StreamBatches(train_ids, N, T, seed=lm_cfg.seed)
    eval_chars = train_args["eval_chars"] or None
    task = LMTask(model, val_ids if len(val_ids) >= 2 else None, eval_chars=eval_chars)
    tcfg = train_config(train_args, lm_cfg.seed,
                        monitor="val_loss" if task.val_ids is not None else "none")
    config = {"model": lm_cfg.__dict__, "vocab": vocab.to_json(), "corpus": info,
              "data_args": data_args, "train_extra": {"eval_chars": train_args["eval_chars"],
                                                      "bptt_checkpoint": train_args["bptt_checkpoint"],
                                                      "precision": train_args["precision"]}}
    progress = not args.no_progress
    if progress and distributed.world().rank == 0:
        print(f"rnnkit: {len(ids):,} characters ({len(train_ids):,} train, {len(val_ids):,} validation) "
              f"from {name}; vocabulary {len(vocab)}; {lm_cfg.cell} {lm_cfg.layers}x{lm_cfg.hidden}, "
              f"{model.num_parameters():,} parameters; run dir {out}", file=sys.stderr)
    if not args.resume:
        prepare_run_dir(out, force=args.force)
    summary = fit(task, source, tcfg, out, config, resume=args.resume, progress=progress)
    ev = summary["last_eval"] or {}
    result = {"run_dir": str(out), "step": summary["step"], "stopped": summary["stopped"],
              "val_loss": ev.get("val_loss"), "bits_per_char": ev.get("bits_per_char"),
              "best_val_loss": summary["best"], "best_step": summary["best_step"],
              "tokens_per_s": round(summary["tokens_per_s"], 1), "elapsed_s": round(summary["elapsed"], 1)}
    if args.json:
        print(json.dumps(result))
    else:
        vl = f"val loss {ev['val_loss']:.4f} nats/char ({ev['bits_per_char']:.3f} bits/char)" \
            if ev.get("val_loss") is not None else "no validation text"
        print(f"step {summary['step']}: {vl}; {result['tokens_per_s']:,.0f} chars/s; saved in {out} "
              f"(sample with: rnnkit sample {out})")


# --- sample ----------------------------------------------------------------------------------------


def sample(args):
    if args.length < 0:
        raise UserError(f"--length: expected an integer >= 0, got {args.length}")
    if not args.temperature >= 0:
        raise UserError(f"--temperature: expected a number >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k: expected a positive integer, got {args.top_k}")
    model, vocab, meta, _ = load_run(args.dir, args.checkpoint)
    prime = args.prime
    if prime is None:
        prime = "\n" if "\n" in vocab else vocab.decode([0])
    if prime == "":
        raise UserError("--prime: expected at least one character")
    prime_ids = vocab.encode(prime, "--prime")
    rng = np.random.default_rng(args.seed)
    out = sys.stdout
    emit = vocab.decoder()
    if args.prime is not None:
        out.write(prime)
    for i in sample_ids(model, prime_ids, args.length, args.temperature, args.top_k, rng):
        out.write(emit(i))
        out.flush()
    out.write("\n")
    out.flush()


# --- eval ------------------------------------------------------------------------------------------


def evaluate(args):
    """`rnnkit eval DIR` for a language model: loss in nats and bits per character."""
    model, vocab, meta, which = load_run(args.dir)
    cfg = meta["config"]
    data_args = run_data_args(meta)
    as_bytes = vocab.mode == "byte"
    if getattr(args, "data", None):
        encoding = getattr(args, "encoding", None) or "utf-8"
        check_encoding(encoding)
        text, _ = load_corpus(args.data, encoding, as_bytes)
        ids = vocab.encode(text, args.data)
        what, source = "text", args.data
    else:
        text, info = load_corpus(data_args["data"], data_args["encoding"], as_bytes)
        saved = cfg.get("corpus", {})
        if saved.get("sha256") and saved["sha256"] != info["sha256"]:
            print("rnnkit: warning: the run's corpus has changed since training", file=sys.stderr)
        ids = vocab.encode(text, data_args["data"] or "the default corpus")
        _, ids = split_ids(ids, data_args["val_frac"])
        what, source = "validation", data_args["data"] or "the default corpus"
    if len(ids) < 2:
        raise UserError(f"{source}: fewer than two characters to evaluate on")
    r = evaluate_stream(model, ids)
    result = {"task": "lm", "run_dir": str(args.dir), "checkpoint": which, "step": meta.get("step"),
              "split": what, "data": source, "loss_nats_per_char": r["val_loss"],
              "bits_per_char": r["bits_per_char"], "chars": r["chars"]}
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        print(f"{what} loss {r['val_loss']:.4f} nats/char, {r['bits_per_char']:.4f} bits/char over "
              f"{r['chars']:,} characters ({args.dir}/{which}, step {meta.get('step')})")
    return 0
