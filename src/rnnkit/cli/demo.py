"""`rnnkit demo`: train a tiny LSTM on a generated task and print its falling loss.

The task: read a random sequence of digits and, at every step, output the digit seen `lag` steps ago;
only a model that carries information in its state can solve it.
"""

from __future__ import annotations

import json
import time

import numpy as np

from rnnkit.errors import UserError
from rnnkit.layers import LSTM, Embedding, Linear
from rnnkit.functional import softmax_cross_entropy


def register(sub, train_sub):
    p = sub.add_parser("demo", help="train a tiny LSTM on a generated recall task")
    p.add_argument("--steps", type=int, default=300, help="training updates")
    p.add_argument("--lag", type=int, default=3, help="how many steps back the target digit lies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the loss log as JSON")
    p.set_defaults(func=run)


def recall_demo(steps=300, lag=3, seed=0, T=20, N=32, V=10, H=64, lr=0.01, log_every=25):
    """Train and return a list of (step, loss). Adam written inline to keep this demo self-contained."""
    rng = np.random.default_rng(seed)
    emb, lstm, head = Embedding(V, 16, seed=seed), LSTM(16, H, seed=seed + 1), Linear(H, V, seed=seed + 2)
    params = [(p, g) for m in (emb, lstm, head) for _, p, g in m.named_parameters()]
    m1 = [np.zeros_like(p) for p, _ in params]
    m2 = [np.zeros_like(p) for p, _ in params]
    log = []
    for step in range(1, steps + 1):
        x = rng.integers(0, V, (T, N))
        y = np.zeros_like(x)
        y[lag:] = x[:-lag]
        mask = np.zeros((T, N), bool)
        mask[lag:] = True  # no target before `lag` digits have been seen
        for m in (emb, lstm, head):
            m.zero_grad()
        out, _ = lstm.forward(emb.forward(x))
        loss, dlogits = softmax_cross_entropy(head.forward(out), y, mask)
        dx, _ = lstm.backward(head.backward(dlogits))
        emb.backward(dx)
        for k, (p, g) in enumerate(params):
            m1[k] = 0.9 * m1[k] + 0.1 * g
            m2[k] = 0.999 * m2[k] + 0.001 * g * g
            p -= lr * (m1[k] / (1 - 0.9**step)) / (np.sqrt(m2[k] / (1 - 0.999**step)) + 1e-8)
        if step % log_every == 0 or step == 1:
            log.append((step, loss))
    return log


def run(args):
    if args.steps < 1:
        raise UserError(f"--steps: expected a positive integer, got {args.steps}")
    if not 1 <= args.lag <= 10:
        raise UserError(f"--lag: expected 1..10, got {args.lag}")
    t0 = time.perf_counter()
    log = recall_demo(args.steps, args.lag, args.seed, log_every=1 if args.json else 25)
    if args.json:
        print(json.dumps({"lag": args.lag, "log": [{"step": s, "loss": l} for s, l in log]}))
        return
    print(f"LSTM learning to recall the digit seen {args.lag} steps ago (chance: {np.log(10):.3f} nats)")
    for step, loss in log:
        print(f"step {step:5d}  loss {loss:.4f}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
