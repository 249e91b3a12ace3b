"""Timing of forward + backward against PyTorch in the same process (used by `rnnkit bench` and
`benchmarks/`). PyTorch is optional: without it only rnnkit's times are printed."""

from __future__ import annotations

import platform
import time

import numpy as np

from rnnkit.layers.recurrent import make_recurrent

# (T, N, D, H): the shapes the foundation and speed issues name.
CONFIGS = [(100, 32, 128, 128), (100, 32, 256, 256), (100, 64, 512, 512), (50, 1, 64, 64)]


def _rnnkit_step(cell, T, N, D, H, precision="32"):
    layer = make_recurrent(cell, D, H, precision=precision)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    dout = rng.standard_normal((T, N, H)).astype(np.float32)

    def step():
        layer.forward(x)
        layer.backward(dout)

    return step


def _torch_step(cell, T, N, D, H, bf16=None):
    """PyTorch's forward + backward of the same cell: float32 (bf16 None), under bf16 autocast
    ("autocast": float32 weights, the products in bf16) or a module and input in bf16 ("module")."""
    import torch

    from rnnkit import cells

    c = cells.create(cell)  # the PyTorch module of the same cell (RNN_TANH and RNN_RELU: nn.RNN)
    m = getattr(torch.nn, c.torch_mode.split("_")[0])(D, H, **c.torch_kwargs())
    dtype = torch.bfloat16 if bf16 == "module" else torch.float32
    m = m.to(dtype)
    x = torch.randn(T, N, D, dtype=dtype, requires_grad=True)
    dout = torch.randn(T, N, H, dtype=dtype)

    def step():
        if bf16 == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = m(x)
            out.float().backward(dout)
        else:
            out, _ = m(x)
            out.backward(dout)

    return step


def interleaved_times(fns: dict, repeats: int, settle: int = 1) -> dict:
    """Seconds of each function in each of `repeats` rounds, run in turns (A B A B ...) after one
    warm-up each, so that a load from other jobs on a shared machine falls on both sides alike.

    settle: untimed calls of the same function just before each timed one, so that each is timed as
    it runs in training, after a step of its own: what the previous side left behind is gone by then.
    PyTorch's OpenMP workers keep spinning on the cores for a while after its step; a step timed right
    after one ran 15-30% slower at (100,32,128,128) than after a step of its own (docs/BENCHMARKS.md,
    session 9). 0 times each call straight after the other side's."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, buffer pools, BLAS thread start-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            for _ in range(settle):
                fn()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns (see `interleaved_times`)."""
    return {k: float(np.median(v)) for k, v in interleaved_times(fns, repeats).items()}


def same_round_ratio(a, b) -> float:
    """Median over rounds of a[i] / b[i] (two lists of times from `interleaved_times`)."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def have_torch():
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def run_benchmark(cells, configs=CONFIGS, repeats=5, torch_too=True, precision="32"):
    """Forward + backward of each cell and configuration; rnnkit and PyTorch interleaved. precision
    "bf16-mixed": rnnkit's layer in bf16-mixed, and PyTorch in bf16 too beside its float32, both
    ways (autocast, and the module and input in bf16), the faster of each round taken:
    `ratio_torch_bf16` (`ratio` stays PyTorch float32's time over rnnkit's)."""
    torch_too = torch_too and have_torch()
    rows = []
    for cell in cells:
        for T, N, D, H in configs:
            fns = {"rnnkit": _rnnkit_step(cell, T, N, D, H, precision)}
            if torch_too:
                fns["torch"] = _torch_step(cell, T, N, D, H)
                if precision != "32":
                    fns["torch_autocast"] = _torch_step(cell, T, N, D, H, "autocast")
                    fns["torch_bf16"] = _torch_step(cell, T, N, D, H, "module")
            times = interleaved_times(fns, repeats)
            med = {k: float(np.median(v)) for k, v in times.items()}
            row = {"cell": cell, "T": T, "N": N, "D": D, "H": H, "precision": precision,
                   "rnnkit_ms": med["rnnkit"] * 1e3}
            if torch_too:
                row["torch_ms"] = med["torch"] * 1e3
                # the median of each round's own ratio: the two runs of a round are seconds apart, so
                # a machine that speeds up or slows down over the minute moves both alike
                row["ratio"] = same_round_ratio(times["torch"], times["rnnkit"])
                if precision != "32":
                    row["torch_autocast_ms"] = med["torch_autocast"] * 1e3
                    row["torch_bf16_module_ms"] = med["torch_bf16"] * 1e3
                    best = np.minimum(times["torch_autocast"], times["torch_bf16"])
                    row["ratio_torch_bf16"] = same_round_ratio(best, times["rnnkit"])
            rows.append(row)
    return rows


def lstm_train_flops(T, N, D, H):
    """Matrix-multiply FLOPs of one LSTM forward + backward: x Wx, h Wh forward; dx, dh, dWx, dWh."""
    return 2 * T * N * 4 * H * (D + H) * 3


def gemm_rate(M=6400, K=512, Nn=2048, repeats=5):
    """This machine's float32 matrix-multiply rate (FLOP/s), the median of `repeats`: the fastest of
    NumPy's BLAS on as many threads as rnnkit uses, rnnkit's own products where it calls another BLAS
    (MKL: `kernels.set_blas`), and PyTorch's `torch.mm` where PyTorch is installed."""
    from rnnkit import kernels

    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, Nn)).astype(np.float32)
    c = np.empty((M, Nn), np.float32)
    before = kernels.blas_threads()
    # rnnkit keeps OpenBLAS on one thread (kernels docstring); the reference rate is OpenBLAS on all of
    # rnnkit's threads, timed on its own, not interleaved, so that its busy-waiting workers are gone
    # before anything else is timed.
    kernels.set_blas_threads(kernels.threads())
    try:
        med = interleaved_medians({"gemm": lambda: np.matmul(a, b, out=c)}, repeats)["gemm"]
    finally:
        if before is not None:
            kernels.set_blas_threads(before)
    time.sleep(0.5)
    others = {}
    if not kernels.blas.numpy_gemm():
        others["rnnkit"] = lambda: kernels.matmul(a, b, out=c)
    if have_torch():
        import torch

        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        others["torch"] = lambda: torch.mm(ta, tb, out=tc)
    if others:
        med = min(med, *interleaved_medians(others, repeats).values())
    return 2 * M * K * Nn / med


def utilisation(T=100, N=64, D=512, H=512, repeats=5):
    """LSTM training-step matmul rate at (T, N, D, H) as a fraction of the GEMM rate of a product the
    size of its input projection, ((T*N, D) @ (D, 4H), `gemm_rate`)."""
    gemm = gemm_rate(T * N, D, 4 * H, repeats)
    step = _rnnkit_step("lstm", T, N, D, H)
    med = interleaved_medians({"step": step}, repeats)
    flops = lstm_train_flops(T, N, D, H)
    return {"T": T, "N": N, "D": D, "H": H, "step_ms": med["step"] * 1e3,
            "step_gflops": flops / med["step"] / 1e9, "gemm_gflops": gemm / 1e9,
            "utilisation": flops / med["step"] / gemm}


def sampling(chars=1000, H=512, L=2, V=65, round_chars=100, torch_too=True):
    """Single-stream sampling, characters per second: embedding row -> L-layer LSTM one step -> linear
    -> softmax -> draw; rnnkit's `LSTM.step` (its first layer's input product read from the table
    `LSTM.input_gates(embedding)`) against `nn.LSTM` stepped one character at a time under no_grad,
    interleaved in rounds of `round_chars`; medians of the rounds."""
    from rnnkit import LSTM

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((V, H)).astype(np.float32)
    lstm = LSTM(H, H, num_layers=L, seed=0)
    W = (rng.standard_normal((H, V)) / np.sqrt(H)).astype(np.float32)
    bias = np.zeros(V, np.float32)
    gates0 = lstm.input_gates(emb)  # embedding @ Wx + b of layer 1: one table row per character
    ours = [None, 0]

    def run_rnnkit(n):
        s, c = ours
        for _ in range(n):
            h, s = lstm.step(None, s, x_gates=gates0[c:c + 1])
            z = h[0] @ W + bias
            p = np.exp(z - z.max())
            c = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum())), V - 1)
        ours[:] = [s, c]

    sides = {"rnnkit": run_rnnkit}
    if torch_too and have_torch():
        import torch

        torch.manual_seed(0)
        t_emb, t_lstm, t_lin = torch.nn.Embedding(V, H), torch.nn.LSTM(H, H, L), torch.nn.Linear(H, V)
        theirs = [None, torch.zeros(1, 1, dtype=torch.long)]

        def run_torch(n):
            s, c = theirs
            with torch.no_grad():
                for _ in range(n):
                    out, s = t_lstm(t_emb(c), s)
                    p = torch.softmax(t_lin(out[0, 0]), -1)
                    c = torch.multinomial(p, 1).view(1, 1)
            theirs[:] = [s, c]

        sides["torch"] = run_torch
    for run in sides.values():
        run(10)
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


# (T, N, D, H) of issue 7's target for exact BPTT in bounded memory
RECOMPUTE_SHAPE = (1000, 32, 512, 512)


def recompute(T=1000, N=32, D=512, H=512, ks=(32, 40), repeats=5):
    """Plain BPTT against `LSTM(..., recompute=k)` for each k: one row per k (None first, plain), with
    "kept_MB" (held between forward and backward beyond the output), "peak_MB" (the most alive during
    backward beyond the input, the output and backward's results dx and the weight gradients), both
    from tracemalloc on a cold layer, "ms" (median training step) and "time_vs_plain" (median over
    rounds of the step's time over plain BPTT's in the same round)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    dout = rng.standard_normal((T, N, H)).astype(np.float32)
    ks = [None] + [k for k in ks if k is not None]

    def step(layer):
        def run():
            layer.forward(x)
            layer.backward(dout)

        return run

    times = interleaved_times({k: step(make_recurrent("lstm", D, H, recompute=k)) for k in ks}, repeats)
    rows = []
    for k in ks:
        kept, peak = _recompute_memory(make_recurrent("lstm", D, H, recompute=k), x, dout)
        rows.append({"k": k, "kept_MB": kept / 2**20, "peak_MB": peak / 2**20,
                     "ms": float(np.median(times[k])) * 1e3,
                     "time_vs_plain": same_round_ratio(times[k], times[None])})
    for r in rows:
        r["memory_vs_plain"] = r["peak_MB"] / rows[0]["peak_MB"]
        r["kept_vs_plain"] = r["kept_MB"] / rows[0]["kept_MB"]
    return rows


def _recompute_memory(layer, x, dout):
    """(kept, peak) bytes of one training step of a cold layer (see `recompute`)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out, _ = layer.forward(x)
        kept = tracemalloc.get_traced_memory()[0] - base - out.nbytes
        tracemalloc.reset_peak()
        dx, _ = layer.backward(dout)
        # dx (T, N, D) and the weight gradients are results of backward, allocated alike in both modes
        results = dx.nbytes + sum(g.nbytes for g in layer.grads.values())
        peak = tracemalloc.get_traced_memory()[1] - base - out.nbytes - results
    finally:
        tracemalloc.stop()
    return kept, peak


def format_recompute(rows, shape):
    T, N, D, H = shape
    lines = [f"exact BPTT in bounded memory, LSTM (T, N, D, H) = ({T}, {N}, {D}, {H}), float32:",
             f"{'recompute':>10} {'kept MB':>9} {'peak MB':>9} {'peak/plain':>11} {'ms':>9} {'time/plain':>11}"]
    for r in rows:
        lines.append(f"{str(r['k']):>10} {r['kept_MB']:9.1f} {r['peak_MB']:9.1f} "
                     f"{r['memory_vs_plain']:11.3f} {r['ms']:9.1f} {r['time_vs_plain']:11.2f}")
    return "\n".join(lines)


def set_threads(n):
    """Use n threads in rnnkit (or NumPy's BLAS, without the fast path) and in PyTorch, when present."""
    from rnnkit import kernels

    if kernels.status()["available"]:
        kernels.set_threads(n)
    else:
        kernels.set_blas_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def machine_info():
    import datetime
    import os

    from rnnkit import kernels

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpu": _cpu_model(), "cores": os.cpu_count(), "rnnkit_threads": kernels.threads(),
            "blas_threads": kernels.blas_threads(),
            "fast_path": kernels.status()}
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(rows):
    bf = any("ratio_torch_bf16" in r for r in rows)
    head = f"{'cell':5} {'(T, N, D, H)':>20} {'rnnkit ms':>10} {'torch ms':>10} {'torch/rnnkit':>13}"
    if bf:
        head += f" {'torch bf16 ms':>14} {'bf16/rnnkit':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"({r['T']}, {r['N']}, {r['D']}, {r['H']})"
        t = f"{r['torch_ms']:10.2f}" if "torch_ms" in r else f"{'-':>10}"
        ratio = f"{r['ratio']:13.2f}" if "ratio" in r else f"{'-':>13}"
        line = f"{r['cell']:5} {shape:>20} {r['rnnkit_ms']:10.2f} {t} {ratio}"
        if "ratio_torch_bf16" in r:
            fastest = min(r["torch_autocast_ms"], r["torch_bf16_module_ms"])
            line += f" {fastest:14.2f} {r['ratio_torch_bf16']:12.2f}"
        lines.append(line)
    return "\n".join(lines)
