"""`rnnkit train caption`, `rnnkit caption DIR IMAGE...` and `rnnkit eval DIR` for a captioning run.

    rnnkit train caption --images DIR|NPZ|NPY --captions TSV [--out runs/caption] [--minutes M] [...]
    rnnkit caption DIR IMAGE... [--beam K] [--json]       one caption per image
    rnnkit eval DIR [--beam K] [--json]                   BLEU-1..4 on the official test split, the two
                                                          baselines, and DIR/test_captions.html

Training reads the captions TSV (official splits: train + extra for training, dev for validation and
checkpoint selection, test held out for `rnnkit eval`) and the images, which are a directory of
JPEG/PNG files (resized to --size, encoded by the small conv encoder trained end to end), an .npz of
uint8 pixels (`images`, `filenames`), or precomputed CNN features (.npz `features` + `filenames`, or .npy
rows in sorted image-name order). The task itself (training task, decoding, loading a run directory) is
`rnnkit.tasks.caption`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from rnnkit import cells
from rnnkit.cli._cells import add_cell_args, cell_options
from rnnkit.cli._training import add_optimization_args, add_run_args, check, check_run_flags, \
    explicit, resolve, train_config
from rnnkit.errors import UserError
from rnnkit.tasks.caption import CaptionTask, decode_batches, load_run, used_len

MODEL_DEFAULTS = {"cell": "lstm", "embed": 128, "hidden": 256, "channels": "16,32,64", "pool": "avg",
                  "attention": "none", "dropout": 0.3, "seed": 0}
DATA_DEFAULTS = {"size": 64, "min_count": 3, "max_len": 16}
TRAIN_DEFAULTS = {"batch": 16, "steps": 2000, "minutes": None, "optimizer": "adam", "lr": 2e-3,
                  "weight_decay": 0.0, "clip": 5.0, "schedule": "constant", "warmup": 0, "eval_every": 100,
                  "checkpoint_every": 100, "patience": 0, "monitor": "val_loss", "ema": 0.0}


def register(sub, train_sub):
    p = train_sub.add_parser("caption", help="train an image captioner (an image in, a sentence out)")
    g = p.add_argument_group("data")
    g.add_argument("--images", required=True,
                   help="directory of JPEG/PNG images, .npz of pixels or features, or .npy of features")
    g.add_argument("--captions", required=True, help="captions TSV (image, caption_id, split, caption)")
    g.add_argument("--size", type=int, help="image side in pixels for the conv encoder (64)")
    g.add_argument("--min-count", type=int, help="keep words seen this often in training captions (3)")
    g.add_argument("--max-len", type=int, help="cut training captions to this many words (16)")
    g.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (and count) bad caption rows and missing or unreadable images")
    g.add_argument("--encoding", default="utf-8", help="text encoding of --captions (utf-8)")
    m = p.add_argument_group("model")
    m.add_argument("--cell", choices=cells.names(), help=f"decoder cell (lstm): {cells.describe()}")
    m.add_argument("--embed", type=int, help="word embedding size (128)")
    m.add_argument("--hidden", type=int, help="decoder hidden size (256)")
    m.add_argument("--channels", help="conv encoder filters per block, comma-separated (16,32,64)")
    m.add_argument("--pool", choices=["avg", "flatten"], help="image vector from the feature map (avg)")
    m.add_argument("--attention", nargs="?", const="luong", choices=["none", "luong", "sat"],
                   help="attend over the feature map at every word: luong (on the decoder output; the "
                        "kind when the flag has no value) or sat (show-attend-tell: the context feeds "
                        "the cell's input) (none)")
    m.add_argument("--dropout", type=float, help="dropout on image vector, embeddings, output (0.3)")
    m.add_argument("--seed", type=int, help="seed of the weights, dropout and batch order (0)")
    t = p.add_argument_group("training")
    t.add_argument("--batch", type=int, help="images per batch, each with all of its captions (16)")
    add_optimization_args(t, TRAIN_DEFAULTS)
    t.add_argument("--monitor", choices=["val_bleu4", "val_loss"],
                   help="what picks the best checkpoint: dev loss, or dev BLEU-4 of greedy captions "
                        "(noisy on 113 dev images) (val_loss)")
    add_run_args(p.add_argument_group("run"), "runs/caption")
    add_cell_args(p.add_argument_group("the cell's options (a resumed run keeps its own)"))
    p.set_defaults(func=train)

    c = sub.add_parser("caption", help="caption images with a trained captioning run")
    c.add_argument("dir", help="run directory of `rnnkit train caption`")
    c.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (JPEG/PNG); for a run on precomputed features, image names in the "
                        "run's features file")
    c.add_argument("--beam", type=int, default=1, help="beam width; 1 is greedy (1)")
    c.add_argument("--max-len", type=int, default=20, help="longest caption in words (20)")
    c.add_argument("--checkpoint", choices=["best", "last"], default=None, help="(best if present)")
    c.add_argument("--json", action="store_true", help="print {image: caption} as JSON")
    c.set_defaults(func=caption)


# --- data --------------------------------------------------------------------------------------------


def load_data(images, captions, size, skip_bad_rows, encoding="utf-8", quiet=False):
    """Read captions and images; drop the captions of unusable images. Returns (CaptionSet, ImageSet,
    inputs for the encoder, report dict of what was skipped)."""
    from rnnkit.data.captions import read_captions
    from rnnkit.data.images import load_images, normalise

    caps = read_captions(captions, skip_bad_rows=skip_bad_rows, encoding=encoding)
    imgs = load_images(images, caps.images(), size=size, skip_bad=skip_bad_rows)
    dropped = caps.drop_images([n for n, _ in imgs.bad])
    report = {"bad_rows": len(caps.skipped), "bad_images": len(imgs.bad), "captions_dropped": dropped}
    if not quiet:
        for note in caps.notes:
            print(f"rnnkit: note: {note}", file=sys.stderr)
        for msg in (caps.skipped_summary(), imgs.bad_summary()):
            if msg:
                print(f"rnnkit: warning: {msg}", file=sys.stderr)
        if dropped:
            print(f"rnnkit: warning: {dropped} captions of unusable images skipped", file=sys.stderr)
    if not caps.captions:
        raise UserError(f"{captions}: no captions left whose image could be read")
    if imgs.kind == "pixels":
        inputs = normalise(imgs.data)
    else:
        inputs = np.ascontiguousarray(imgs.data, dtype=np.float32)
    return caps, imgs, inputs, report


def _attention_kind(value):
    if isinstance(value, bool) or value is None:  # runs saved when --attention was a plain flag
        return "luong" if value else "none"
    return value


def _parse_channels(text):
    try:
        ch = tuple(int(c) for c in str(text).split(","))
    except ValueError:
        raise UserError(f"--channels: expected comma-separated integers like 16,32,64, got {text!r}") \
            from None
    if not ch or min(ch) < 1:
        raise UserError(f"--channels: expected positive integers, got {text!r}")
    return ch


def _check_args(opts):
    for k in ("embed", "hidden", "batch", "size", "min_count", "max_len", "eval_every",
              "checkpoint_every"):
        if k in opts and opts[k] < 1:
            raise UserError(f"--{k.replace('_', '-')}: expected a positive integer, got {opts[k]}")
    if "dropout" in opts and not 0 <= opts["dropout"] < 1:
        raise UserError(f"--dropout: expected a number in [0, 1), got {opts['dropout']}")


def train(args):
    from rnnkit.data.captions import TRAIN_SPLITS, build_caption_vocab, encode_captions
    from rnnkit.data.vocab import Vocab
    from rnnkit.models.captioner import Captioner, CaptionerConfig
    from rnnkit.train.batches import IndexBatches
    from rnnkit.train.checkpoint import check_run_dir, load_checkpoint, prepare_run_dir
    from rnnkit.train.loop import fit

    check_run_flags(args)
    out = Path(args.out)
    model_opts, data_opts = explicit(args, MODEL_DEFAULTS), explicit(args, DATA_DEFAULTS)
    train_opts = explicit(args, TRAIN_DEFAULTS)
    _check_args({**model_opts, **data_opts, **train_opts})
    if args.resume:
        prepare_run_dir(out, resume=True)
        _, meta, _ = load_checkpoint(out, "last", "caption")
        saved = meta.get("config") or {}
        model_args, data_args = saved["model_args"], saved["data_args"]
        model_args["cell_options"] = cell_options(args, model_args["cell"],
                                                  saved=model_args.get("cell_options", {}))
        train_args = resolve(args, TRAIN_DEFAULTS, saved["train_args"])
    else:
        model_args = {**MODEL_DEFAULTS, **model_opts}
        model_args["cell_options"] = cell_options(args, model_args["cell"])
        data_args = {**DATA_DEFAULTS, **data_opts}
        train_args = resolve(args, TRAIN_DEFAULTS)
    check(train_args)
    if not args.resume:
        check_run_dir(out, force=args.force)

    progress = not args.no_progress
    caps, imgs, inputs, bad = load_data(args.images, args.captions, data_args["size"], args.skip_bad_rows,
                                        args.encoding, quiet=False)
    train_caps = [c for c in caps.captions if c.split in TRAIN_SPLITS]
    if not train_caps:
        raise UserError(f"{args.captions}: no captions in the train split")
    if args.resume:
        vocab = Vocab.from_dict(saved["vocab"], f"{out}/last.json")
    else:
        vocab = build_caption_vocab([c.tokens for c in train_caps], min_freq=data_args["min_count"])
    ids = encode_captions([c.tokens for c in train_caps], vocab, data_args["max_len"])
    train_names = list(dict.fromkeys(c.image for c in train_caps))
    train_img_rows = imgs.rows(train_names)
    pos = {n: i for i, n in enumerate(train_names)}
    cap_img = np.array([pos[c.image] for c in train_caps], dtype=np.int64)
    caps_of = [[] for _ in train_names]  # the captions of each training image
    for m, i in enumerate(cap_img):
        caps_of[i].append(m)

    dev_caps = [c for c in caps.captions if c.split == "dev"]
    dev = None
    if dev_caps:
        dev_by_img = caps.by_image(["dev"])
        dev_names = list(dev_by_img)
        dpos = {n: i for i, n in enumerate(dev_names)}
        dev = (imgs.rows(dev_names), encode_captions([c.tokens for c in dev_caps], vocab,
                                                      data_args["max_len"]),
               np.array([dpos[c.image] for c in dev_caps], dtype=np.int64),
               [dev_by_img[n] for n in dev_names])

    shared = dict(vocab_size=len(vocab), cell=model_args["cell"], embed=model_args["embed"],
                  hidden=model_args["hidden"], pool=model_args["pool"],
                  attention=_attention_kind(model_args["attention"]), dropout=model_args["dropout"],
                  seed=model_args["seed"], cell_options=model_args["cell_options"])
    if imgs.kind == "pixels":
        cfg = CaptionerConfig(encoder="conv", image_size=data_args["size"],
                              channels=_parse_channels(model_args["channels"]), **shared)
    else:
        cfg = CaptionerConfig(encoder="features", feature_shape=tuple(inputs.shape[1:]), **shared)
    try:
        model = Captioner(cfg, vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id)
    except ValueError as e:
        raise UserError(f"model: {e}") from None
    task = CaptionTask(model, inputs, vocab, dev)

    def collate(idx):
        """A batch of images with all of their captions: each image is encoded once per step."""
        sel = np.concatenate([caps_of[i] for i in idx])
        local = {int(i): k for k, i in enumerate(idx)}
        b = ids[:, sel]
        return train_img_rows[idx], b[:used_len(b)], np.array([local[int(i)] for i in cap_img[sel]])

    source = IndexBatches(len(train_names), train_args["batch"], seed=cfg.seed, collate=collate)
    monitor = train_args["monitor"] if dev is not None else "none"
    tcfg = train_config(train_args, cfg.seed, monitor,
                        "max" if monitor == "val_bleu4" else "min")
    config = {"model": model.config_dict(), "vocab": vocab.to_dict(), "model_args": model_args,
              "data_args": data_args, "train_args": train_args,
              "images": str(Path(args.images).resolve()), "captions": str(Path(args.captions).resolve()),
              "image_kind": imgs.kind, "skip_bad_rows": bool(args.skip_bad_rows), "encoding": args.encoding}
    if progress:
        print(f"rnnkit: {len(train_caps):,} training captions of {len(train_names):,} images, "
              f"{len(dev_caps):,} dev captions; vocabulary {len(vocab):,}; {cfg.encoder} encoder "
              f"({imgs.kind} {tuple(inputs.shape[1:])}), {cfg.cell} {cfg.hidden}"
              f"{', attention ' + cfg.attention if cfg.attention != 'none' else ''}; {model.num_parameters():,} parameters; "
              f"run dir {out}", file=sys.stderr)
    if not args.resume:
        prepare_run_dir(out, force=args.force)
    summary = fit(task, source, tcfg, out, config, resume=args.resume, progress=progress)
    ev = summary["last_eval"] or {}
    result = {"run_dir": str(out), "step": summary["step"], "stopped": summary["stopped"],
              "val_loss": ev.get("val_loss"), "val_bleu4": ev.get("val_bleu4"),
              "best": summary["best"], "best_step": summary["best_step"], "monitor": monitor,
              "elapsed_s": round(summary["elapsed"], 1), **bad}
    if args.json:
        print(json.dumps(result))
    else:
        vl = (f"dev loss {ev['val_loss']:.4f}, dev BLEU-4 {ev['val_bleu4']:.2f}"
              if ev.get("val_loss") is not None else "no dev split")
        print(f"step {summary['step']}: {vl}; best {monitor} {summary['best']} at step "
              f"{summary['best_step']}; saved in {out} (evaluate with: rnnkit eval {out})")


# --- rnnkit caption --------------------------------------------------------------------------------


def caption(args):
    from rnnkit.data.images import load_image, load_images, normalise

    if args.beam < 1:
        raise UserError(f"--beam: expected a positive integer, got {args.beam}")
    if args.max_len < 1:
        raise UserError(f"--max-len: expected a positive integer, got {args.max_len}")
    model, vocab, config = load_run(args.dir, args.checkpoint)
    if model.cfg.encoder == "conv":
        inputs = normalise(np.stack([load_image(p, model.cfg.image_size) for p in args.images]))
    else:
        names = [Path(p).name for p in args.images]
        imgs = load_images(config["images"], names)
        inputs = np.ascontiguousarray(imgs.data[imgs.rows(names)], dtype=np.float32)
    hyps = decode_batches(model, inputs, beam=args.beam, max_len=args.max_len)
    texts = [" ".join(vocab.decode(h)) for h in hyps]
    if args.json:
        print(json.dumps(dict(zip(args.images, texts))))
    else:
        for p, t in zip(args.images, texts):
            print(f"{p}\t{t}")


# --- evaluation: BLEU on the test split, baselines, HTML page ---------------------------------------


def consensus_caption(captions):
    """The caption among several of one image that agrees best (sentence BLEU-4) with the others."""
    from rnnkit.metrics.bleu import sentence_bleu

    if len(captions) == 1:
        return captions[0]
    scores = [sentence_bleu(c, [o for j, o in enumerate(captions) if j != i]) for i, c in
              enumerate(captions)]
    return captions[int(np.argmax(scores))]


def baselines(caps, imgs, test_names, train_names):
    """Two baselines on the same test images: every image gets the training split's most frequent
    caption; every image gets the consensus caption of its nearest training image (Euclidean distance
    between the raw pixels, or between the features for a features run)."""
    train_by_img = caps.by_image(("train", "extra"))
    counts = Counter(tuple(t) for toks in train_by_img.values() for t in toks)
    most_frequent = list(counts.most_common(1)[0][0])  # ties: the first seen, as Counter keeps order
    X = imgs.data[imgs.rows(train_names)].reshape(len(train_names), -1).astype(np.float32)
    Q = imgs.data[imgs.rows(test_names)].reshape(len(test_names), -1).astype(np.float32)
    # |q - x|^2 = |q|^2 - 2 q.x + |x|^2; |q|^2 is the same for every x, so it can be left out
    d = -2 * Q @ X.T + (X * X).sum(axis=1)[None, :]
    nearest = d.argmin(axis=1)
    nn_caps = [consensus_caption(train_by_img[train_names[i]]) for i in nearest]
    return {"most_frequent": [most_frequent] * len(test_names), "nearest_image": nn_caps,
            "most_frequent_text": " ".join(most_frequent), "count": counts.most_common(1)[0][1],
            "nearest_names": [train_names[i] for i in nearest]}


def evaluate(args):
    import time

    from rnnkit.metrics.bleu import corpus_bleu, sentence_bleu
    from rnnkit.report.caption_html import write_caption_html

    run_dir = Path(args.dir)
    model, vocab, config = load_run(run_dir)
    captions = args.data or config["captions"]
    caps, imgs, inputs, bad = load_data(config["images"], captions, config["data_args"]["size"],
                                        config.get("skip_bad_rows", False)
                                        or getattr(args, "skip_bad_rows", False),
                                        args.encoding or config.get("encoding", "utf-8"), quiet=args.json)
    by_img = caps.by_image(["test"])
    if not by_img:
        raise UserError(f"{captions}: no captions in the test split")
    test_names = list(by_img)
    refs = [by_img[n] for n in test_names]
    beam = args.beam or 1
    if beam < 1:
        raise UserError(f"--beam: expected a positive integer, got {beam}")
    t0 = time.perf_counter()
    hyps = [vocab.decode(h) for h in decode_batches(model, inputs[imgs.rows(test_names)], beam=beam)]
    decode_s = time.perf_counter() - t0
    result = {"task": "caption", "split": "test", "images": len(test_names),
              "references": sum(len(r) for r in refs), "beam": beam}
    model_bleu = corpus_bleu(hyps, refs)
    result.update({k: round(model_bleu[k], 2) for k in ("bleu1", "bleu2", "bleu3", "bleu4")})
    result["decode_s"] = round(decode_s, 2)
    train_names = caps.images(("train", "extra"))
    base = baselines(caps, imgs, test_names, train_names)
    for name in ("most_frequent", "nearest_image"):
        b = corpus_bleu(base[name], refs)
        result[f"baseline_{name}"] = {k: round(b[k], 2) for k in ("bleu1", "bleu2", "bleu3", "bleu4")}
    result["baseline_most_frequent"]["caption"] = base["most_frequent_text"]
    result["distinct_captions"] = len({tuple(h) for h in hyps})
    result.update(bad)
    html = run_dir / "test_captions.html"
    items = []
    for i, n in enumerate(test_names):
        items.append({"name": n, "image": _image_for_html(config, imgs, n), "generated": " ".join(hyps[i]),
                      "nearest": " ".join(base["nearest_image"][i]),
                      "references": [" ".join(r) for r in refs[i]],
                      "bleu4": sentence_bleu(hyps[i], refs[i])})
    write_caption_html(html, items, title=f"Captions of the {len(test_names)} test images: {run_dir}",
                       summary=result)
    result["html"] = str(html)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test split: {len(test_names)} images, {result['references']} references, beam {beam}")
        print(f"  model           BLEU-1 {result['bleu1']:6.2f}  BLEU-2 {result['bleu2']:6.2f}  "
              f"BLEU-3 {result['bleu3']:6.2f}  BLEU-4 {result['bleu4']:6.2f}")
        for name, label in (("most_frequent", "most frequent  "), ("nearest_image", "nearest image  ")):
            b = result[f"baseline_{name}"]
            print(f"  {label} BLEU-1 {b['bleu1']:6.2f}  BLEU-2 {b['bleu2']:6.2f}  BLEU-3 {b['bleu3']:6.2f}  "
                  f"BLEU-4 {b['bleu4']:6.2f}")
        print(f"  {result['distinct_captions']} distinct generated captions; page: {html}")


def _image_for_html(config, imgs, name):
    """The picture file to embed (from the run's image folder, or an `images/` folder beside its .npz),
    else the pixel array the run read (or None for features)."""
    root = Path(config["images"])
    if root.is_dir() and (root / name).is_file():
        return root / name
    beside = root.parent / "images" / name  # an .npz next to the pictures it was made from
    if not root.is_dir() and beside.is_file():
        return beside
    if imgs.kind == "pixels":
        return imgs.data[imgs.index[name]]
    return None
