"""bf16 products with float32 sums (rnnkit.kernels.bf16): the tier detection, the rounding, and the
product on every tier this machine runs, against float64 references at stated tolerances.

Tolerances, elementwise, with S = |A| @ |B| (float64) and u = 2^-24 (float32's unit roundoff):
  - against bf16(A) @ bf16(B) in float64: (K + 2) u S. Products of two bf16 values are exact in
    float32, so a tier differs from it only by the float32 additions.
  - against A @ B unrounded: 2^-8 S + (K + 2) u S. Each bf16 rounding moves a value by at most 2^-9
    of itself, so each product by at most 2^-8 (1 + 2^-9) of |a b|.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit import kernels
from rnnkit.kernels import bf16

SRC = str(Path(__file__).resolve().parent.parent / "src")
U = 2.0**-24
SHAPES = [(1, 1, 1), (5, 7, 3), (37, 45, 70), (33, 130, 129), (100, 300, 17), (17, 1100, 65),
          (64, 128, 512)]


def _cpu_flags():
    line = kernels.build.cpuinfo("flags") or ""
    return set(line.split(":", 1)[-1].split())


def _runs(tier):
    if tier not in bf16.detect()["runnable"]:
        pytest.skip(f"bf16 tier {tier} cannot run here: {bf16.detect()['reason']}")


def _operands(M, K, N, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = (rng.standard_normal((K, N)) * rng.uniform(0.01, 10, size=(1, N))).astype(np.float32)
    return a, b


def _scale(a, b):
    return np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))


def test_rounding_to_nearest_even():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 0.0, -0.0, np.inf,
                  -np.inf, 3.4e38, 1e-40], dtype=np.float32)
    got = bf16.to_bf16(x)
    # 1 + 2^-8 is a tie: down to 1 (even); 1 + 3 2^-8 a tie: up to 1 + 2^-6; 3.4e38 rounds past the
    # largest bf16 to inf
    want = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC020, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x7F80, 0x0001]
    assert got.tolist() == want
    assert np.isnan(bf16.from_bf16(bf16.to_bf16(np.float32([np.nan])))).all()
    assert bf16.from_bf16(np.uint16([0x3F80, 0xC020])).tolist() == [1.0, -2.5]


def test_rounding_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(100_000) * 10.0 ** rng.uniform(-30, 30, 100_000)).astype(np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bf16.to_bf16(x), want)


def test_detection_follows_the_cpu_flags():
    found = bf16.detect()
    assert found["tier"] in bf16.TIERS and found["tier"] == found["runnable"][-1]
    assert kernels.status()["bf16"] == found["tier"]
    flags = _cpu_flags()
    if not {"amx_tile", "amx_bf16"} <= flags:
        assert "amx" not in found["runnable"] and "amx" in found["reason"]
    if "avx512_bf16" in flags and kernels.status()["available"]:
        assert "avx512_bf16" in found["runnable"]
    if "avx512_bf16" not in flags:
        assert found["runnable"] == ["none"] and found["reason"]


def _subprocess(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": SRC, **env})


def test_the_tier_can_be_capped_and_a_bad_cap_is_named():
    code = "from rnnkit import kernels; s = kernels.status(); print(s['bf16'], '|', s['bf16_reason'])"
    r = _subprocess(code, RNNKIT_BF16="none")
    assert r.returncode == 0, r.stderr
    tier, reason = r.stdout.strip().split(" | ")
    assert tier == "none"
    if bf16.detect()["tier"] != "none":
        assert "RNNKIT_BF16" in reason
    r = _subprocess(code, RNNKIT_BF16="fp8")
    assert r.returncode == 0 and r.stdout.split(" | ")[0] == bf16.detect()["tier"]
    assert "RNNKIT_BF16='fp8' is not one of none, avx512_bf16, amx" in r.stderr


def test_amx_runs_in_a_fresh_process():
    """The first tile instructions run apart from the test process: a wrong tile configuration or a
    missing permission kills the process (SIGILL, SIGSEGV) instead of failing an assertion."""
    _runs("amx")
    code = ("import numpy as np; from rnnkit.kernels import bf16\n"
            "a = np.ones((40, 50), np.float32); b = np.ones((50, 70), np.float32)\n"
            "c = bf16.matmul(a, bf16.pack(b), tier='amx'); print(float(c.min()), float(c.max()))")
    r = _subprocess(code)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.split() == ["50.0", "50.0"]


def test_amx_tier_on_emulated_tiles(tmp_path):
    """The AMX tier's tile configuration, strides, K chunks and C edges, on any x86-64 machine with a C
    compiler: tests/amx_emulation.c runs bf16.c's AMX code on a scalar emulation of the tile
    instructions (which checks every operand's shape) over odd shapes, plain and accumulating."""
    import platform
    import shutil

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs an x86-64 C compiler")
    exe = tmp_path / "emu"
    here = Path(__file__).resolve().parent
    r = subprocess.run([cc, "-O1", "-w", f"-I{SRC}/rnnkit/kernels", str(here / "amx_emulation.c"),
                        "-o", str(exe), "-lm"], capture_output=True, text=True)
    if r.returncode != 0 and "amx" in r.stderr.lower():
        pytest.skip(f"the compiler has no AMX intrinsics: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) <= 1e-5  # relative to sum |a b|: float32 sums of exact bf16 products


@pytest.mark.parametrize("tier", bf16.TIERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_product_within_bf16_tolerance(tier, shape):
    _runs(tier)
    if tier == "amx":
        test_amx_runs_in_a_fresh_process()
    M, K, N = shape
    a, b = _operands(M, K, N)
    pb = bf16.pack(b)
    got = bf16.matmul(a, pb, tier=tier)
    S = _scale(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    if tier == "none":  # float32 throughout
        assert np.all(np.abs(got - exact) <= (K + 2) * U * S)
        return
    assert np.all(np.abs(got - bf16.reference(a, b)) <= (K + 2) * U * S)
    assert np.all(np.abs(got - exact) <= (2.0**-8 + (K + 2) * U) * S)
    # bf16 is really used: the error is of bf16's size, not float32's
    assert np.max(np.abs(got - exact) / S) > 2.0**-14


@pytest.mark.parametrize("tier", bf16.TIERS)
def test_accumulate_strides_and_bf16_input(tier):
    _runs(tier)
    M, K, N = 45, 77, 130
    a, b = _operands(M, K, N, seed=2)
    pb = bf16.pack(b)
    base = np.random.default_rng(3).standard_normal((M, N + 9)).astype(np.float32)
    out = base.copy()[:, 3:3 + N]  # rows not contiguous with each other
    bf16.matmul(a, pb, out=out, accumulate=True, tier=tier)
    alone = bf16.matmul(a, pb, tier=tier)
    np.testing.assert_allclose(out, base[:, 3:3 + N] + alone, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(base[:, :3], out.base[:, :3])  # nothing written outside out
    wide = np.zeros((M, 2 * K), np.float32)
    wide[:, :K] = a  # a with a row stride of 2K
    np.testing.assert_array_equal(bf16.matmul(wide[:, :K], pb, tier=tier), alone)
    from_bits = bf16.matmul(bf16.to_bf16(a), pb, tier=tier)
    if tier == "none":
        np.testing.assert_allclose(from_bits, bf16.round_bf16(a) @ b, rtol=1e-5, atol=1e-4)
    else:
        np.testing.assert_array_equal(from_bits, alone)


@pytest.mark.parametrize("tier", bf16.TIERS)
@pytest.mark.parametrize("shape", [(130, 300, 130), (20, 512, 520)])  # cut by rows; by panels
def test_threads_give_the_same_bits(tier, shape):
    _runs(tier)
    a, b = _operands(*shape[:1], shape[1], shape[2], seed=4)
    pb = bf16.pack(b)
    old = kernels.threads()
    try:
        kernels.set_threads(1)
        one = bf16.matmul(a, pb, tier=tier)
        kernels.set_threads(3)
        three = bf16.matmul(a, pb, tier=tier)
    finally:
        kernels.set_threads(old)
    if tier == "none":  # the BLAS's blocking follows the shapes it is given
        assert np.all(np.abs(one - three) <= 2 * (shape[1] + 2) * U * _scale(a, b))
    else:
        np.testing.assert_array_equal(one, three)


def test_bad_arguments_are_named():
    pb = bf16.pack(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"a \(3, 6\) does not match b \(4, 5\)"):
        bf16.matmul(np.ones((3, 6), np.float32), pb)
    with pytest.raises(ValueError, match="cannot run here"):
        bf16.matmul(np.ones((3, 4), np.float32), pb, tier="tpu")
    with pytest.raises(ValueError, match="must be 2-D"):
        bf16.pack(np.ones(3))
    with pytest.raises(ValueError, match="needs out"):
        bf16.matmul(np.ones((3, 4), np.float32), pb, accumulate=True)


def _lstm_operands(T, N, D, H, seed=5):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return (r(T, N, D), r(N, H) * 0.5, r(N, H), r(D, 4 * H) / D**0.5, r(H, 4 * H) / H**0.5,
            r(4 * H) * 0.1)


def _lstm_emulated(x, h0, c0, Wx, Wh, b, mask):
    """The bf16-mixed LSTM forward in float64: x, h_{t-1} and the weights rounded to bf16 before each
    product, nothing else."""
    rd = lambda v: bf16.round_bf16(v).astype(np.float64)  # noqa: E731
    T, H = x.shape[0], Wh.shape[0]
    h, c = [h0.astype(np.float64)], [c0.astype(np.float64)]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(T):
        a = rd(x[t]) @ rd(Wx) + rd(h[t]) @ rd(Wh) + b
        i, f, o, g = sig(a[:, :H]), sig(a[:, H:2 * H]), sig(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        cn, keep = f * c[t] + i * g, mask[t][:, None] if mask is not None else True
        c.append(np.where(keep, cn, c[t]))
        h.append(np.where(keep, o * np.tanh(cn), h[t]))
    return np.stack(h), np.stack(c)


@pytest.mark.parametrize("tier", bf16.TIERS)
@pytest.mark.parametrize("masked", [False, True])
def test_lstm_forward_bf16_against_float32(tier, masked, monkeypatch):
    """Against the bf16 rounding emulated in float64: 2e-3 (a flipped rounding of h, 2^-9 of it, may
    move a later step); against the float32 LSTM: 3e-2 (the states are in [-1, 1] and the rounding
    errors of 30 steps add up). On tier none the products are float32: 2e-5 from the float32 LSTM."""
    from rnnkit.cells.lstm import lstm_backward, lstm_forward, lstm_forward_bf16

    _runs(tier)
    T, N, D, H = 30, 7, 19, 37
    x, h0, c0, Wx, Wh, b = _lstm_operands(T, N, D, H)
    mask = (np.arange(T)[:, None] < np.array([30, 29, 17, 30, 1, 8, 30])) if masked else None
    monkeypatch.setitem(bf16.detect(), "tier", tier)
    h, c, cache = lstm_forward_bf16(x, h0, c0, Wx, Wh, b, mask)
    h32, c32, _ = lstm_forward(x, h0, c0, Wx, Wh, b, mask)
    if tier == "none":
        np.testing.assert_allclose(h, h32, atol=2e-5)
        np.testing.assert_allclose(c, c32, atol=2e-5)
    else:
        he, ce = _lstm_emulated(x, h0, c0, Wx, Wh, b, mask)
        np.testing.assert_allclose(h, he, atol=2e-3)
        np.testing.assert_allclose(c, ce, atol=2e-3)
        np.testing.assert_allclose(h, h32, atol=3e-2)
        np.testing.assert_allclose(c, c32, atol=3e-2)
        assert np.abs(h - h32).max() > 1e-5  # the products really were bf16
    if masked:  # a padded step carries its state exactly
        np.testing.assert_array_equal(h[2:, 4], np.broadcast_to(h[1, 4], h[2:, 4].shape))
    grads = lstm_backward(np.ones_like(h[1:]), cache)  # the float32 backward takes its cache
    assert all(np.isfinite(g).all() for g in grads)
