"""Single-stream sampling speed: characters per second of a 2-layer LSTM (batch 1), rnnkit vs PyTorch.

    python benchmarks/bench_sampling.py [--chars 1000] [--hidden 512] [--layers 2] [--vocab 65] [--json]

Each side: embedding row -> LSTM one step (state carried) -> linear -> softmax -> draw the next character.
rnnkit uses `LSTM.step` (no sequence buffers, the weights not rescanned at every step); PyTorch steps
`nn.LSTM` one character at a time under `torch.no_grad()`. The two run interleaved in rounds of 100
characters in the same process (the machine may be shared); the median round rate is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from rnnkit import LSTM


def rnnkit_sampler(V, H, L, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((V, H)).astype(np.float32)
    lstm = LSTM(H, H, num_layers=L, seed=seed)
    W = (rng.standard_normal((H, V)) / np.sqrt(H)).astype(np.float32)
    b = np.zeros(V, np.float32)
    state = [None, 0]

    def run(n):
        s, c = state
        for _ in range(n):
            h, s = lstm.step(emb[c:c + 1], s)
            z = h[0] @ W + b
            p = np.exp(z - z.max())
            u = rng.random() * p.sum()
            c = min(int(np.searchsorted(np.cumsum(p), u)), V - 1)
        state[:] = [s, c]

    return run


def torch_sampler(V, H, L, seed=0):
    import torch

    torch.manual_seed(seed)
    emb, lstm, lin = torch.nn.Embedding(V, H), torch.nn.LSTM(H, H, L), torch.nn.Linear(H, V)
    state = [None, torch.zeros(1, 1, dtype=torch.long)]

    def run(n):
        s, c = state
        with torch.no_grad():
            for _ in range(n):
                out, s = lstm(emb(c), s)
                p = torch.softmax(lin(out[0, 0]), -1)
                c = torch.multinomial(p, 1).view(1, 1)
        state[:] = [s, c]

    return run


def measure(chars=1000, H=512, L=2, V=65, round_chars=100):
    sides = {"rnnkit": rnnkit_sampler(V, H, L)}
    try:
        sides["torch"] = torch_sampler(V, H, L)
    except ImportError:
        pass
    for run in sides.values():
        run(10)  # warm-up
    rates = {k: [] for k in sides}
    done = 0
    while done < chars:
        n = min(round_chars, chars - done)
        for k, run in sides.items():
            t0 = time.perf_counter()
            run(n)
            rates[k].append(n / (time.perf_counter() - t0))
        done += n
    row = {"chars": chars, "hidden": H, "layers": L, "vocab": V}
    for k, v in rates.items():
        row[f"{k}_chars_per_s"] = float(np.median(v))
    if "torch" in rates:
        row["speedup"] = row["rnnkit_chars_per_s"] / row["torch_chars_per_s"]
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    row = measure(args.chars, args.hidden, args.layers, args.vocab)
    if args.json:
        print(json.dumps(row, indent=1))
    else:
        print(", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    sys.exit(main())
