"""`rnnkit bench`: forward + backward timing of the cells against PyTorch on this machine, plus the
single-stream sampling rate, the LSTM training step's matmul utilisation and exact BPTT in bounded
memory (recompute) against plain BPTT."""

from __future__ import annotations

import json

from rnnkit import kernels
from rnnkit.bench import CONFIGS, RECOMPUTE_SHAPE, format_recompute, format_table, machine_info, \
    recompute, run_benchmark, sampling, set_threads, utilisation
from rnnkit.cells import create as cells_create
from rnnkit.errors import UserError
from rnnkit.layers.recurrent import PRECISIONS


def _torch_cells():
    """The registered cells with a PyTorch counterpart to time against."""
    from rnnkit import cells

    return [n for n in cells.names() if cells.create(n).torch_mode is not None]


def register(sub, train_sub):
    p = sub.add_parser("bench", help="time rnnkit's cells against PyTorch's on this machine")
    p.add_argument("--cells", default=None,
                   help=f"comma-separated, of the cells PyTorch has too: {','.join(_torch_cells())} "
                        f"(default lstm,gru,rnn; with --precision bf16-mixed, those with a bf16 path)")
    p.add_argument("--precision", choices=PRECISIONS, default="32",
                   help="rnnkit's layers in float32 (32) or bf16-mixed: bf16 products with float32 "
                        "sums, timed against PyTorch in float32 and in bf16 (ratio_torch_bf16)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for NumPy's BLAS and PyTorch (default: leave as they are)")
    p.add_argument("--sampling", action="store_true",
                   help="also time single-stream sampling (2-layer 512 LSTM, batch 1, 1000 chars)")
    p.add_argument("--utilisation", action="store_true",
                   help="also report the (100,64,512,512) LSTM step's share of the GEMM rate")
    p.add_argument("--recompute", action="store_true",
                   help="also measure exact BPTT in bounded memory: an LSTM at (T, N, D, H) = "
                        "(1000, 32, 512, 512) with recompute=32 and 40 against plain BPTT, memory and "
                        "time (a few minutes)")
    p.add_argument("--blas", default=None,
                   help="the BLAS rnnkit's products call: numpy, mkl (pip install 'rnnkit[mkl]') or a "
                        "path to a CBLAS library (default: RNNKIT_BLAS, else MKL where installed on an "
                        "Intel CPU, else NumPy's)")
    p.add_argument("--no-torch", action="store_true", help="time rnnkit only")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args):
    bf16_cells = [c for c in _torch_cells() if hasattr(cells_create(c), "bf16_mixed")]
    given = args.cells if args.cells is not None else (
        "lstm,gru,rnn" if args.precision == "32" else ",".join(bf16_cells))
    cells = [c.strip() for c in given.split(",") if c.strip()]
    bad = [c for c in cells if c not in _torch_cells()]
    if bad or not cells:
        raise UserError(f"--cells: expected a comma-separated list of {', '.join(_torch_cells())}; "
                        f"got {given!r}")
    no_bf16 = [c for c in cells if c not in bf16_cells]
    if args.precision != "32" and no_bf16:
        raise UserError(f"--cells: {', '.join(no_bf16)} has no bf16 path yet (--precision "
                        f"{args.precision} runs {', '.join(bf16_cells)})")
    if args.repeats < 1:
        raise UserError(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads: expected a positive integer, got {args.threads}")
        set_threads(args.threads)
    if args.blas is not None:
        try:
            kernels.set_blas(args.blas)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"--blas {args.blas}: {e}") from None
    rows = run_benchmark(cells, CONFIGS, repeats=args.repeats, torch_too=not args.no_torch,
                         precision=args.precision)
    extra = {}
    if args.sampling:
        extra["sampling"] = sampling(torch_too=not args.no_torch)
    if args.utilisation:
        extra["utilisation"] = utilisation(repeats=args.repeats)
    if args.recompute:
        extra["recompute"] = recompute(*RECOMPUTE_SHAPE, ks=(32, 40), repeats=args.repeats)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows, **extra}, indent=1))
        return
    print(f"rnnkit's products: {kernels.status()['blas'] or 'NumPy (compiled kernels off)'}, "
          f"{kernels.threads()} thread(s)" + (f"; precision {args.precision}, bf16 tier "
                                             f"{kernels.status()['bf16']}"
                                             if args.precision != "32" else ""))
    print(format_table(rows))
    if "sampling" in extra:
        s = extra["sampling"]
        line = f"sampling (batch 1, {s['layers']}x{s['hidden']} LSTM): rnnkit {s['rnnkit_chars_per_s']:.0f} chars/s"
        if "torch_chars_per_s" in s:
            line += f", torch {s['torch_chars_per_s']:.0f} chars/s, speed-up {s['speedup']:.2f}x"
        print(line)
    if "utilisation" in extra:
        u = extra["utilisation"]
        print(f"LSTM step (100,64,512,512): {u['step_gflops']:.1f} GFLOP/s = {100 * u['utilisation']:.0f}% "
              f"of the measured float32 GEMM rate {u['gemm_gflops']:.1f} GFLOP/s")
    if "recompute" in extra:
        print(format_recompute(extra["recompute"], RECOMPUTE_SHAPE))
