"""The generic training loop: `fit(task, source, cfg, run_dir, config)`.

A task (language model, classifier, captioner, ...) gives the loop its named modules, a `train_step`
(forward + backward on one batch), an `evaluate` and any extra state it must carry (e.g. the hidden state
of truncated BPTT); a batch source gives endless, resumable batches. The loop owns everything else: the
optimizer and its schedule, gradient clipping, periodic evaluation, best / last checkpoints, early
stopping, the time budget, `metrics.jsonl`, the progress bar and `loss.png`.

Resuming (`resume=True`) restores the modules' weights, the optimizer state, the random generators of the
layers (every `module.rng`), the batch source's position and RNG, the task's extra state and the step, so
N steps straight and N/2 + resume + N/2 reach the same weights.

Checkpoint layout (see `rnnkit.train.checkpoint`): arrays "<module>.<param>", "optim/<param>/<state>",
"extra/<name>"; meta {"config": config, "step": ..., "train": TrainConfig, "optimizer": scalars,
"rng": {...}, "source": {...}, "extra": {...}, "best": ..., "elapsed": seconds, ...}.

Data-parallel (`mpiexec -n P`, `rnnkit.train.distributed`): every rank runs this loop on its rows of
each batch (`ShardedSource`), from rank 0's weights; one allreduce per update sums the gradients
weighted by each rank's count (`GradientReducer`), then each rank clips by the global norm and takes
the same optimizer step. Dropout masks are drawn for the whole batch and cut to the rank's rows
(`RowKeyedGenerator`). Rank 0 alone evaluates (the figures are broadcast, so that every rank takes the
same best / early-stopping decisions), logs, shows progress and writes checkpoints; rank 0's clock
decides when the time budget is spent, and a task's carried state is gathered by global row for the
checkpoint (a task with `shard(comm, source)`), so a run resumes on any number of ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rnnkit import kernels
from rnnkit.errors import UserError
from rnnkit.optim import OPTIMIZERS, Schedule, clip_grad_norm, collect_params
from rnnkit.train import distributed
from rnnkit.train.checkpoint import hold_run_dir, load_checkpoint, save_checkpoint
from rnnkit.train.progress import Progress


@dataclass
class TrainConfig:
    steps: int | None = 1000  # stop after this many updates (None: only minutes)
    minutes: float | None = None  # stop after this much wall-clock time (this invocation)
    optimizer: str = "adam"  # sgd | adam | adamw | rmsprop | adagrad
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip: float = 5.0  # global gradient-norm clip; 0 turns it off
    schedule: str = "constant"  # constant | cosine (over steps, or over minutes without steps) | step
    warmup: int = 0  # steps of linear warmup (cosine)
    eval_every: int = 200  # steps between validation passes (also at the end)
    checkpoint_every: int = 200
    monitor: str = "val_loss"  # key of task.evaluate() that picks the best checkpoint
    monitor_mode: str = "min"  # min | max
    patience: int = 0  # early stopping after this many evals without improvement; 0: off
    seed: int = 0
    log_every: int = 10
    momentum: float = 0.0  # SGD and RMSprop only
    # Decay of an exponential moving average of the weights (Polyak averaging, e.g. 0.99); evaluation and
    # the best checkpoint use the average, training the raw weights. 0: off.
    ema: float = 0.0

    def validate(self):
        """Raise UserError naming the first bad field (as a CLI flag)."""
        def bad(flag, what, value):
            raise UserError(f"--{flag}: expected {what}, got {value!r}")

        if self.steps is None and self.minutes is None:
            raise UserError("--steps / --minutes: give at least one stopping rule")
        if self.steps is not None and self.steps < 1:
            bad("steps", "a positive integer", self.steps)
        if self.minutes is not None and not self.minutes > 0:
            bad("minutes", "a positive number", self.minutes)
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", "one of " + ", ".join(OPTIMIZERS), self.optimizer)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", "a positive number", self.lr)
        if not self.weight_decay >= 0:
            bad("weight-decay", "a number >= 0", self.weight_decay)
        if not self.clip >= 0:
            bad("clip", "a number >= 0 (0 turns clipping off)", self.clip)
        if self.schedule not in ("constant", "cosine", "step"):
            bad("schedule", "constant, cosine or step", self.schedule)
        if self.schedule == "step" and self.steps is None:
            raise UserError("--schedule step: needs --steps (the decay is laid out over the steps)")
        if self.warmup < 0:
            bad("warmup", "an integer >= 0", self.warmup)
        if self.warmup and self.schedule != "cosine":
            # a flag without effect: the user believes the run warms up when it does not
            raise UserError(f"--warmup {self.warmup}: only the cosine schedule warms up (--schedule "
                            f"{self.schedule} ignores it; --warmup 0 to go on without)")
        for name in ("eval_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name.replace("_", "-"), "a positive integer", getattr(self, name))
        if self.monitor_mode not in ("min", "max"):
            bad("monitor-mode", "min or max", self.monitor_mode)
        if self.patience < 0:
            bad("patience", "an integer >= 0", self.patience)
        if not 0 <= self.momentum < 1:
            bad("momentum", "a number in [0, 1)", self.momentum)
        if not 0 <= self.ema < 1:
            bad("ema", "a number in [0, 1) (0 turns averaging off)", self.ema)
        return self


class TrainTask(Protocol):
    """What a task gives the loop."""

    task: str  # "lm", "classify", "caption", "translate", "adding", "copy"
    # optional: batch_flag, the flag of the batch size (default "--batch"), for the message when a
    # batch cannot be split over the MPI ranks
    modules: dict  # name -> Module whose parameters the optimizer updates

    # forward + backward; {"loss": float, "tokens": int}, and "count" where the loss is a mean over
    # something other than the tokens (a classifier's sentences): data-parallel ranks weigh by it
    def train_step(self, batch) -> dict: ...

    def evaluate(self) -> dict: ...  # validation figures, e.g. {"val_loss": ...}

    def extra_state(self) -> tuple[dict, dict]: ...  # (arrays, JSON) to checkpoint

    def load_extra_state(self, arrays: dict, obj: dict): ...


class BatchSource(Protocol):
    """Endless batches; epochs handled inside; resumable."""

    def next_batch(self): ...

    def state_dict(self) -> dict: ...  # JSON-able position + RNG state

    def load_state_dict(self, d: dict): ...


# --- helpers ---------------------------------------------------------------------------------------


def named_generators(modules: dict):
    """{"<module>.<child path>": Generator} for every module in the tree that owns a `rng`."""
    out = {}

    def walk(m, path):
        rng = getattr(m, "rng", None)
        if isinstance(rng, distributed.RowKeyedGenerator):
            rng = rng.rng
        if isinstance(rng, np.random.Generator):
            out[path] = rng
        for cname, child in getattr(m, "_children", {}).items():
            walk(child, f"{path}.{cname}")

    for name, m in modules.items():
        walk(m, name)
    return out


def make_optimizer(cfg: TrainConfig, params):
    cls = OPTIMIZERS[cfg.optimizer]
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "rmsprop"):
        kw["momentum"] = cfg.momentum
    return cls(params, **kw)


def make_schedule(cfg: TrainConfig) -> Schedule:
    total = cfg.steps or 10**9
    return Schedule(kind=cfg.schedule, lr=cfg.lr, warmup=cfg.warmup, total=total,
                    step_size=max(1, total // 3) if cfg.steps else 1000)


def _better(value, best, mode):
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def _jsonable(d: dict) -> dict:
    """Floats and ints as plain Python numbers (NumPy scalars are not JSON)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out


def _truncate_metrics(path: Path, step: int):
    """On resume, drop the lines logged after the checkpoint's step (they will be logged again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


# --- the loop --------------------------------------------------------------------------------------


class _State:
    """Counters that go into the checkpoint meta."""

    def __init__(self):
        self.step = 0
        self.best = None  # best monitored value
        self.best_step = None
        self.bad_evals = 0  # evals since the last improvement
        self.elapsed = 0.0  # training seconds over all invocations
        self.tokens = 0
        self.last_eval = {}


def fit(task, source, cfg: TrainConfig, run_dir, config: dict, resume=False, progress=True,
        comm=None) -> dict:
    """Train `task` on batches from `source` until `cfg.steps` / `cfg.minutes` / early stopping.

    config: the task's JSON-able configuration (enough to rebuild the model), saved in every checkpoint.
    Returns a summary: {"step", "stopped", "best", "best_step", "last_eval", "elapsed", "tokens_per_s",
    "run_dir"}.
    Runs with subnormal floats flushed to zero (`kernels.flush_subnormals`): they made a translation
    model's training step 15% slower, and no result moves by more than 1e-38.
    Holds the run directory's lock (`checkpoint.hold_run_dir`) throughout, unless the caller holds it.
    comm: the communicator of data-parallel training (default `distributed.world()`: one process
    unless an MPI launcher started this one).
    """
    cfg.validate()
    comm = distributed.world() if comm is None else comm
    if comm.rank == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    owners = []
    if comm.size > 1:
        source = distributed.ShardedSource(source, comm.rank, comm.size,
                                           getattr(task, "batch_flag", "--batch"))
        if hasattr(task, "shard"):
            task.shard(comm, source)
        owners = _generator_owners(task)
    try:
        for owner, rng in owners:
            owner.rng = distributed.RowKeyedGenerator(rng, source)
        with kernels.flush_subnormals(), \
                hold_run_dir(run_dir) if comm.rank == 0 else contextlib.nullcontext():
            return _fit(task, source, cfg, run_dir, config, resume, progress, comm)
    finally:
        for owner, rng in owners:
            owner.rng = rng


def _generator_owners(task):
    """[(object, its Generator)] of every module in the task's trees, and the task, that owns a `rng`
    (dropout masks, teacher forcing)."""
    out = []

    def walk(m):
        if isinstance(getattr(m, "rng", None), np.random.Generator):
            out.append((m, m.rng))
        for child in getattr(m, "_children", {}).values():
            walk(child)

    for m in task.modules.values():
        walk(m)
    if isinstance(getattr(task, "rng", None), np.random.Generator):
        out.append((task, task.rng))
    return out


def _fit(task, source, cfg, run_dir, config, resume, progress, comm):
    run_dir = Path(run_dir)
    root, parallel = comm.rank == 0, comm.size > 1
    params = collect_params(**task.modules)
    opt = make_optimizer(cfg, params)
    sched = make_schedule(cfg)
    gens = named_generators(task.modules)
    st = _State()
    metrics_path = run_dir / "metrics.jsonl"
    ema = WeightAverage(params, cfg.ema) if cfg.ema > 0 else None
    reducer = distributed.GradientReducer(comm, params) if parallel else None

    if resume:
        _restore(task, source, opt, gens, st, run_dir, ema)  # every rank: rank 0 reads, sends
        if root:
            _truncate_metrics(metrics_path, st.step)
    elif root and metrics_path.exists():
        metrics_path.unlink()
    distributed.broadcast_params(comm, params)

    saved_step = [st.step if resume else None]

    def checkpoint(name):
        extra_arrays, extra_obj = task.extra_state()  # every rank: a carried state is gathered
        if not root:
            return
        # The best checkpoint holds the weights that were evaluated: the average, when there is one.
        with ema.swapped_in() if (ema is not None and name == "best") else contextlib.nullcontext():
            arrays = {}
            for mname, m in task.modules.items():
                arrays.update({f"{mname}.{k}": v.copy() for k, v in m.state_dict().items()})
        if ema is not None and name == "last":
            arrays.update({f"ema/{k}": v for k, v in ema.average.items()})
        osd = opt.state_dict()
        arrays.update({f"optim/{k}": v for k, v in osd["arrays"].items()})
        arrays.update({f"extra/{k}": v for k, v in extra_arrays.items()})
        meta = {"config": config, "step": st.step, "train": dataclasses.asdict(cfg),
                "optimizer": osd["scalars"],
                "rng": {k: g.bit_generator.state for k, g in gens.items()},
                "source": source.state_dict(), "extra": extra_obj, "best": st.best,
                "best_step": st.best_step, "bad_evals": st.bad_evals, "elapsed": st.elapsed,
                "tokens": st.tokens, "last_eval": st.last_eval, "monitor": cfg.monitor}
        save_checkpoint(run_dir, name, arrays, task.task, meta)
        if name == "last":
            saved_step[0] = st.step

    metrics = open(metrics_path, "a", encoding="utf-8") if root else None

    def log(obj):
        if metrics is not None:
            metrics.write(json.dumps(_jsonable(obj)) + "\n")
            metrics.flush()

    bar = Progress(total_steps=cfg.steps, minutes=cfg.minutes, enabled=progress and root,
                   start_step=st.step)
    t_start = time.perf_counter()
    elapsed0 = st.elapsed
    eval_time = 0.0  # seconds spent evaluating in this invocation (not counted in tokens/s)
    run_tokens = 0
    win_loss, win_n, win_tokens, win_t = 0.0, 0, 0, time.perf_counter()
    stopped = None
    last_eval_step = st.step if resume else None
    out_of_time = False  # data-parallel: rank 0's clock, received with the last update

    def run_eval():
        nonlocal eval_time, last_eval_step
        t0 = time.perf_counter()
        modes = {n: m.training for n, m in task.modules.items()}
        for m in task.modules.values():
            m.eval()
        try:
            with ema.swapped_in() if ema is not None else contextlib.nullcontext():
                figures = _jsonable(task.evaluate()) if root else None
        finally:
            for n, m in task.modules.items():
                m.train(modes[n])
        figures = comm.broadcast(figures)
        eval_time += time.perf_counter() - t0
        last_eval_step = st.step
        st.elapsed = elapsed0 + time.perf_counter() - t_start
        st.last_eval = figures
        log({"kind": "eval", "step": st.step, "time": round(st.elapsed, 3), **figures})
        improved = False
        if cfg.monitor in figures:
            value = figures[cfg.monitor]
            if _better(value, st.best, cfg.monitor_mode):
                st.best, st.best_step, st.bad_evals = value, st.step, 0
                improved = True
            else:
                st.bad_evals += 1
        bar.message(f"step {st.step}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else
                                                   f"{k} {v}" for k, v in figures.items())
                    + ("  (best)" if improved else ""))
        return improved

    try:
        while True:
            if cfg.steps is not None and st.step >= cfg.steps:
                stopped = "steps"
                break
            if out_of_time if parallel else \
                    cfg.minutes is not None and time.perf_counter() - t_start >= cfg.minutes * 60:
                stopped = "minutes"
                break
            step = st.step + 1
            # with only a time budget, a cosine follows the clock: the fraction of this run's minutes spent
            spent = (None if cfg.steps is not None or cfg.minutes is None
                     else (time.perf_counter() - t_start) / (cfg.minutes * 60))
            opt.lr = sched(step, spent)
            batch = source.next_batch()
            opt.zero_grad()
            # None: a rank given no row of this batch (an epoch's short last one) adds nothing
            out = task.train_step(batch) if batch is not None else {"loss": 0.0, "tokens": 0, "count": 0}
            loss = float(out["loss"])
            ntok = int(out.get("tokens", 0))
            if parallel:
                late = root and cfg.minutes is not None and \
                    time.perf_counter() - t_start >= cfg.minutes * 60
                loss, _, ntok, late, spent_all = reducer.reduce(
                    loss, out.get("count", ntok), ntok, float(late), (spent or 0.0) if root else 0.0)
                out_of_time = late > 0
                if spent is not None:
                    opt.lr = sched(step, spent_all)
            if not math.isfinite(loss):
                raise UserError(f"training diverged: loss is {loss} at step {step}; "
                                f"try a lower --lr or a smaller --clip")
            gnorm = clip_grad_norm(params, cfg.clip) if cfg.clip > 0 else None
            opt.step()
            if ema is not None:
                ema.update(step)
            st.step = step
            st.tokens += ntok
            run_tokens += ntok
            win_loss += loss
            win_n += 1
            win_tokens += ntok
            now = time.perf_counter()
            train_time = max(1e-9, now - t_start - eval_time)
            bar.update(step, loss, run_tokens / train_time, now - t_start)
            if step % cfg.log_every == 0:
                st.elapsed = elapsed0 + now - t_start
                rec = {"kind": "train", "step": step, "loss": win_loss / win_n, "lr": opt.lr,
                       "tokens_per_s": round(win_tokens / max(1e-9, now - win_t), 1),
                       "time": round(st.elapsed, 3)}
                if gnorm is not None:
                    rec["grad_norm"] = gnorm
                log(rec)
                win_loss, win_n, win_tokens, win_t = 0.0, 0, 0, time.perf_counter()
            improved = False
            if step % cfg.eval_every == 0:
                improved = run_eval()
            st.elapsed = elapsed0 + time.perf_counter() - t_start
            if improved:
                checkpoint("best")
            if step % cfg.checkpoint_every == 0:
                checkpoint("last")
            if cfg.patience and st.bad_evals >= cfg.patience:
                stopped = "early_stopping"
                break
        if last_eval_step != st.step and st.step > 0:
            if run_eval():
                st.elapsed = elapsed0 + time.perf_counter() - t_start
                checkpoint("best")
        st.elapsed = elapsed0 + time.perf_counter() - t_start
        checkpoint("last")
    except KeyboardInterrupt:
        # The last checkpoint is whole (written atomically) and resumes exactly; the steps since are lost.
        bar.close()
        where = f"{run_dir}/last.json holds step {saved_step[0]}" if saved_step[0] is not None \
            else "no checkpoint was written yet"
        bar.message(f"interrupted at step {st.step}; {where} (continue with --resume)")
        raise
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()

    run_time = time.perf_counter() - t_start
    plot_path = plot_metrics(metrics_path, run_dir / "loss.png") if root else None
    return {"step": st.step, "stopped": stopped, "best": st.best, "best_step": st.best_step,
            "monitor": cfg.monitor, "last_eval": st.last_eval, "elapsed": st.elapsed,
            "tokens_per_s": run_tokens / max(1e-9, run_time - eval_time), "run_dir": str(run_dir),
            "plot": str(plot_path) if plot_path else None}


class WeightAverage:
    """An exponential moving average of the parameters: avg = d avg + (1 - d) w after every update, with
    d = min(decay, (1 + step) / (10 + step)) so that the first updates are not swamped by the initial
    weights (the warm-up of TensorFlow's ExponentialMovingAverage)."""

    def __init__(self, params, decay):
        self.params, self.decay = params, decay
        self.average = {n: p.copy() for n, p, _ in params}

    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p, _ in self.params:
            a = self.average[n]
            a -= (1 - d) * (a - p)  # = d a + (1 - d) p

    @contextlib.contextmanager
    def swapped_in(self):
        """Inside the block the parameters hold the average (in place); the raw weights come back after."""
        raw = {n: p.copy() for n, p, _ in self.params}
        for n, p, _ in self.params:
            p[...] = self.average[n]
        try:
            yield
        finally:
            for n, p, _ in self.params:
                p[...] = raw[n]

    def load(self, arrays):
        missing = sorted(set(self.average) - set(arrays))
        if missing:
            raise KeyError(f"no weight average for {missing[0]} (was the run trained without --ema?)")
        for n in self.average:
            self.average[n][...] = arrays[n]


def _restore(task, source, opt, gens, st, run_dir, ema=None):
    """Load run_dir/last into the task, source, optimizer, generators, counters and weight average."""
    arrays, meta, _ = load_checkpoint(run_dir, "last", task.task)
    try:
        for mname, m in task.modules.items():
            pre = mname + "."
            m.load_state_dict({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)})
        opt.load_state_dict({"scalars": meta["optimizer"],
                             "arrays": {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}})
        for k, g in gens.items():
            g.bit_generator.state = meta["rng"][k]
        source.load_state_dict(meta["source"])
        if ema is not None:
            ema.load({k[4:]: v for k, v in arrays.items() if k.startswith("ema/")})
        task.load_extra_state({k[6:]: v for k, v in arrays.items() if k.startswith("extra/")},
                              meta.get("extra") or {})
        st.step = int(meta["step"])
        st.best, st.best_step = meta.get("best"), meta.get("best_step")
        st.bad_evals = int(meta.get("bad_evals", 0))
        st.elapsed = float(meta.get("elapsed", 0.0))
        st.tokens = int(meta.get("tokens", 0))
        st.last_eval = meta.get("last_eval") or {}
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{run_dir}/last.json: checkpoint does not match this model and optimizer "
                        f"({e.__class__.__name__}: {e})") from None


# --- the loss plot ---------------------------------------------------------------------------------


def plot_metrics(metrics_path, out_path):
    """Training loss (and every validation figure ending in "loss") against the step, as a PNG.

    Returns the path written, or None when matplotlib is missing (the figures stay in metrics.jsonl).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("rnnkit: matplotlib is not installed, no loss.png (pip install 'rnnkit[plot]')",
              file=sys.stderr)
        return None
    train, evals = [], []
    if not Path(metrics_path).exists():
        return None
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        (train if rec.get("kind") == "train" else evals).append(rec)
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    keys = sorted({k for r in evals for k in r if k.endswith("loss")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in evals if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=k.replace("_", " "), ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name("." + out_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path
