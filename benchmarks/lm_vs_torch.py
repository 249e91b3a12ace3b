"""Validation loss against wall-clock minutes: rnnkit's character LSTM vs the same model in PyTorch.

Both train the same model (embedding -> 2-layer LSTM -> linear, identical initial weights copied with
`rnnkit.interop`) on the same batches (rnnkit's `StreamBatches`, same seed: truncated BPTT over N parallel
streams) with the same optimizer (Adam, same lr, global-norm clip), on tinyshakespeare with the last 10%
for validation. The clock counts training time only: every `--eval-minutes` of training, the loss on the
first `--eval-chars` characters of the validation split is measured (outside the clock); at the end, the
loss on the whole validation split. Each stops after `--minutes` of training (or at `--target`, if given).

Usage (each implementation limited to one thread, run side by side so both see the same machine load):
    python benchmarks/lm_vs_torch.py both --out /tmp/lm_bench          # two processes at once
    python benchmarks/lm_vs_torch.py run --impl rnnkit --log /tmp/lm_bench/rnnkit.jsonl
    python benchmarks/lm_vs_torch.py report /tmp/lm_bench               # markdown table of both logs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path



def _threads_arg(argv):
    """`--threads N` from the command line, read before NumPy is imported (its BLAS reads the env once)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


_N_THREADS = _threads_arg(sys.argv)
THREADS = {k: _N_THREADS or "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
for _k, _v in THREADS.items():  # before NumPy is imported, so its BLAS starts with that many threads
    if _N_THREADS:
        os.environ[_k] = _v
    else:
        os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("RNNKIT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")) \
    / "tinyshakespeare" / "input.txt"


def load_data(path):
    from rnnkit.data.text import CharVocab, read_text, split_ids

    text = read_text(path)
    vocab = CharVocab.from_text(text)
    train, val = split_ids(vocab.encode(text), 0.1)
    return vocab, train, val


def build_rnnkit(args, V):
    from rnnkit.models.lm import CharLM, LMConfig

    return CharLM(LMConfig(V, cell="lstm", embed=args.embed, hidden=args.hidden, layers=args.layers,
                           dropout=args.dropout, seed=args.seed))


def build_torch(args, V, init):
    import torch
    from torch import nn

    from rnnkit.interop import to_torch_state_dict

    class TorchLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, args.embed)
            self.rnn = nn.LSTM(args.embed, args.hidden, args.layers, dropout=args.dropout)
            self.drop = nn.Dropout(args.dropout)
            self.head = nn.Linear(args.hidden, V)

        def forward(self, x, state=None):
            out, state = self.rnn(self.embed(x), state)
            return self.head(self.drop(out)), state

    m = TorchLM()
    with torch.no_grad():  # the same initial weights as the rnnkit model
        m.embed.weight.copy_(torch.from_numpy(init.embed.params["W"]))
        for k, v in to_torch_state_dict(init.rnn).items():
            getattr(m.rnn, k).copy_(torch.from_numpy(np.ascontiguousarray(v)))
        m.head.weight.copy_(torch.from_numpy(init.head.params["W"].T.copy()))
        m.head.bias.copy_(torch.from_numpy(init.head.params["b"]))
    return m


class RnnkitTrainer:
    def __init__(self, args, V, model):
        from rnnkit.models.lm import evaluate_stream
        from rnnkit.optim import Adam, clip_grad_norm, collect_params
        from rnnkit.tasks.lm import LMTask

        self.model, self.task = model, LMTask(model)
        self.params = collect_params(model=model)
        self.opt = Adam(self.params, lr=args.lr)
        self.clip, self._clip_fn, self._eval = args.clip, clip_grad_norm, evaluate_stream

    def step(self, batch):
        self.opt.zero_grad()
        loss = self.task.train_step(batch)["loss"]
        self._clip_fn(self.params, self.clip)
        self.opt.step()
        return loss

    def evaluate(self, ids):
        self.model.eval()
        try:
            return self._eval(self.model, ids)["val_loss"]
        finally:
            self.model.train()


class TorchTrainer:
    def __init__(self, args, V, model):
        import torch

        torch.set_num_threads(args.threads)
        self.torch, self.model = torch, model
        self.opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.clip = args.clip
        self.state = None

    def step(self, batch):
        torch = self.torch
        x = torch.from_numpy(batch.x.astype(np.int64))
        y = torch.from_numpy(batch.y.astype(np.int64))
        if batch.reset or self.state is None:
            self.state = None
        logits, state = self.model(x, self.state)
        self.state = tuple(s.detach() for s in state)  # truncated BPTT: values carried, no gradient
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return loss.item()

    def evaluate(self, ids, batch=64, chunk=256, min_stream=512):
        # the same streams and chunks as rnnkit.models.lm.evaluate_stream
        torch = self.torch
        self.model.eval()
        n = len(ids) - 1
        batch = max(1, min(batch, n // min_stream))
        L = n // batch
        x_all = torch.from_numpy(ids[: batch * L].reshape(batch, L).T.astype(np.int64).copy())
        y_all = torch.from_numpy(ids[1: batch * L + 1].reshape(batch, L).T.astype(np.int64).copy())
        total, count, state = 0.0, 0, None
        with torch.no_grad():
            for p in range(0, L, chunk):
                logits, state = self.model(x_all[p:p + chunk], state)
                y = y_all[p:p + chunk]
                total += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1), reduction="sum"))
                count += y.numel()
        self.model.train()
        return total / count


def run(args):
    from rnnkit.train.batches import StreamBatches

    vocab, train_ids, val_ids = load_data(args.data)
    V = len(vocab)
    init = build_rnnkit(args, V)
    if args.impl == "rnnkit":
        trainer = RnnkitTrainer(args, V, init)
    else:
        trainer = TorchTrainer(args, V, build_torch(args, V, init))
    source = StreamBatches(train_ids, args.batch, args.seq_len, seed=args.seed)
    eval_ids = val_ids[: args.eval_chars + 1] if args.eval_chars > 0 else val_ids  # 0: the whole split
    log = open(args.log, "w", encoding="utf-8")

    def write(rec):
        rec.update(impl=args.impl, wall_min=round((time.perf_counter() - t_wall) / 60, 3))
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(json.dumps(rec), flush=True)

    t_wall = time.perf_counter()
    write({"kind": "start", "config": {k: v for k, v in vars(args).items() if k != "func"},
           "vocab": V, "train_chars": int(len(train_ids)), "val_chars": int(len(val_ids)),
           "pid": os.getpid(), "threads": {k: os.environ.get(k) for k in THREADS}})
    train_s, cpu_s, step, tokens, window = 0.0, 0.0, 0, 0, []
    next_eval = args.eval_minutes * 60
    reached = None
    while train_s < args.minutes * 60:
        batch = source.next_batch()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainer.step(batch)
        cpu_s += time.process_time() - c0
        train_s += (time.perf_counter() - t0) if args.clock == "wall" else (time.process_time() - c0)
        step += 1
        tokens += batch.x.size
        window.append(loss)
        if train_s >= next_eval or train_s >= args.minutes * 60:
            val = trainer.evaluate(eval_ids)
            write({"kind": "eval", "train_min": round(train_s / 60, 3), "cpu_min": round(cpu_s / 60, 3),
                   "step": step, "tokens": tokens,
                   "train_loss": float(np.mean(window)), "val_loss": val,
                   "tokens_per_s": round(tokens / train_s, 1)})
            window = []
            next_eval += args.eval_minutes * 60
            if args.target and val <= args.target and reached is None:
                reached = train_s / 60
                if args.stop_at_target:
                    break
    full = trainer.evaluate(val_ids)
    write({"kind": "final", "train_min": round(train_s / 60, 3), "cpu_min": round(cpu_s / 60, 3),
           "step": step, "tokens": tokens,
           "full_val_loss": full, "tokens_per_s": round(tokens / train_s, 1), "reached_target_min": reached})
    log.close()


def both(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **THREADS}
    common = [sys.executable, __file__, "run", "--data", str(args.data), "--minutes", str(args.minutes),
              "--eval-minutes", str(args.eval_minutes), "--eval-chars", str(args.eval_chars),
              "--clock", args.clock, "--threads", str(args.threads)] + [a for a in args.model_args if a != "--"]
    if args.target:
        common += ["--target", str(args.target)] + (["--stop-at-target"] if args.stop_at_target else [])
    procs = []
    for impl in ("rnnkit", "torch"):
        with open(out / f"{impl}.out", "w") as f:
            procs.append(subprocess.Popen(common + ["--impl", impl, "--log", str(out / f"{impl}.jsonl")],
                                          env=env, stdout=f, stderr=subprocess.STDOUT))
        if args.sequential:  # each gets the whole machine in turn
            procs[-1].wait()
    for p in procs:
        p.wait()
    report(argparse.Namespace(dir=out))


def report(args):
    rows = {}
    for impl in ("rnnkit", "torch"):
        p = Path(args.dir) / f"{impl}.jsonl"
        if p.exists():
            rows[impl] = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    evals = {k: [r for r in v if r["kind"] == "eval"] for k, v in rows.items()}
    n = max((len(v) for v in evals.values()), default=0)
    print("| training minutes | rnnkit val loss | rnnkit steps | rnnkit CPU min | PyTorch val loss | "
          "PyTorch steps | PyTorch CPU min |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(n):
        cells = []
        for impl in ("rnnkit", "torch"):
            e = evals.get(impl, [])
            cells.append(f"{e[i]['val_loss']:.3f} | {e[i]['step']} | {e[i].get('cpu_min', 0):.1f}"
                         if i < len(e) else "- | - | -")
        tmin = next((evals[k][i]["train_min"] for k in evals if i < len(evals[k])), 0)
        print(f"| {tmin:.1f} | {cells[0]} | {cells[1]} |")
    for impl, v in rows.items():
        fin = [r for r in v if r["kind"] == "final"]
        if fin:
            f = fin[0]
            print(f"\n{impl}: {f['step']} steps, {f['tokens']:,} characters in {f['train_min']:.1f} training "
                  f"minutes, {f.get('cpu_min', 0):.1f} CPU minutes ({f['tokens_per_s']:,.0f} chars/s), full validation loss {f['full_val_loss']:.4f} "
                  f"nats/char; wall {f['wall_min']:.1f} min")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "both"):
        s = sub.add_parser(name)
        s.add_argument("--data", default=str(DEFAULT_DATA))
        s.add_argument("--minutes", type=float, default=30.0)
        s.add_argument("--eval-minutes", type=float, default=3.0)
        s.add_argument("--eval-chars", type=int, default=30000)
        s.add_argument("--target", type=float, default=None,
                       help="validation loss to report the first crossing of")
        s.add_argument("--stop-at-target", action="store_true", help="stop at the first crossing")
        s.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                       help="what --minutes counts: wall-clock training time, or this process's CPU time")
        s.add_argument("--threads", type=int, default=1,
                       help="BLAS / torch threads of each implementation (default 1)")
        if name == "run":
            s.add_argument("--impl", choices=["rnnkit", "torch"], required=True)
            s.add_argument("--log", required=True)
            s.add_argument("--hidden", type=int, default=512)
            s.add_argument("--layers", type=int, default=2)
            s.add_argument("--embed", type=int, default=64)
            s.add_argument("--batch", type=int, default=32)
            s.add_argument("--seq-len", type=int, default=64)
            s.add_argument("--lr", type=float, default=2e-3)
            s.add_argument("--clip", type=float, default=5.0)
            s.add_argument("--dropout", type=float, default=0.0)
            s.add_argument("--seed", type=int, default=0)
            s.set_defaults(func=run)
        else:
            s.add_argument("--out", required=True)
            s.add_argument("--sequential", action="store_true",
                           help="run rnnkit, then PyTorch, each with the machine to itself")
            s.add_argument("model_args", nargs=argparse.REMAINDER,
                           help="after --: model and optimizer flags passed to both runs "
                                "(e.g. -- --dropout 0.2)")
            s.set_defaults(func=both)
    r = sub.add_parser("report")
    r.add_argument("dir")
    r.set_defaults(func=report)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
