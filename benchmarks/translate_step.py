"""Milliseconds per training update of the fra.txt translation model, two variants measured in one
process, interleaved so that a change in the machine's speed falls on both alike:
`--compare batching` (default): random batches against batches of pairs of similar length
(`--batching length`); `--compare vocab`: the target vocabulary of the words seen at least twice against
3 times (`--tgt-min-freq`, 8,187 against 6,439 English words; length batches for both).

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python benchmarks/translate_step.py \
        --data ../shared/data/eng-fra/fra.txt [--compare batching|vocab] [--batch-size 64] [--rounds 8] \
        [--json]

The update is the one `rnnkit train translate` makes on real text (dropout 0.1, label smoothing 0.1,
the output layer only at the valid target positions, Adam); the model is the default one (bidirectional
LSTM encoder, LSTM decoder, 256 units, general attention), fresh weights, one per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None):
    from rnnkit import kernels
    from rnnkit.data.parallel import build_vocabs, encode_pairs
    from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnkit.optim import Adam, collect_params
    from rnnkit.tasks.translate import TranslateTask, load_split, make_batches

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="fra.txt (English<TAB>French; read French -> English)")
    ap.add_argument("--compare", choices=("batching", "vocab"), default="batching")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8, help="rounds of 10 updates on each variant")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    ds = {"kind": "tsv", "path": args.data, "reverse": True, "max_words": 10, "dev_frac": 0.02,
          "test_frac": 0.05, "max_test": 2000, "seed": 0, "tokenizer": "word", "encoding": "utf-8"}
    train, _, _, _ = load_split(ds)
    # variant -> (target min-freq, batching)
    if args.compare == "batching":
        variants = {"random": (2, "random"), "length": (2, "length")}
    else:
        variants = {"tgt2": (2, "length"), "tgt3": (3, "length")}
    setups = {}
    for name, (tgt_freq, batching) in variants.items():
        src_vocab, tgt_vocab = build_vocabs(train, 2, tgt_min_freq=tgt_freq)
        items = encode_pairs(train, src_vocab, tgt_vocab)
        model = Seq2Seq(Seq2SeqConfig(len(src_vocab), len(tgt_vocab), dropout=0.1))
        task = TranslateTask(model, [], [], tgt_vocab)
        task.smoothing = 0.1
        setups[name] = (model, task, Adam(collect_params(model=model), lr=2e-3),
                        make_batches(items, args.batch_size, 0, batching), len(tgt_vocab))
    seconds = {k: 0.0 for k in setups}
    padded = {k: [] for k in setups}

    def run(name, n):
        model, task, opt, source, _ = setups[name]
        t0 = time.perf_counter()
        for _ in range(n):
            b = source.next_batch()
            padded[name].append((b["src"].size + b["tgt_in"].size, b["src"].shape[1]))
            model.zero_grad()
            task.train_step(b)
            opt.step()
        return time.perf_counter() - t0

    with kernels.flush_subnormals():  # as `fit` trains
        for name in setups:
            run(name, 5)  # warm-up: buffers, the thread pool
        for _ in range(args.rounds):
            for name in setups:
                seconds[name] += run(name, 10)
    n = 10 * args.rounds
    res = {k: {"ms_per_update": 1e3 * seconds[k] / n, "target_words": setups[k][4],
               "pairs_per_s": sum(p for _, p in padded[k][-n:]) / seconds[k],
               "padded_tokens_per_batch": float(np.mean([t for t, _ in padded[k]]))} for k in setups}
    first, second = setups
    res["speedup"] = seconds[first] / seconds[second]
    if args.json:
        print(json.dumps(res))
    else:
        for k in setups:
            r = res[k]
            print(f"{k:>6}: {r['ms_per_update']:.1f} ms per update, {r['pairs_per_s']:.0f} pairs/s, "
                  f"{r['padded_tokens_per_batch']:.0f} source + target positions per batch, "
                  f"{r['target_words']} target words")
        print(f"{second} / {first}: {res['speedup']:.2f}x the updates per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
