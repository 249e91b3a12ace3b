"""`rnnkit bench`: argument errors exit 2 with one line; the timing helpers return what they promise."""

import numpy as np
import pytest

from rnnkit import kernels
from rnnkit.bench import format_recompute, interleaved_medians, lstm_train_flops, recompute, \
    run_benchmark, sampling
from rnnkit.cli import main


@pytest.mark.parametrize("argv,message", [
    (["bench", "--cells", "lstm,xyz"], "--cells"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--blas", "/nonexistent/libcblas.so"], "--blas /nonexistent/libcblas.so: cannot load"),
])
def test_bad_arguments_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_interleaved_medians_runs_each_side_in_turn():
    order = []
    med = interleaved_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3  # a warm-up each, then turns of two calls
    assert set(med) == {"a", "b"} and all(v >= 0 for v in med.values())


@pytest.mark.parametrize("settle,timed", [(1, [3, 5, 7]), (0, [2, 3, 4]), (2, [4, 7, 10])])
def test_interleaved_times_times_the_call_after_the_settling_ones(monkeypatch, settle, timed):
    """On a clock that call k of a side moves by k: after the warm-up (call 1), each round's settling
    calls go untimed and the next one is timed."""
    from rnnkit import bench

    clock, calls = [0.0], {"a": 0, "b": 0}

    def side(name):
        def fn():
            calls[name] += 1
            clock[0] += calls[name]
        return fn

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    times = bench.interleaved_times({"a": side("a"), "b": side("b")}, 3, settle=settle)
    assert times == {"a": timed, "b": timed}


def test_same_round_ratio_is_the_median_of_each_rounds_ratio():
    from rnnkit.bench import same_round_ratio

    # rounds 2x, 2x, 8x: the ratio of the medians would be 6 / 1 = 6, the median of the rounds' ratios 2
    assert same_round_ratio([2.0, 6.0, 8.0], [1.0, 3.0, 1.0]) == 2.0


def test_tiny_benchmark_rows():
    rows = run_benchmark(["gru"], [(3, 2, 4, 5)], repeats=1)
    assert [(r["cell"], r["T"], r["H"]) for r in rows] == [("gru", 3, 5)]
    assert rows[0]["rnnkit_ms"] > 0 and ("ratio" not in rows[0] or rows[0]["ratio"] > 0)


def _benchmark(name):
    """A script of benchmarks/ as a module."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_bench_blas_tiny_run_leaves_out_what_cannot_load(capsys):
    """benchmarks/bench_blas.py: a row per configuration with a ratio for each BLAS that loads; a
    choice that does not load is left out with one line; the BLAS in use before comes back."""
    if not kernels.status()["available"]:
        pytest.skip("compiled kernels unavailable")
    bench_blas = _benchmark("bench_blas")
    before = kernels.status()["blas"]
    try:
        rows, usable = bench_blas.run(["gru"], ["numpy", "/nonexistent/libcblas.so"],
                                      configs=[(3, 2, 4, 5)], repeats=1)
    finally:
        kernels.set_blas(before)
    assert list(usable) == ["numpy"]
    assert "/nonexistent/libcblas.so: cannot load it" in capsys.readouterr().err
    assert [(r["cell"], r["H"]) for r in rows] == [("gru", 5)] and rows[0]["ms"]["numpy"] > 0
    assert "ratio" not in rows[0] or set(rows[0]["ratio"]) == {"numpy"}


def test_bench_peak_loop_and_fractions(tmp_path):
    """benchmarks/bench_peak.py: the register-only loop compiles and reports a rate on one thread and
    two; a step's fractions are its FLOP over its time over the peak, and what a target would need."""
    bench_peak = _benchmark("bench_peak")
    exe = bench_peak.build(str(tmp_path))
    if exe is None:
        pytest.skip("no C compiler with AVX-512 here")
    for threads in (1, 2):
        rate = bench_peak.peak(exe, threads, rounds=1, n=10_000)
        assert np.isfinite(rate) and rate > 0
    rows = bench_peak.step_rates(1, False, configs=[(3, 2, 4, 5)])
    assert rows[0]["flop"] == lstm_train_flops(3, 2, 4, 5) and rows[0]["ms"]["rnnkit"] > 0
    row = {"T": 1, "N": 1, "D": 1, "H": 1, "flop": 4e9, "ms": {"rnnkit": 20.0, "torch": 40.0}}
    bench_peak.against_peak([row], 400e9, target=2.0)
    assert row["of_peak"] == pytest.approx({"rnnkit": 0.5, "torch": 0.25})
    assert row["needed_for_target"] == pytest.approx(0.5)  # 2x PyTorch's 40 ms: 20 ms, 200 GFLOP/s of 400


def test_tiny_sampling_row():
    row = sampling(chars=20, H=8, L=2, V=5, round_chars=10)
    assert row["rnnkit_chars_per_s"] > 0 and row["chars"] == 20


def test_tiny_recompute_rows():
    """Plain BPTT first, then each k: recompute keeps less between the passes, and the table says so."""
    rows = recompute(40, 4, 6, 8, ks=(5,), repeats=1)
    assert [r["k"] for r in rows] == [None, 5]
    assert rows[0]["time_vs_plain"] == 1.0 and rows[0]["memory_vs_plain"] == 1.0
    assert 0 < rows[1]["kept_MB"] < rows[0]["kept_MB"] and rows[1]["ms"] > 0
    assert "recompute" in format_recompute(rows, (40, 4, 6, 8)).splitlines()[1]


@pytest.mark.parametrize("numpy_gemm,torch_too,fastest", [
    (True, False, "gemm"), (False, False, "rnnkit"), (True, True, "torch"), (False, True, "torch")])
def test_gemm_rate_takes_the_fastest(numpy_gemm, torch_too, fastest, monkeypatch):
    """The reference rate is the fastest of NumPy's BLAS, rnnkit's products where they call another
    BLAS, and torch.mm where PyTorch is installed."""
    from rnnkit import bench

    seconds = {"gemm": 4.0, "rnnkit": 2.0, "torch": 1.0}  # NumPy's BLAS, rnnkit's via MKL, torch.mm
    timed = []

    def fake_medians(fns, repeats):
        timed.extend(fns)
        return {k: seconds[k] for k in fns}

    monkeypatch.setattr(bench, "interleaved_medians", fake_medians)
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    monkeypatch.setattr(bench, "have_torch", lambda: torch_too)
    monkeypatch.setattr(kernels.blas, "numpy_gemm", lambda: numpy_gemm)
    assert bench.gemm_rate(4, 5, 6, 1) == 2 * 4 * 5 * 6 / seconds[fastest]
    assert ("rnnkit" in timed) == (not numpy_gemm) and ("torch" in timed) == torch_too


def test_flops_formula():
    # forward: x Wx and h Wh; backward: dx, dh, dWx, dWh -> 3 times the forward's 2 T N 4H (D + H)
    assert lstm_train_flops(1, 1, 1, 1) == 48


def test_blas_threads_round_trip():
    before = kernels.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS here")
    try:
        assert kernels.set_blas_threads(1) and kernels.blas_threads() == 1
    finally:
        kernels.set_blas_threads(before)
