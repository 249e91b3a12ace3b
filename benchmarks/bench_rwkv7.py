"""One RWKV-7 block, forward + backward, and one-token generation through a 2-layer model: rnnkit's
cell against PyTorch references and the `rwkv` package, on the CPU in float32.

    PYTHONPATH=src python benchmarks/bench_rwkv7.py [--batch 8] [--length 1024] [--channels 256]
        [--head-size 64] [--layer 1] [--chunk 16] [--repeats 3] [--steps 100] [--gen-layers 2]
        [--vocab 256] [--gen-batches 1,8] [--torch-threads 2] [--rwkv-package PATH]
        [--no-train] [--no-generation] [--json]

The sides, on the same parameters (tests/torch_rwkv7.random_params: every parameter random, so that
no path is a multiplication by zero) and inputs:
  training, one block at (--batch, --length, --channels), head size --head-size, layer --layer (1:
  with the value residual from a given v_first), from a zero initial state whose gradient every side
  computes (rnnkit's backward returns it):
    torch_ref    tests/torch_rwkv7.block: model.py's slow PyTorch path around rwkv_v7_demo.py's
                 WKV loop (a Python loop over time), autograd, batch-first as the reference
    rnnkit       rnnkit.cells.rwkv7.rwkv7_forward + rwkv7_backward, time-major
  generation, one token at a time through embedding, ln0, --gen-layers blocks, ln_out and head
  (vocabulary --vocab), --steps tokens a call, at each batch of --gen-batches:
    rwkv_pkg     the `rwkv` pip package's RWKV-7 RNN mode (RWKV_V7_ON=1, strategy "cpu fp32",
                 TorchScript), batch 1 only (its forward takes one sequence), on the weights saved in
                 the reference's checkpoint layout. Found on the path or under --rwkv-package (a
                 `pip install --no-deps --target DIR rwkv` folder); left out when absent
    torch_step   tests/torch_rwkv7.step (the block at T = 1) under torch.no_grad
    numpy_rnn    tests/rwkv7_rnn_numpy.model_step: rwkv_v7_numpy.py's RNN mode
    rnnkit       rnnkit.cells.rwkv7.rwkv7_step per layer, the embedding, norms and head in NumPy
Before timing, each side's output (training: out and dx; generation: the logits after the first call)
is compared with a reference (torch_ref; the float64 RNN mode): a fast wrong side is no result.
While rnnkit's RWKV-7 block is not there, the rnnkit side is left out, with a line saying so.

PyTorch runs on --torch-threads (2, this project's 2-core machines; 0: its default), rnnkit on its
own default. Time: rnnkit.bench.interleaved_times (one warm-up call of each side, then --repeats
rounds of each side twice in turn, the first untimed, so that each timed call follows one of its
own), reported as the median; peer/rnnkit is the median over rounds of one round's two times (above
1: rnnkit is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the references live beside the tests using them


def rnnkit_side():
    """rnnkit's (rwkv7_forward, rwkv7_backward, rwkv7_step), or None while they are not written."""
    try:
        from rnnkit.cells.rwkv7 import rwkv7_backward, rwkv7_forward, rwkv7_step
    except ImportError as e:
        print(f"rnnkit side missing ({e}): timing the peers only", file=sys.stderr)
        return None
    return rwkv7_forward, rwkv7_backward, rwkv7_step


def _f32(p):
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in p.items()}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# --- training: forward + backward of one block ------------------------------------------------------

def train_inputs(args):
    from torch_rwkv7 import random_params

    C, hs, N, T = args.channels, args.head_size, args.batch, args.length
    rng = np.random.default_rng(1)
    p = _f32(random_params(C, hs, seed=0))
    x = rng.standard_normal((T, N, C)).astype(np.float32)
    dy = rng.standard_normal((T, N, C)).astype(np.float32)
    v_first = rng.standard_normal((T, N, C)).astype(np.float32) if args.layer > 0 else None
    H = C // hs
    state = (np.zeros((N, C), np.float32), np.zeros((N, H, hs, hs), np.float32),
             np.zeros((N, C), np.float32))
    return p, x, dy, v_first, state


def torch_train_step(args, p, x, dy, v_first, state):
    """A closure running one forward + backward of torch_rwkv7.block; returns (out, dx) time-major."""
    import torch

    from torch_rwkv7 import block, torch_params

    tp = torch_params(p, dtype=torch.float32)
    tx = torch.tensor(x.transpose(1, 0, 2).copy(), requires_grad=True)
    tdy = torch.tensor(dy.transpose(1, 0, 2).copy())
    tv = (None if v_first is None
          else torch.tensor(v_first.transpose(1, 0, 2).copy(), requires_grad=True))
    t0 = [torch.tensor(s, requires_grad=True) for s in state]

    def step():
        for v in (*tp.values(), tx, *t0, *([] if tv is None else [tv])):
            v.grad = None  # as optimizer.zero_grad(set_to_none=True)
        out, _, _ = block(tx, tp, tv, args.layer, args.head_size, tuple(t0))
        out.backward(tdy)
        return out.detach().numpy().transpose(1, 0, 2), tx.grad.numpy().transpose(1, 0, 2)

    return step


def rnnkit_train_step(args, fns, p, x, dy, v_first, state):
    rwkv7_forward, rwkv7_backward, _ = fns

    def step():
        out, _, cache = rwkv7_forward(x, state, p, v_first=v_first, chunk=args.chunk)
        dx, _, _, _ = rwkv7_backward(dy, cache)
        return out, dx

    return step


def bench_train(args, ours):
    from rnnkit.bench import interleaved_times, same_round_ratio

    p, x, dy, v_first, state = train_inputs(args)
    fns = {"torch_ref": torch_train_step(args, p, x, dy, v_first, state)}
    if ours is not None:
        fns["rnnkit"] = rnnkit_train_step(args, ours, p, x, dy, v_first, state)
    agreement = {}
    if "rnnkit" in fns:
        ref_y, ref_dx = fns["torch_ref"]()
        y, dx = fns["rnnkit"]()
        agreement["rnnkit"] = {"y": _rel(y, ref_y), "dx": _rel(dx, ref_dx), "against": "torch_ref"}
    times = interleaved_times(fns, args.repeats)
    rows = {}
    for side, ts in times.items():
        rows[side] = {"ms": float(np.median(ts)) * 1e3}
        if "rnnkit" in times and side != "rnnkit":
            rows[side]["vs_rnnkit"] = same_round_ratio(ts, times["rnnkit"])
    return rows, agreement


# --- generation: one token at a time through a small model ------------------------------------------

def import_rwkv_package(path):
    """The `rwkv` package's RWKV class with RWKV-7 on, or None. The environment variable is read at
    import, so it is set first."""
    os.environ["RWKV_V7_ON"] = "1"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    if path:
        sys.path.insert(0, str(path))
    import warnings

    try:  # the package prints a banner: kept off stdout, where --json goes
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            from rwkv.model import RWKV
    except Exception as e:  # absent, or a version without RWKV-7
        print(f"rwkv package not used ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    return RWKV


def gen_sides(args, model, ours, N, tmpdir, rwkv_cls):
    """{side: run(tokens (steps, N)) -> logits after the last token (N, V)} for batch N."""
    import torch

    import rwkv7_rnn_numpy as rn
    from torch_rwkv7 import save_reference_checkpoint, step, torch_params, zero_state

    C, hs, L = args.channels, args.head_size, args.gen_layers
    sides = {}
    if rwkv_cls is not None and N == 1:
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            stem = save_reference_checkpoint(model, Path(tmpdir) / "rwkv7")
            pkg = rwkv_cls(model=stem, strategy="cpu fp32")

        def run_pkg(tokens):
            state = None
            for t in range(tokens.shape[0]):
                logits, state = pkg.forward(int(tokens[t, 0]), state)
            return logits.numpy()[None]

        sides["rwkv_pkg"] = run_pkg

    tm = {k: torch.tensor(v) for k, v in model.items() if k != "layers"}
    tl = [torch_params(p, requires_grad=False, dtype=torch.float32) for p in model["layers"]]
    F = torch.nn.functional

    def run_torch(tokens):
        states = [zero_state(N, C, hs, torch.float32) for _ in range(L)]
        tok = torch.tensor(tokens)
        with torch.no_grad():
            for t in range(tokens.shape[0]):
                x = F.layer_norm(tm["emb"][tok[t]], (C,), tm["ln0_w"], tm["ln0_b"], eps=1e-5)
                v_first = None
                for layer, p in enumerate(tl):
                    x, v_first, states[layer] = step(x, p, v_first, layer, hs, states[layer])
                logits = F.layer_norm(x, (C,), tm["ln_out_w"], tm["ln_out_b"], eps=1e-5) @ tm["head"]
        return logits.numpy()

    sides["torch_step"] = run_torch

    def run_numpy(tokens):
        states = [rn.zero_state(N, C, hs, np.float32) for _ in range(L)]
        for t in range(tokens.shape[0]):
            logits, states = rn.model_step(model, tokens[t], hs, states)
        return logits

    sides["numpy_rnn"] = run_numpy

    if ours is not None:
        rwkv7_step = ours[2]

        def run_rnnkit(tokens):
            states = [rn.zero_state(N, C, hs, np.float32) for _ in range(L)]
            for t in range(tokens.shape[0]):
                x = rn.layer_norm(model["emb"][tokens[t]], model["ln0_w"], model["ln0_b"])
                v_first = None
                for layer, p in enumerate(model["layers"]):
                    x, states[layer], v_first = rwkv7_step(x, states[layer], p, v_first=v_first)
                logits = rn.layer_norm(x, model["ln_out_w"], model["ln_out_b"]) @ model["head"]
            return logits

        sides["rnnkit"] = run_rnnkit
    return sides


def bench_generation(args, ours, rwkv_cls):
    import rwkv7_rnn_numpy as rn
    from rnnkit.bench import interleaved_times, same_round_ratio

    model64 = rn.random_model(args.vocab, args.channels, args.gen_layers, args.head_size, seed=5)
    model = {k: (v if k == "layers" else v.astype(np.float32)) for k, v in model64.items()}
    model["layers"] = [_f32(p) for p in model64["layers"]]
    res, agreement = {}, {}
    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmpdir:
        for N in args.gen_batches:
            tokens = rng.integers(0, args.vocab, (args.steps, N))
            sides = gen_sides(args, model, ours, N, tmpdir, rwkv_cls)
            states = [rn.zero_state(N, args.channels, args.head_size) for _ in range(args.gen_layers)]
            for t in range(args.steps):
                ref, states = rn.model_step(model64, tokens[t], args.head_size, states)
            agreement[N] = {side: _rel(fn(tokens), ref) for side, fn in sides.items()}
            times = interleaved_times({k: (lambda f=f: f(tokens)) for k, f in sides.items()},
                                      args.repeats)
            rows = {}
            for side, ts in times.items():
                ms = float(np.median(ts)) * 1e3 / args.steps
                rows[side] = {"ms_per_token": ms, "tokens_per_s": N * 1e3 / ms}
                if "rnnkit" in times and side != "rnnkit":
                    rows[side]["vs_rnnkit"] = same_round_ratio(ts, times["rnnkit"])
            res[N] = rows
    return res, agreement


# --- output -------------------------------------------------------------------------------------

def format_report(res):
    c = res["config"]
    m = res["machine"]
    lines = [f"RWKV-7 block (N, T, C) = ({c['N']}, {c['T']}, {c['C']}), head size {c['hs']}, "
             f"layer {c['layer']}, float32, CPU {m.get('cpu')} ({m.get('cores')} cores); torch "
             f"{m.get('torch')} on {c['torch_threads']} threads, rnnkit on {m['rnnkit_threads']}"]
    if not c["rnnkit"]:
        lines.append("rnnkit side missing (rnnkit.cells.rwkv7 has no rwkv7_forward yet): peers only")
    if res["train"]:
        lines += ["", f"forward + backward, median of {c['repeats']}:",
                  f"{'side':12} {'ms':>10} {'peer/rnnkit':>12}"]
        for side, r in res["train"].items():
            ratio = f"{r['vs_rnnkit']:12.2f}" if "vs_rnnkit" in r else f"{'-':>12}"
            lines.append(f"{side:12} {r['ms']:10.1f} {ratio}")
        for side, r in res["train_agreement"].items():
            lines.append(f"  {side} vs {r['against']}: max|diff|/max|ref| y {r['y']:.1e}, "
                         f"dx {r['dx']:.1e}")
    if res["generation"]:
        lines += ["", f"generation, {c['gen_layers']} layers, vocabulary {c['vocab']}, "
                      f"{c['steps']} tokens a call, median of {c['repeats']}:",
                  f"{'batch':>5} {'side':12} {'ms/token':>10} {'tokens/s':>10} {'peer/rnnkit':>12}"
                  f" {'logits vs f64':>14}"]
        for N, rows in res["generation"].items():
            for side, r in rows.items():
                ratio = f"{r['vs_rnnkit']:12.2f}" if "vs_rnnkit" in r else f"{'-':>12}"
                err = res["generation_agreement"][N][side]
                lines.append(f"{N:>5} {side:12} {r['ms_per_token']:10.3f} "
                             f"{r['tokens_per_s']:10.0f} {ratio} {err:14.1e}")
        if not c["rwkv_package"]:
            lines.append("  (rwkv package not found: --rwkv-package DIR, or pip install --no-deps "
                         "rwkv)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--layer", type=int, default=1,
                    help="the block's index: 0 computes v_first, above 0 reads it")
    ap.add_argument("--chunk", type=int, default=16, help="rnnkit's steps between kept states")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100, help="tokens per generation call")
    ap.add_argument("--gen-layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--gen-batches", type=lambda v: [int(b) for b in v.split(",")], default=[1, 8])
    ap.add_argument("--torch-threads", type=int, default=2, help="0: PyTorch's default")
    ap.add_argument("--rwkv-package", type=Path, default=None,
                    help="a folder holding the rwkv package (pip install --target)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-generation", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.channels % args.head_size:
        print(f"bench_rwkv7: --channels {args.channels} is not a multiple of --head-size "
              f"{args.head_size}", file=sys.stderr)
        return 2
    import torch

    from rnnkit.bench import machine_info

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    ours = rnnkit_side()
    rwkv_cls = None if args.no_generation else import_rwkv_package(args.rwkv_package)
    res = {"config": {"N": args.batch, "T": args.length, "C": args.channels, "hs": args.head_size,
                      "layer": args.layer, "chunk": args.chunk, "repeats": args.repeats,
                      "steps": args.steps, "gen_layers": args.gen_layers, "vocab": args.vocab,
                      "torch_threads": torch.get_num_threads(), "rnnkit": ours is not None,
                      "rwkv_package": rwkv_cls is not None},
           "machine": machine_info()}
    res["train"], res["train_agreement"] = {}, {}
    if not args.no_train:
        print("forward + backward ...", file=sys.stderr, flush=True)
        res["train"], res["train_agreement"] = bench_train(args, ours)
    res["generation"], res["generation_agreement"] = {}, {}
    if not args.no_generation:
        print("generation ...", file=sys.stderr, flush=True)
        res["generation"], res["generation_agreement"] = bench_generation(args, ours, rwkv_cls)
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
