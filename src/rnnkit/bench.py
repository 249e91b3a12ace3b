"""Timing of forward + backward against PyTorch in the same process (used by `rnnkit bench` and
`benchmarks/`). PyTorch is optional: without it only rnnkit's times are printed."""

from __future__ import annotations

import platform
import time

import numpy as np

from rnnkit.layers.recurrent import make_recurrent

# (T, N, D, H): the shapes the foundation and speed issues name.
CONFIGS = [(100, 32, 128, 128), (100, 32, 256, 256), (100, 64, 512, 512), (50, 1, 64, 64)]


def _best_time(fn, repeats):
    fn()  # warm-up: first-call allocations and BLAS thread start-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_rnnkit(cell, T, N, D, H, repeats=5):
    layer = make_recurrent(cell, D, H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    dout = rng.standard_normal((T, N, H)).astype(np.float32)

    def step():
        layer.forward(x)
        layer.backward(dout)

    return _best_time(step, repeats)


def time_torch(cell, T, N, D, H, repeats=5):
    import torch

    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    m = cls(D, H)
    x = torch.randn(T, N, D, requires_grad=True)
    dout = torch.randn(T, N, H)

    def step():
        out, _ = m(x)
        out.backward(dout)

    return _best_time(step, repeats)


def run_benchmark(cells, configs=CONFIGS, repeats=5):
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    rows = []
    for cell in cells:
        for T, N, D, H in configs:
            ours = time_rnnkit(cell, T, N, D, H, repeats)
            row = {"cell": cell, "T": T, "N": N, "D": D, "H": H, "rnnkit_ms": ours * 1e3}
            if have_torch:
                theirs = time_torch(cell, T, N, D, H, repeats)
                row["torch_ms"] = theirs * 1e3
                row["ratio"] = theirs / ours
            rows.append(row)
    return rows


def machine_info():
    info = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "processor": platform.processor()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def format_table(rows):
    head = f"{'cell':5} {'(T, N, D, H)':>20} {'rnnkit ms':>10} {'torch ms':>10} {'torch/rnnkit':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"({r['T']}, {r['N']}, {r['D']}, {r['H']})"
        t = f"{r['torch_ms']:10.2f}" if "torch_ms" in r else f"{'-':>10}"
        ratio = f"{r['ratio']:13.2f}" if "ratio" in r else f"{'-':>13}"
        lines.append(f"{r['cell']:5} {shape:>20} {r['rnnkit_ms']:10.2f} {t} {ratio}")
    return "\n".join(lines)
