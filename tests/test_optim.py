"""Optimizers, clipping and schedules against torch.optim on identical parameter and gradient sequences."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnkit.errors import UserError  # noqa: E402
from rnnkit.optim import SGD, Adagrad, Adam, AdamW, RMSprop, Schedule, clip_grad_norm  # noqa: E402

STEPS = 25

CASES = [
    (SGD, torch.optim.SGD, dict(lr=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, torch.optim.Adam, dict(lr=1e-2)),
    (Adam, torch.optim.Adam, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    (AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.3)),
    (RMSprop, torch.optim.RMSprop, dict(lr=1e-2)),
    (RMSprop, torch.optim.RMSprop, dict(lr=1e-2, alpha=0.9, momentum=0.8, weight_decay=0.05)),
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.02,
                                         initial_accumulator_value=0.5)),
]


def _params(rng, dtype):
    return {"w": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}


@pytest.mark.parametrize("ours,theirs,kw", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_matches_torch(ours, theirs, kw, dtype, tol):
    rng = np.random.default_rng(0)
    p = _params(rng, dtype)
    g = {k: np.zeros_like(v) for k, v in p.items()}
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p.items()}
    opt = ours([(k, p[k], g[k]) for k in p], **kw)
    topt = theirs([tp["w"], tp["b"]], **kw)
    for step in range(STEPS):
        for k in p:
            # gradients depend on the current parameters (as in training) plus noise
            g[k][...] = (np.sin(p[k]) + 0.3 * rng.standard_normal(p[k].shape)).astype(dtype)
            tp[k].grad = torch.tensor(g[k].copy())
        opt.step()
        topt.step()
        for k in p:
            np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=tol, atol=tol,
                                       err_msg=f"{ours.__name__} {k} step {step + 1}")


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    p = _params(rng, np.float32)
    g = {k: np.ones_like(v) for k, v in p.items()}
    opt = Adam([(k, p[k], g[k]) for k in p], lr=0.01)
    for _ in range(3):
        opt.step()
    sd = opt.state_dict()
    p2 = {k: v.copy() for k, v in p.items()}
    g2 = {k: v.copy() for k, v in g.items()}
    opt2 = Adam([(k, p2[k], g2[k]) for k in p2], lr=0.5)
    opt2.load_state_dict({"scalars": dict(sd["scalars"]), "arrays": {k: v.copy() for k, v in sd["arrays"].items()}})
    for _ in range(3):
        opt.step()
        opt2.step()
    for k in p:
        np.testing.assert_array_equal(p[k], p2[k])
    with pytest.raises(ValueError, match="for Adam, not SGD"):
        SGD([(k, p[k], g[k]) for k in p]).load_state_dict(sd)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal((5, 4)), rng.standard_normal(7)]
    tps = [torch.zeros(a.shape, dtype=torch.float64, requires_grad=True) for a in gs]
    for t, a in zip(tps, gs):
        t.grad = torch.tensor(a.copy())
    params = [(str(i), None, a) for i, a in enumerate(gs)]
    norm = clip_grad_norm(params, 1.5)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, 1.5)
    assert abs(norm - float(tnorm)) < 1e-12
    for t, a in zip(tps, gs):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-12)
    assert math.sqrt(sum(float((a * a).sum()) for a in gs)) == pytest.approx(1.5, rel=1e-6)
    small = [("x", None, np.full(3, 0.1))]
    clip_grad_norm(small, 10.0)
    np.testing.assert_array_equal(small[0][2], np.full(3, 0.1))  # under the limit: untouched


def _torch_lrs(make_sched, steps, lr=0.1):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_match_torch():
    from torch.optim import lr_scheduler as ls

    s = Schedule("step", lr=0.1, step_size=4, gamma=0.5)
    assert [s(t) for t in range(1, 13)] == pytest.approx(_torch_lrs(lambda o: ls.StepLR(o, 4, 0.5), 12))
    # cosine without warmup = CosineAnnealingLR with eta_min = min_ratio * lr, shifted by one (1-based)
    s = Schedule("cosine", lr=0.1, total=20, min_ratio=0.1)
    ours = [s(t) for t in range(1, 21)]
    theirs = _torch_lrs(lambda o: ls.CosineAnnealingLR(o, T_max=20, eta_min=0.01), 21)[1:]
    assert ours == pytest.approx(theirs, rel=1e-9)
    s = Schedule("cosine", lr=0.1, warmup=5, total=25, min_ratio=0.0)
    lrs = [s(t) for t in range(1, 26)]
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert Schedule("constant", lr=0.3)(1000) == 0.3
    with pytest.raises(ValueError, match="schedule must be"):
        Schedule("linear")


def test_cosine_over_a_time_budget():
    """With the fraction of a time budget spent, the cosine follows it (after the warmup steps) and
    ignores the step count; past the budget it stays at the floor."""
    from rnnkit.train.loop import TrainConfig

    s = Schedule("cosine", lr=0.1, warmup=3, total=10**9, min_ratio=0.1)
    assert s(2, spent=0.9) == pytest.approx(0.2 / 3)  # warmup first
    assert s(500, spent=0.0) == pytest.approx(0.1)
    assert s(7, spent=0.5) == pytest.approx(0.01 + 0.09 * 0.5)
    assert s(7, spent=1.0) == s(10**6, spent=3.0) == pytest.approx(0.01)
    TrainConfig(steps=None, minutes=5, schedule="cosine").validate()  # a time budget is enough
    with pytest.raises(UserError, match="--schedule step: needs --steps"):
        TrainConfig(steps=None, minutes=5, schedule="step").validate()
