"""`rnnkit train translate`, `rnnkit translate DIR [FILE|-]` and `rnnkit eval` for translation runs.

With `--data TSV` the model learns source<TAB>target pairs (`--reverse` swaps the columns: fra.txt is
English<TAB>French, so French -> English needs it); with no `--data` it learns the embedded
date-normalisation task (`rnnkit.data.dates`), character by character. The task itself (training
task, data split, decoding, scores, loading a run directory) is `rnnkit.tasks.translate`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rnnkit import cells
from rnnkit.cli._cells import add_cell_args, cell_options
from rnnkit.cli._training import add_optimization_args, add_run_args, check, check_run_flags, \
    resolve, train_config
from rnnkit.data.parallel import build_vocabs, detokenize, encode_pairs, read_parallel
from rnnkit.data.vocab import Vocab
from rnnkit.errors import UserError
from rnnkit.models.seq2seq import ATTENTIONS, Seq2Seq, Seq2SeqConfig
from rnnkit.tasks.translate import BATCHINGS, LENGTH_PENALTY, TranslateTask, load_run, load_split, \
    make_batches, score, translate_tokens

# Vocabularies on real text: the words seen at least this often in training. The target side is the
# output layer, the costliest part of an update: 3 keeps 6,439 of fra.txt's English words (8,187 at 2),
# 1.08x the updates a minute (docs/BENCHMARKS.md); a source word seen once would keep a nearly random
# embedding after the few updates it gets.
SRC_MIN_FREQ, TGT_MIN_FREQ = 2, 3


def min_freqs(args):
    """(source, target) vocabulary thresholds on real text from --src-min-freq / --tgt-min-freq, else
    --min-freq, else the defaults above."""
    return (args.src_min_freq or args.min_freq or SRC_MIN_FREQ,
            args.tgt_min_freq or args.min_freq or TGT_MIN_FREQ)


# --- the data settings of a new run ----------------------------------------------------------------


def _data_settings(args) -> dict:
    if args.data:
        return {"kind": "tsv", "path": str(Path(args.data).resolve()), "reverse": bool(args.reverse),
                "max_words": args.max_words, "dev_frac": args.dev_frac, "test_frac": args.test_frac,
                "max_test": args.max_test, "seed": args.split_seed, "tokenizer": "word",
                "encoding": args.encoding}
    return {"kind": "dates", "n_train": args.n_train, "n_dev": min(500, args.n_test), "n_test": args.n_test,
            "seed": args.split_seed, "tokenizer": "char"}


# --- commands --------------------------------------------------------------------------------------


def register(sub, train_sub):
    p = train_sub.add_parser("translate", help="encoder-decoder translation (default: the date task)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="parallel TSV, source<TAB>target (default: generated date task)")
    g.add_argument("--reverse", action="store_true", help="swap the columns (target<TAB>source)")
    g.add_argument("--encoding", default="utf-8")
    g.add_argument("--max-words", type=int, default=10, help="skip pairs with a longer side")
    g.add_argument("--min-freq", type=int, default=None,
                   help="vocabularies: keep the words seen at least this often in training (source 2, "
                        "target 3: a smaller output layer; the date task keeps every character)")
    g.add_argument("--src-min-freq", type=int, default=None, help="the same, source side only")
    g.add_argument("--tgt-min-freq", type=int, default=None, help="the same, target side only")
    g.add_argument("--dev-frac", type=float, default=0.02)
    g.add_argument("--test-frac", type=float, default=0.05)
    g.add_argument("--max-test", type=int, default=None, help="cap on test sources")
    g.add_argument("--split-seed", type=int, default=0)
    g.add_argument("--n-train", type=int, default=20000, help="date task: training pairs")
    g.add_argument("--n-test", type=int, default=1000, help="date task: test pairs (dev: min(500, this))")
    m = p.add_argument_group("model")
    m.add_argument("--attention", choices=ATTENTIONS, default="general")
    m.add_argument("--cell", choices=cells.names(), default="lstm",
                   help=f"encoder and decoder cell (lstm): {cells.describe()}")
    m.add_argument("--unidirectional", action="store_true", help="one-directional encoder")
    m.add_argument("--layers", type=int, default=1)
    m.add_argument("--emb", type=int, default=None, help="embedding size (256; date task 32)")
    m.add_argument("--hidden", type=int, default=None, help="hidden size (256; date task 64)")
    m.add_argument("--dropout", type=float, default=None,
                   help="on the embeddings, between layers and before the output layer (0.1; date "
                        "task 0)")
    m.add_argument("--seed", type=int, default=0)
    t = p.add_argument_group("training")
    t.add_argument("--teacher-forcing", type=float, default=1.0, help="ratio of gold decoder inputs")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--batching", choices=BATCHINGS, default=None,
                   help="random batches, or `length`: pairs of similar length (little padding, ~1.2x "
                        "the updates a minute); default length, date task random")
    t.add_argument("--label-smoothing", type=float, default=None,
                   help="training targets put this much mass evenly on all words (0.1; date task 0); "
                        "the dev loss stays plain cross-entropy")
    add_optimization_args(t, TEXT_DEFAULTS, SHOWN)
    r = p.add_argument_group("run")
    r.add_argument("--beam", type=int, default=5, help="beam width for the final test evaluation")
    add_run_args(r, "runs/translate")
    add_cell_args(p.add_argument_group("the cell's options (a resumed run keeps its own)"),
                  shown={"forget_bias": "1.0"})
    p.set_defaults(func=train)

    q = sub.add_parser("translate", help="translate lines with a trained run")
    q.add_argument("dir", help="run directory of `rnnkit train translate`")
    q.add_argument("file", nargs="?", default="-", help="input text, one sentence a line ('-': stdin)")
    q.add_argument("--beam", type=int, default=5, help="beam width (1: greedy)")
    q.add_argument("--max-len", type=int, default=None, help="most output tokens (default 2*len+10)")
    q.add_argument("--length-penalty", type=float, default=LENGTH_PENALTY,
                   help=f"beam: log p / length**this ({LENGTH_PENALTY}; 0: plain log p)")
    q.add_argument("--heatmap", help="write the attention of the first non-empty line to this PNG")
    q.add_argument("--encoding", default="utf-8")
    q.set_defaults(func=translate_cmd)


# Defaults of the flags left unset. Real text: the recipe of docs/RESULTS.md (runs 7, 10, 11, 14); the
# date task keeps the one it was measured with. A resumed run keeps its own training settings
# (`rnnkit.cli._training.resolve`); its model and data come from its checkpoint.
TEXT_DEFAULTS = {"dropout": 0.1, "label_smoothing": 0.1, "batching": "length", "steps": 10000,
                 "minutes": None, "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "clip": 5.0,
                 "schedule": "cosine", "warmup": 0, "eval_every": 1000, "checkpoint_every": None,
                 "patience": 0, "ema": 0.0}
DATE_DEFAULTS = {**TEXT_DEFAULTS, "dropout": 0.0, "label_smoothing": 0.0, "batching": "random",
                 "steps": 400, "schedule": "constant", "eval_every": 100}
# The help's words for the defaults that differ between the two (checkpoint_every None: --eval-every's).
SHOWN = {"steps": "400 for the date task, else 10000", "schedule": "cosine; date task constant",
         "eval_every": "1000; date task 100", "checkpoint_every": "--eval-every"}


def _check_args(args):
    def bad(flag, what, v):
        raise UserError(f"--{flag}: expected {what}, got {v!r}")

    if args.max_words is not None and args.max_words < 1:
        bad("max-words", "a positive integer", args.max_words)
    for flag in ("min_freq", "src_min_freq", "tgt_min_freq"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            bad(flag.replace("_", "-"), "a positive integer", value)
    if not 0 <= args.dev_frac < 1 or not 0 < args.test_frac < 1 or args.dev_frac + args.test_frac >= 1:
        bad("test-frac", "fractions with dev + test < 1", (args.dev_frac, args.test_frac))
    if not 0 <= args.teacher_forcing <= 1:
        bad("teacher-forcing", "a ratio in [0, 1]", args.teacher_forcing)
    if args.dropout is not None and not 0 <= args.dropout < 1:
        bad("dropout", "a number in [0, 1)", args.dropout)
    if args.label_smoothing is not None and not 0 <= args.label_smoothing < 1:
        bad("label-smoothing", "a number in [0, 1)", args.label_smoothing)
    if args.beam < 1:
        bad("beam", "a positive integer", args.beam)
    for flag in ("layers", "batch_size", "n_train", "n_test"):
        if getattr(args, flag) < 1:
            bad(flag.replace("_", "-"), "a positive integer", getattr(args, flag))
    if args.emb is not None and args.emb < 1:
        bad("emb", "a positive integer", args.emb)
    if args.hidden is not None and args.hidden < 1:
        bad("hidden", "a positive integer", args.hidden)


def train(args):
    from rnnkit.train.checkpoint import check_run_dir, prepare_run_dir, read_json
    from rnnkit.train.loop import fit

    check_run_flags(args)
    _check_args(args)
    saved_train = {}
    if args.resume:
        run_dir = prepare_run_dir(args.out, resume=True)
        meta = read_json(run_dir / "last.json", "checkpoint index")["meta"]
        config, saved_train = meta["config"], meta.get("train", {})
        ds = config["data"]
        options = cell_options(args, config["model"]["cell"],
                               saved=config["model"].get("cell_options", {}))
    else:
        ds = _data_settings(args)
        options = cell_options(args, args.cell)
    dates = ds["kind"] == "dates"
    opts = resolve(args, DATE_DEFAULTS if dates else TEXT_DEFAULTS, saved_train)
    check(opts)
    if not args.resume:
        run_dir = check_run_dir(args.out, force=args.force)
    t0 = time.perf_counter()
    train_pairs, dev_pairs, test_groups, dev_groups = load_split(ds, warn=_warn)
    if args.resume:
        src_vocab = Vocab.from_dict(config["src_vocab"])
        tgt_vocab = Vocab.from_dict(config["tgt_vocab"])
        mcfg = Seq2SeqConfig(**config["model"])
    else:
        src_freq, tgt_freq = (1, 1) if dates else min_freqs(args)
        src_vocab, tgt_vocab = build_vocabs(train_pairs, src_freq, tgt_min_freq=tgt_freq)
        mcfg = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), emb=args.emb or (32 if dates else 256),
                             hidden=args.hidden or (64 if dates else 256), cell=args.cell,
                             layers=args.layers, bidirectional=not args.unidirectional,
                             attention=args.attention, dropout=opts["dropout"], seed=args.seed,
                             cell_options=options)
        config = {"model": asdict(mcfg), "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict(),
                  "data": ds, "teacher_forcing": args.teacher_forcing, "batch_size": args.batch_size,
                  "label_smoothing": opts["label_smoothing"], "batching": opts["batching"]}
    model = Seq2Seq(mcfg)
    items = encode_pairs(train_pairs, src_vocab, tgt_vocab)
    # Dev: the loss on up to 2000 pairs; greedy exact match on 500 sources only for the date task (on
    # real text the loss is what picks the best checkpoint, and decoding would eat the time budget).
    task = TranslateTask(model, encode_pairs(dev_pairs[:2000], src_vocab, tgt_vocab), dev_groups,
                         tgt_vocab, config.get("teacher_forcing", 1.0), args.seed,
                         max_dev_decode=500 if dates else 0, tokenizer=ds["tokenizer"])
    task.src_vocab = src_vocab
    task.smoothing = config.get("label_smoothing", 0.0)
    source = make_batches(items, config.get("batch_size", args.batch_size), args.seed,
                          config.get("batching", "random"))
    cfg = train_config(opts, args.seed, monitor="val_loss")
    print(f"rnnkit: {len(train_pairs)} training pairs, {len(dev_pairs)} dev, {len(test_groups)} test "
          f"sources; vocab {len(src_vocab)} -> {len(tgt_vocab)}; {model.num_parameters()} parameters "
          f"(data ready in {time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    if not args.resume:
        prepare_run_dir(run_dir, force=args.force)
    summary = fit(task, source, cfg, run_dir, config, resume=args.resume, progress=not args.no_progress)
    # final test with the best checkpoint (lowest dev loss)
    model, src_vocab, tgt_vocab, _ = load_run(run_dir)
    results = {"train": {k: summary[k] for k in ("step", "stopped", "elapsed", "tokens_per_s")}}
    for beam in sorted({1, args.beam}):
        t1 = time.perf_counter()
        hyps = translate_tokens(model, src_vocab, tgt_vocab, [s for s, _ in test_groups], beam=beam)
        res = score(hyps, [r for _, r in test_groups], ds["tokenizer"])
        res["seconds"] = round(time.perf_counter() - t1, 1)
        results[f"test_beam{beam}"] = res
    from rnnkit.train.checkpoint import write_json_atomic

    write_json_atomic(run_dir / "test.json", results)
    if args.json:
        print(json.dumps(results))
    else:
        for k, v in results.items():
            if k.startswith("test"):
                print(f"{k}: BLEU {v['bleu']:.2f}  chrF {v['chrf']:.2f}  exact {v['exact']:.2f}%  "
                      f"({v['sentences']} sentences, {v['seconds']}s)")
        print(f"run: {run_dir} ({summary['step']} steps, {summary['elapsed']:.0f}s)")
    return 0


def _warn(message):
    print(f"rnnkit: {message}", file=sys.stderr)


def _read_lines(file, encoding):
    if file == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(file).read_text(encoding=encoding).splitlines()
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not valid {encoding} text (use --encoding)") from None
    except OSError as e:
        raise UserError(f"{file}: cannot read ({e.__class__.__name__})") from None


def translate_cmd(args):
    from rnnkit.data.parallel import TOKENIZERS

    if args.beam < 1:
        raise UserError(f"--beam: expected a positive integer, got {args.beam}")
    if args.max_len is not None and args.max_len < 1:
        raise UserError(f"--max-len: expected a positive integer, got {args.max_len}")
    model, src_vocab, tgt_vocab, config = load_run(args.dir)
    kind = config["data"]["tokenizer"]
    lines = _read_lines(args.file, args.encoding)
    sources = [TOKENIZERS[kind](line) for line in lines]
    want_att = bool(args.heatmap) and model.cfg.attention != "none"
    if args.heatmap and not want_att:
        raise UserError(f"--heatmap: the run in {args.dir} has no attention")
    res = translate_tokens(model, src_vocab, tgt_vocab, sources, args.beam, args.max_len,
                           args.length_penalty, return_attention=want_att)
    hyps, atts = res if want_att else (res, None)
    for h in hyps:
        print(detokenize(h, kind))
    if want_att:
        first = next((i for i, s in enumerate(sources) if s), None)
        if first is None:
            raise UserError("--heatmap: every input line is empty")
        src_shown = [t if t in src_vocab.stoi else "<unk>" for t in sources[first]]
        plot_attention(atts[first], src_shown, hyps[first] + ["<eos>"], args.heatmap)
        print(f"rnnkit: attention heatmap written to {args.heatmap}", file=sys.stderr)
    return 0


def plot_attention(alpha, src_tokens, tgt_tokens, path):
    """alpha (len(tgt), len(src)) as a heatmap PNG: target tokens down, source tokens across."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--heatmap needs matplotlib: pip install 'rnnkit[plot]'") from None
    alpha = np.asarray(alpha)[:len(tgt_tokens), :len(src_tokens)]
    src_tokens = ["\u2423" if t == " " else t for t in src_tokens]  # a visible space (date task)
    tgt_tokens = ["\u2423" if t == " " else t for t in tgt_tokens]
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src_tokens), 1 + 0.4 * len(tgt_tokens)))
    ax.imshow(alpha, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(args):
    """`rnnkit eval DIR [--data TSV] [--beam K] [--length-penalty A] [--split dev] [--json]`: BLEU, chrF
    and exact match.

    Without --data, the run's own test split (or dev split, to choose the beam and length penalty).
    With --data naming the run's training file, that file's
    test split (the split is deterministic); with any other TSV, every pair of it, the translations of
    one source grouped as its references."""
    model, src_vocab, tgt_vocab, config = load_run(args.dir)
    ds = config["data"]
    beam = args.beam or 5
    if beam < 1:
        raise UserError(f"--beam: expected a positive integer, got {beam}")
    alpha = LENGTH_PENALTY if getattr(args, "length_penalty", None) is None else args.length_penalty
    split = getattr(args, "split", "test")
    if split != "test" and args.data:
        raise UserError("--split: only without --data (the run's own data has the splits)")
    if args.data and not (ds["kind"] == "tsv" and Path(args.data).resolve() == Path(ds["path"])):
        pairs, rep = read_parallel(args.data, ds.get("reverse", False), ds.get("max_words"),
                                   ds["tokenizer"], args.encoding)
        if rep.skipped:
            print(f"rnnkit: {rep.summary(args.data)}", file=sys.stderr)
        groups: dict = {}
        for s, t in pairs:
            groups.setdefault(tuple(s), []).append(t)
        test = [(list(k), v) for k, v in groups.items()]
        what = str(args.data)
    else:
        _, _, test, dev = load_split(ds)
        if split == "dev":
            test = dev
        what = f"{split} split of " + (ds.get("path") or "the date task")
    t0 = time.perf_counter()
    hyps = translate_tokens(model, src_vocab, tgt_vocab, [s for s, _ in test], beam=beam,
                            length_penalty=alpha)
    res = score(hyps, [r for _, r in test], ds["tokenizer"])
    res.update({"beam": beam, "length_penalty": alpha, "data": what,
                "seconds": round(time.perf_counter() - t0, 1),
                "unk_rate": src_vocab.unknown_rate(s for s, _ in test)})
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{what}: BLEU {res['bleu']:.2f}  chrF {res['chrf']:.2f}  exact {res['exact']:.2f}%  "
              f"(beam {beam}, length penalty {alpha:g}, {res['sentences']} sentences, "
              f"{res['references']} references)")
    return 0
