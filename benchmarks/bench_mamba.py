"""One Mamba block, forward + backward, one-token generation and activation memory: rnnkit's cell
against two PyTorch references, on the CPU in float32.

    PYTHONPATH=src python benchmarks/bench_mamba.py [--batch 8] [--length 1024] [--d-model 256]
        [--state 16] [--expand 2] [--conv 4] [--repeats 5] [--steps 100] [--mem-length 4096]
        [--mem-batch 8] [--mem-limit-gb 16] [--ref-mem-length 512] [--torch-threads 0]
        [--mem-torch-threads 1]
        [--no-memory] [--no-generation] [--no-train] [--train-peers torch_ref,torch_pscan] [--json]

The sides, all on the same parameters (rnnkit's `init_params`) and inputs, from zero initial states whose
gradients every side computes (rnnkit's backward always returns them):
    torch_ref    tests/torch_mamba.mamba_layer: mamba_ssm's slow path (RMSNorm, in_proj, conv1d,
                 x_proj, dt_proj) around `selective_scan_ref`, a Python loop over time, autograd.
                 Its backward is quadratic in the length: each step's slice deltaA[:, :, i] (and
                 deltaB_u's) gets a gradient the size of the whole (N, E, T, S) tensor, zeros but
                 one slice, summed; at (8, 1024, 256) one step takes minutes here
    torch_pscan  the same block with mamba.py's selective scan: its Blelloch `pscan` with the
                 hand-written backward, over (B, L, E, S) tensors
    rnnkit       `cell.forward` + `cell.backward`
PyTorch runs on its default thread count for the machine (--torch-threads 0), rnnkit on its own
default. On a machine whose cores other jobs are also using, PyTorch's OpenMP workers wait for each
other: its step then ran several times slower on 2 threads than on 1 (a step at batch 1 20x), so a
run on a shared machine should be read beside one with --torch-threads 1.

Time: rnnkit.bench.interleaved_times, as `rnnkit bench` does: one warm-up call of each side, then
--repeats rounds in which each side runs twice in turn (A A B B C C), the first of each pair untimed
so that each timed call follows a call of its own (PyTorch's spinning OpenMP workers or the other
side's cache contents are gone by then). Reported: the median, and peer/rnnkit, the median over
rounds of the two times of one round (above 1: rnnkit is faster).

Generation: one token at a time at batch 1 and 8, `mamba_step` (Mamba.step's arithmetic) under
torch.no_grad against `cell.step`; each call runs --steps tokens, interleaved as above; reported in
milliseconds per token.

Memory, at --mem-length: each side measured in a fresh Python process (this script with
--memory-child), so that nothing another side allocated or cached is counted. The child builds
parameters and inputs, runs forward + backward once at length 8 (thread pools, compiled kernels and
first-call buffers are not activations), collects garbage, resets the kernel's peak-RSS counter
(writing 5 to /proc/self/clear_refs) and reads the resident set size (VmRSS). Then forward:
kept = VmRSS - base, what forward leaves behind for backward (with its output). Then backward:
peak = VmHWM - base, the most resident at any moment of forward + backward above the base (with the
gradients backward returns: dx, the states' and the parameters'). Resident pages are what the
process touched, so NumPy, rnnkit's C kernels and PyTorch's allocator are all seen alike. Where
clear_refs is refused, getrusage's ru_maxrss stands in for VmHWM; the line says which. For rnnkit,
tracemalloc's peak of the same step is given too (NumPy's arrays only, nothing the C code mallocs).
The batch is the largest of --mem-batch, half of it, ... whose peak for each reference, extrapolated
linearly from a child run at --mem-length/8, stays under --mem-limit-gb; every side runs that batch,
and the output says which it was. torch_ref runs at --ref-mem-length instead (at 4096 its quadratic
backward would take hours), and its peak is also shown scaled to --mem-length: what it keeps grows
linearly with the length (every step's state and the (N, E, T, S) tensors). The children run PyTorch on --mem-torch-threads (1): what a step
keeps does not depend on the thread count, and on a shared machine one thread finishes the long
reference steps many times sooner; their seconds are not a timing comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the PyTorch references live beside the tests using them

PEERS = ("torch_ref", "torch_pscan")


def make_cell(args):
    from rnnkit import cells

    return cells.create("mamba", state_size=args.state, expand=args.expand, conv_width=args.conv)


def make_params(args, cell):
    return cell.init_params(np.random.default_rng(0), args.d_model, args.d_model, np.float32)


def make_inputs(p, N, T, D, seed=1):
    rng = np.random.default_rng(seed)
    K, E = p["conv_w"].shape
    S = p["A_log"].shape[1]
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    dy = rng.standard_normal((T, N, D)).astype(np.float32)
    state = (np.zeros((N, K - 1, E), np.float32), np.zeros((N, E, S), np.float32))
    return x, dy, state


def torch_train_step(scan, p, x, dy, state):
    """A closure running one forward + backward of mamba_layer; it returns (out, dx) of that call."""
    import torch

    from torch_mamba import mamba_layer, torch_params

    tp = torch_params(p)
    tx = torch.tensor(x, requires_grad=True)
    tdy = torch.tensor(dy)
    t0 = [torch.tensor(s, requires_grad=True) for s in state]

    def step():
        for v in (*tp.values(), tx, *t0):
            v.grad = None  # as optimizer.zero_grad(set_to_none=True): no accumulation into old grads
        out, _, _ = mamba_layer(tx, tp, t0[0], t0[1], scan=scan)
        out.backward(tdy)
        return out, tx.grad

    return step


def rnnkit_train_step(cell, p, x, dy, state):
    dstate = tuple(np.zeros_like(s) for s in state)

    def step():
        y, _, cache = cell.forward(x, state, p)
        dx, _, _ = cell.backward(dy, cache, dstate)
        return y, dx

    return step


def train_fns(args, cell, p, N, T):
    x, dy, state = make_inputs(p, N, T, args.d_model)
    fns = {scan_side: torch_train_step(scan_side.split("_")[1], p, x, dy, state)
           for scan_side in PEERS if scan_side in args.train_peers}
    fns["rnnkit"] = rnnkit_train_step(cell, p, x, dy, state)
    return fns


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def agreement(fns):
    """max |side - ref| / max |ref| of the output and dx, ref the first reference timed (torch_ref,
    else torch_pscan): a fast wrong side is no result."""
    ref = next(side for side in PEERS + ("rnnkit",) if side in fns)
    ref_y, ref_dx = (t.detach().numpy() for t in fns[ref]())
    rows = {}
    for side, fn in fns.items():
        if side == ref:
            continue
        y, dx = fn()
        y, dx = (v.detach().numpy() if hasattr(v, "detach") else v for v in (y, dx))
        rows[side] = {"y": _rel(y, ref_y), "dx": _rel(dx, ref_dx), "against": ref}
    return rows


def bench_train(args, cell, p):
    from rnnkit.bench import interleaved_times, same_round_ratio

    fns = train_fns(args, cell, p, args.batch, args.length)
    times = interleaved_times(fns, args.repeats)
    rows = {}
    for side, ts in times.items():
        rows[side] = {"ms": float(np.median(ts)) * 1e3}
        if "rnnkit" in times and side != "rnnkit":
            rows[side]["vs_rnnkit"] = same_round_ratio(ts, times["rnnkit"])
    return rows, agreement(fns)


def bench_generation(args, cell, p, N):
    import torch

    from rnnkit.bench import interleaved_times, same_round_ratio
    from torch_mamba import mamba_step, torch_params

    D, n = args.d_model, args.steps
    x, _, state = make_inputs(p, N, n, D)
    tp = torch_params(p, requires_grad=False)
    tx = torch.tensor(x)

    def run_torch():
        c, s = (torch.tensor(v) for v in state)
        with torch.no_grad():
            for t in range(n):
                _, c, s = mamba_step(tx[t], tp, c, s)

    def run_rnnkit():
        st = state
        for t in range(n):
            _, st = cell.step(x[t], st, p)

    times = interleaved_times({"torch_step": run_torch, "rnnkit": run_rnnkit}, args.repeats)
    rows = {side: {"ms_per_token": float(np.median(ts)) * 1e3 / n} for side, ts in times.items()}
    rows["torch_step"]["vs_rnnkit"] = same_round_ratio(times["torch_step"], times["rnnkit"])
    return rows


# --- memory: one fresh process per measurement -----------------------------------------------------

def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM after clear_refs"
    except OSError:
        return "ru_maxrss (clear_refs refused)"


def memory_child(args):
    """Run in the child: one side's kept and peak MB at (--batch, --length); prints one JSON line."""
    side = args.memory_child
    cell = make_cell(args) if side == "rnnkit" else None
    p = make_params(args, make_cell(args))
    fns_warm = _child_step(side, cell, p, args.batch, 8, args.d_model)
    fns_warm()
    del fns_warm
    fwd, bwd = _child_split(side, cell, p, args.batch, args.length, args.d_model)
    gc.collect()
    method = _reset_peak()
    base = _status_kb("VmRSS")
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    held = fwd()
    kept = _status_kb("VmRSS") - base
    bwd(held)
    seconds = time.perf_counter() - t0
    if method.startswith("VmHWM"):
        peak = _status_kb("VmHWM") - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(base, base_maxrss)
    row = {"side": side, "N": args.batch, "T": args.length, "kept_MB": kept / 1024,
           "peak_MB": peak / 1024, "method": method, "seconds": seconds}
    del held
    if side == "rnnkit":
        import tracemalloc

        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        held = fwd()
        kept = tracemalloc.get_traced_memory()[0] - base
        bwd(held)
        row["tracemalloc_kept_MB"] = kept / 2**20
        row["tracemalloc_peak_MB"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
    print(json.dumps(row))


def _child_split(side, cell, p, N, T, D):
    """(forward, backward) of one side, so that the child can read RSS between them."""
    x, dy, state = make_inputs(p, N, T, D)
    if side == "rnnkit":
        dstate = tuple(np.zeros_like(s) for s in state)

        def fwd():
            return cell.forward(x, state, p)

        def bwd(held):
            return cell.backward(dy, held[2], dstate)

        return fwd, bwd
    import torch

    from torch_mamba import mamba_layer, torch_params

    tp = torch_params(p)
    tx = torch.tensor(x, requires_grad=True)
    tdy = torch.tensor(dy)
    t0 = [torch.tensor(s, requires_grad=True) for s in state]

    def fwd():
        return mamba_layer(tx, tp, t0[0], t0[1], scan=side.split("_")[1])[0]

    def bwd(out):
        out.backward(tdy)

    return fwd, bwd


def _child_step(side, cell, p, N, T, D):
    fwd, bwd = _child_split(side, cell, p, N, T, D)
    return lambda: bwd(fwd())


def run_child(args, side, N, T):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", side,
           "--batch", str(N), "--length", str(T), "--d-model", str(args.d_model),
           "--state", str(args.state), "--expand", str(args.expand), "--conv", str(args.conv),
           "--torch-threads", str(args.mem_torch_threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    print(f"  {side} at (N, T) = ({N}, {T}): {res.stdout.strip()[-200:] or res.stderr[-200:]}",
          file=sys.stderr, flush=True)
    if res.returncode != 0:
        return {"side": side, "N": N, "T": T, "error": (res.stderr or res.stdout).strip()[-400:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_memory(args, sides):
    T = args.mem_length
    probe_T = max(T // 8, 8)
    limit_mb = args.mem_limit_gb * 1024
    ref_T = min(args.ref_mem_length, T)
    N = args.mem_batch
    for side, probe_len in (("torch_pscan", probe_T), ("torch_ref", min(probe_T, ref_T))):
        probe = run_child(args, side, args.mem_batch, probe_len)
        if "error" in probe:
            return {"error": probe}
        upto = T if side == "torch_pscan" else ref_T
        per_row = probe["peak_MB"] * upto / probe_len / args.mem_batch  # MB per batch row
        while N > 1 and per_row * N > limit_mb:
            N //= 2
    rows = {side: run_child(args, side, N, ref_T if side == "torch_ref" else T)
            for side in sides}
    return {"N": N, "T": T, "probe_T": probe_T, "sides": rows}


# --- output ------------------------------------------------------------------------------------

def format_report(res):
    c = res["config"]
    lines = [f"Mamba block (N, T, D) = ({c['N']}, {c['T']}, {c['D']}), E {c['E']}, S {c['S']}, "
             f"K {c['K']}, R {c['R']}, float32, CPU; torch {c['torch']} on {c['torch_threads']} "
             f"threads, rnnkit on {c['rnnkit_threads']}", ""]
    lines.append(f"forward + backward, median of {c['repeats']}:")
    lines.append(f"{'side':12} {'ms':>10} {'peer/rnnkit':>12}")
    for side, r in res["train"].items():
        ratio = f"{r['vs_rnnkit']:12.2f}" if "vs_rnnkit" in r else f"{'-':>12}"
        lines.append(f"{side:12} {r['ms']:10.1f} {ratio}")
    for side, r in res["agreement"].items():
        lines.append(f"  {side} vs {r['against']}: max|diff|/max|ref| y {r['y']:.1e}, "
                     f"dx {r['dx']:.1e}")
    lines += ["", f"generation, {c['steps']} tokens a call, ms per token:",
              f"{'batch':>5} {'side':12} {'ms/token':>10} {'peer/rnnkit':>12}"]
    for N, rows in res["generation"].items():
        for side, r in rows.items():
            ratio = f"{r['vs_rnnkit']:12.2f}" if "vs_rnnkit" in r else f"{'-':>12}"
            lines.append(f"{N:>5} {side:12} {r['ms_per_token']:10.3f} {ratio}")
    mem = res.get("memory")
    if mem:
        lines.append("")
        if "error" in mem:
            lines.append(f"memory: a probe failed: {mem['error']}")
        else:
            rows = mem["sides"]
            method = next((r["method"] for r in rows.values() if "method" in r), "?")
            lines.append(f"activation memory at (N, T) = ({mem['N']}, {mem['T']}), MB above the "
                         f"RSS before forward ({method}), fresh process each:")
            lines.append(f"{'side':12} {'T':>6} {'kept MB':>10} {'peak MB':>10} "
                         f"{'peak at ' + str(mem['T']):>13} {'peak/rnnkit':>12} {'child s':>8}")
            ours = rows.get("rnnkit", {}).get("peak_MB")
            for side, r in rows.items():
                if "error" in r:
                    lines.append(f"{side:12} failed: {r['error']}")
                    continue
                scaled = r["peak_MB"] * mem["T"] / r["T"]  # linear in the length (docstring)
                ratio = f"{scaled / ours:12.2f}" if ours else f"{'-':>12}"
                lines.append(f"{side:12} {r['T']:6d} {r['kept_MB']:10.0f} {r['peak_MB']:10.0f} "
                             f"{scaled:13.0f} {ratio} {r['seconds']:8.1f}")
            if "rnnkit" in rows and "tracemalloc_peak_MB" in rows["rnnkit"]:
                r = rows["rnnkit"]
                lines.append(f"  rnnkit by tracemalloc (NumPy arrays only): kept "
                             f"{r['tracemalloc_kept_MB']:.0f} MB, "
                             f"peak {r['tracemalloc_peak_MB']:.0f} MB")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--conv", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="tokens per generation call")
    ap.add_argument("--mem-length", type=int, default=4096)
    ap.add_argument("--mem-batch", type=int, default=8)
    ap.add_argument("--mem-limit-gb", type=float, default=16.0,
                    help="the most a reference's step may take (the batch is halved to fit)")
    ap.add_argument("--ref-mem-length", type=int, default=512,
                    help="torch_ref's length in the memory section (its backward is quadratic)")
    ap.add_argument("--torch-threads", type=int, default=0, help="0: PyTorch's default")
    ap.add_argument("--mem-torch-threads", type=int, default=1,
                    help="PyTorch's threads in the memory children")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--train-peers", type=lambda v: tuple(v.split(",")), default=PEERS,
                    help="the references timed in forward + backward (torch_ref's backward grows "
                         "with the square of the length: minutes a step at 1024)")
    ap.add_argument("--no-generation", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--memory-child", choices=PEERS + ("rnnkit",), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.memory_child:
        return memory_child(args)

    from rnnkit import kernels

    cell = make_cell(args)
    p = make_params(args, cell)
    K, E = p["conv_w"].shape
    res = {"config": {"N": args.batch, "T": args.length, "D": args.d_model, "E": E,
                      "S": p["A_log"].shape[1], "K": K, "R": p["W_dt"].shape[0],
                      "repeats": args.repeats, "steps": args.steps,
                      "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "rnnkit_threads": kernels.threads()}}
    print("forward + backward ...", file=sys.stderr, flush=True)  # a step can take a minute
    res["train"], res["agreement"] = ({}, {}) if args.no_train else bench_train(args, cell, p)
    print(json.dumps(res["train"]), file=sys.stderr, flush=True)
    print("generation ...", file=sys.stderr, flush=True)
    res["generation"] = ({} if args.no_generation else
                         {N: bench_generation(args, cell, p, N) for N in (1, 8)})
    if not args.no_memory:
        print("memory ...", file=sys.stderr, flush=True)
        res["memory"] = bench_memory(args, PEERS + ("rnnkit",))
    print(json.dumps(res, indent=1) if args.json else format_report(res))


if __name__ == "__main__":
    sys.exit(main())
