"""The PyTorch twin of `rnnkit.models.seq2seq.Seq2Seq`, and a baseline trainer for the translation task.

`TorchSeq2Seq` is the same network written with torch.nn and autograd: embeddings, a (bi)LSTM/GRU encoder
over packed sequences, the same bridge (sum of the directions' final states), an LSTM/GRU decoder, the same
attention (dot / general / additive; Luong's combine layer tanh([ctx; h] Wc + bc)) and output layer.
`from_rnnkit` copies an rnnkit model's weights into it and `to_rnnkit` copies them back, so the tests
compare losses and every gradient on identical weights (tests/test_seq2seq_torch.py).

As a script it trains the baseline for a wall-clock budget on the same split, the same batches
(rnnkit's `make_batches` with the same seed and `--batching`), the same initial weights, Adam with the
same learning rate and clipping, keeping the weights of the best dev loss (evaluated every
--eval-every steps, evaluation time counted in the budget, as in `rnnkit.train.loop.fit`). The result
is written as an rnnkit run directory (the weights copied into an rnnkit Seq2Seq), so decoding and
scoring are exactly rnnkit's:

    OMP_NUM_THREADS=1 python benchmarks/translate_vs_torch.py --data ../shared/data/eng-fra/fra.txt \
        --reverse --minutes 30 --out runs/torch_fra
    rnnkit eval runs/torch_fra --beam 5 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.interop import load_torch_state_dict, to_torch_state_dict
from rnnkit.models.seq2seq import Seq2Seq
from rnnkit.optim import Schedule


class TorchSeq2Seq(nn.Module):
    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.emb, cfg.hidden
        rnn = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.K = 2 if cfg.bidirectional else 1
        self.src_emb = nn.Embedding(cfg.src_vocab, D)
        self.tgt_emb = nn.Embedding(cfg.tgt_vocab, D)
        between = cfg.dropout if cfg.layers > 1 else 0.0
        self.encoder = rnn(D, H, num_layers=cfg.layers, bidirectional=cfg.bidirectional, dropout=between)
        self.decoder = rnn(D, H, num_layers=cfg.layers, dropout=between)
        # where rnnkit's Seq2Seq drops: both embeddings and the layer before the output
        self.drop_src, self.drop_tgt, self.drop_out = (nn.Dropout(cfg.dropout) for _ in range(3))
        self.sum_keys = cfg.attention == "dot" and self.K == 2
        self.E = H if self.sum_keys else self.K * H
        E, A = self.E, H
        if cfg.attention == "general":
            self.Wa = nn.Parameter(torch.zeros(E, H))
        elif cfg.attention == "additive":
            self.Wq = nn.Parameter(torch.zeros(H, A))
            self.Wk = nn.Parameter(torch.zeros(E, A))
            self.b = nn.Parameter(torch.zeros(A))
            self.v = nn.Parameter(torch.zeros(A))
        if cfg.attention != "none":
            self.combine = nn.Linear(E + H, H)
        self.out = nn.Linear(H, cfg.tgt_vocab)
        self.to(dtype)

    def _bridge(self, s):
        if self.K == 2:
            s = s.view(self.cfg.layers, 2, *s.shape[1:]).sum(1)
        return s

    def forward(self, src, src_mask, tgt_in):
        """Time-major (S, N), (S, N) bool, (T, N) -> logits (T, N, V)."""
        lengths = src_mask.sum(0).cpu()
        x = self.drop_src(self.src_emb(src))
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, final = self.encoder(packed)
        out, _ = pad_packed_sequence(out, total_length=src.shape[0])  # (S, N, K*H), zeros at padding
        H = self.cfg.hidden
        keys = out[..., :H] + out[..., H:] if self.sum_keys else out
        state = tuple(self._bridge(s) for s in final) if self.cfg.cell == "lstm" else self._bridge(final)
        dec, _ = self.decoder(self.drop_tgt(self.tgt_emb(tgt_in)), state)  # (T, N, H)
        if self.cfg.attention == "none":
            return self.out(self.drop_out(dec))
        q = dec.transpose(0, 1)  # (N, T, H)
        k = keys.transpose(0, 1)  # (N, S, E)
        kind = self.cfg.attention
        if kind == "dot":
            e = q @ k.transpose(1, 2)
        elif kind == "general":
            e = q @ (k @ self.Wa).transpose(1, 2)
        else:
            z = torch.tanh((q @ self.Wq)[:, :, None, :] + (k @ self.Wk + self.b)[:, None, :, :])
            e = z @ self.v
        e = e.masked_fill(~src_mask.T[:, None, :], float("-inf"))
        alpha = torch.softmax(e, dim=-1)
        ctx = (alpha @ k).transpose(0, 1)  # (T, N, E)
        ht = torch.tanh(self.combine(torch.cat([ctx, dec], dim=-1)))
        return self.out(self.drop_out(ht))

    # --- weights to and from rnnkit ----------------------------------------------------------------

    def from_rnnkit(self, model: Seq2Seq):
        p = {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in model.state_dict().items()}
        sd = {"src_emb.weight": p["src_emb.W"], "tgt_emb.weight": p["tgt_emb.W"],
              "out.weight": p["out.W"].T, "out.bias": p["out.b"]}
        for side in ("encoder", "decoder"):
            for k, v in to_torch_state_dict(getattr(model, side)).items():
                sd[f"{side}.{k}"] = torch.from_numpy(v)
        if self.cfg.attention != "none":
            sd["combine.weight"], sd["combine.bias"] = p["combine.W"].T, p["combine.b"]
            for name in ("Wa", "Wq", "Wk", "b", "v"):
                if f"attn.{name}" in p:
                    sd[name] = p[f"attn.{name}"]
        self.load_state_dict({k: v.contiguous() for k, v in sd.items()})
        return self

    def to_rnnkit(self, model: Seq2Seq):
        sd = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        ours = {"src_emb.W": sd["src_emb.weight"], "tgt_emb.W": sd["tgt_emb.weight"],
                "out.W": sd["out.weight"].T, "out.b": sd["out.bias"]}
        if self.cfg.attention != "none":
            ours["combine.W"], ours["combine.b"] = sd["combine.weight"].T, sd["combine.bias"]
            for name in ("Wa", "Wq", "Wk", "b", "v"):
                if name in sd:
                    ours[f"attn.{name}"] = sd[name]
        for side in ("encoder", "decoder"):
            load_torch_state_dict(getattr(model, side),
                                  {k[len(side) + 1:]: v for k, v in sd.items() if k.startswith(side + ".")})
        model.load_state_dict(ours, strict=False)
        return model

    def grads_as_rnnkit(self, model: Seq2Seq):
        """torch's gradients in rnnkit's names and layouts ({name: array}), for comparison."""
        saved = {k: v.detach().clone() for k, v in self.state_dict().items()}
        with torch.no_grad():
            for name, prm in self.named_parameters():
                prm.copy_(prm.grad if prm.grad is not None else torch.zeros_like(prm))
        try:
            # The folded LSTM/GRU bias: rnnkit's b gets b_ih + b_hh, so its gradient is torch's b_ih grad
            # (equal to b_hh's, except the GRU's n block, which rnnkit keeps apart as bhn).
            twin = Seq2Seq(model.cfg, dtype=model.dtype)
            sd = {k: v.numpy() for k, v in self.state_dict().items()}
            for side in ("encoder", "decoder"):
                for k in list(sd):
                    if k.startswith(side + ".bias_hh"):
                        b_ih = sd[k.replace("bias_hh", "bias_ih")]
                        if model.cfg.cell == "lstm":
                            sd[k] = np.zeros_like(b_ih)
                        else:
                            H = model.cfg.hidden
                            sd[k] = np.concatenate([np.zeros_like(b_ih[:2 * H]), sd[k][2 * H:]])
            with torch.no_grad():
                self.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
            self.to_rnnkit(twin)
            return {k: v.copy() for k, v in twin.state_dict().items()}
        finally:
            self.load_state_dict(saved)


def loss_fn(logits, tgt_out, smoothing=0.0):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=0,  # 0 = <pad>
                           label_smoothing=smoothing)


def _t(batch):
    return (torch.from_numpy(batch["src"]), torch.from_numpy(batch["src_mask"]),
            torch.from_numpy(batch["tgt_in"]), torch.from_numpy(batch["tgt_out"]))


def main(argv=None):
    from rnnkit.cli.translate import min_freqs
    from rnnkit.data.parallel import build_vocabs, encode_pairs
    from rnnkit.models.seq2seq import Seq2SeqConfig
    from rnnkit.tasks.translate import (BATCHINGS, dev_batches, load_split, make_batches, score,
                                        translate_tokens)
    from rnnkit.train.checkpoint import save_checkpoint, write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--max-words", type=int, default=10)
    ap.add_argument("--min-freq", type=int, default=None, help="as rnnkit's (source 2, target 3)")
    ap.add_argument("--src-min-freq", type=int, default=None)
    ap.add_argument("--tgt-min-freq", type=int, default=None)
    ap.add_argument("--dev-frac", type=float, default=0.02)
    ap.add_argument("--test-frac", type=float, default=0.05)
    ap.add_argument("--max-test", type=int, default=None)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--attention", default="general")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batching", choices=BATCHINGS, default="random", help="as rnnkit's")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.0, help="as rnnkit's --dropout, same places")
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                    help="as rnnkit's: a cosine over --steps, or over the minutes without --steps")
    ap.add_argument("--label-smoothing", type=float, default=0.0, help="as rnnkit's (training loss only)")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    ds = {"kind": "tsv", "path": str(Path(args.data).resolve()), "reverse": args.reverse,
          "max_words": args.max_words, "dev_frac": args.dev_frac, "test_frac": args.test_frac,
          "max_test": args.max_test, "seed": args.split_seed, "tokenizer": "word", "encoding": "utf-8"}
    train_pairs, dev_pairs, test_groups, _ = load_split(
        ds, warn=lambda line: print(f"rnnkit: {line}", file=sys.stderr))
    src_freq, tgt_freq = min_freqs(args)
    src_vocab, tgt_vocab = build_vocabs(train_pairs, src_freq, tgt_min_freq=tgt_freq)
    cfg = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), emb=args.emb, hidden=args.hidden, cell=args.cell,
                        attention=args.attention, dropout=args.dropout, seed=args.seed)
    ours = Seq2Seq(cfg)  # the same initial weights as `rnnkit train translate --seed`
    model = TorchSeq2Seq(cfg).from_rnnkit(ours)
    items = encode_pairs(train_pairs, src_vocab, tgt_vocab)
    dev = dev_batches(encode_pairs(dev_pairs[:2000], src_vocab, tgt_vocab))  # rnnkit's dev batches
    source = make_batches(items, args.batch_size, args.seed, args.batching)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = Schedule(args.schedule, lr=args.lr, total=args.steps or 10**9)  # rnnkit's arithmetic
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "metrics.jsonl", "w")

    def dev_loss():
        model.eval()
        tot = n = 0
        with torch.no_grad():
            for b in dev:
                src, sm, tin, tout = _t(b)
                k = int(b["tgt_mask"].sum())
                tot += float(loss_fn(model(src, sm, tin), tout)) * k
                n += k
        model.train()
        return tot / n

    t0 = time.perf_counter()
    step, best, best_state = 0, None, None
    while True:
        if args.steps and step >= args.steps:
            break
        if time.perf_counter() - t0 >= args.minutes * 60:
            break
        src, sm, tin, tout = _t(source.next_batch())
        spent = None if args.steps else (time.perf_counter() - t0) / (args.minutes * 60)
        for group in opt.param_groups:
            group["lr"] = sched(step + 1, spent)
        opt.zero_grad()
        loss = loss_fn(model(src, sm, tin), tout, args.label_smoothing)
        loss.backward()
        if args.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        if step % 10 == 0:
            log.write(json.dumps({"kind": "train", "step": step, "loss": loss.item(),
                                  "time": round(time.perf_counter() - t0, 2)}) + "\n")
        if step % args.eval_every == 0:
            v = dev_loss()
            log.write(json.dumps({"kind": "eval", "step": step, "val_loss": v,
                                  "time": round(time.perf_counter() - t0, 2)}) + "\n")
            log.flush()
            if best is None or v < best:
                best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
    v = dev_loss()
    if best is None or v < best:
        best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
    elapsed = time.perf_counter() - t0
    log.close()
    model.load_state_dict(best_state)
    model.to_rnnkit(ours)
    config = {"model": asdict(cfg), "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict(),
              "data": ds, "trained_by": "torch baseline (benchmarks/translate_vs_torch.py)"}
    save_checkpoint(run_dir, "best", {f"model.{k}": v for k, v in ours.state_dict().items()}, "translate",
                    {"config": config, "step": step, "best": best, "elapsed": elapsed})
    results = {"train": {"step": step, "elapsed": elapsed, "best_val_loss": best,
                         "threads": torch.get_num_threads()}}
    for beam in sorted({1, args.beam}):
        t1 = time.perf_counter()
        hyps = translate_tokens(ours, src_vocab, tgt_vocab, [s for s, _ in test_groups], beam=beam)
        res = score(hyps, [r for _, r in test_groups])
        res["seconds"] = round(time.perf_counter() - t1, 1)
        results[f"test_beam{beam}"] = res
    write_json_atomic(run_dir / "test.json", results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
