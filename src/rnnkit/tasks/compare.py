"""`rnnkit compare`: the registered cells side by side on one task, each at the parameter count
nearest one target and on an equal budget (minutes or updates), and the training speed of each cell's
recurrent stack against the sequence length.

Dimensions, declared once for this module:
    T  time steps    N  batch    D  input size of the recurrent stack    H  hidden size    L  layers

A task of the comparison is one entry of `TASKS` (a `CompareTask`): how to build a cell's model and its
training run at a given size, which evaluation figure the table shows, and the task's defaults (its
target parameter count, budget and training settings). The cells are read from the registry
(`rnnkit.cells.names()`), so a cell registered anywhere takes part with no line here.

`run_compare(cfg, out)` trains one ordinary run per cell into out/<cell>/ (`rnnkit eval` and
`rnnkit sample` open it) and writes out/compare.json and out/compare.md; `speed_table(cfg, out)`
writes out/speed.json and out/speed.md. The picture and the HTML page are `rnnkit.report.compare`'s.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from rnnkit import cells as registry
from rnnkit import kernels
from rnnkit.errors import UserError
from rnnkit.train.checkpoint import check_run_dir, prepare_run_dir, write_json_atomic
from rnnkit.train.loop import TrainConfig, fit

DEFAULT_LENGTHS = (128, 256, 512, 1024, 2048, 4096)  # the speed table's sequence lengths


@dataclass
class CompareConfig:
    task: str = "selective-copy"  # a key of TASKS; the default needs no data
    cells: list = field(default_factory=list)  # registered cell names; empty: every registered cell
    params: int | None = None  # target parameter count of each model; None: the task's
    layers: int = 2  # recurrent layers of every cell (the same depth, widths matched to params) ...
    layers_of: dict = field(default_factory=dict)  # ... except these cells: {cell: layers}
    minutes: float | None = None  # budget of each cell's run in wall-clock minutes, or ...
    updates: int | None = None  # ... in updates; neither: the task's updates
    eval_every: int | None = None  # updates between evaluations (the curves' points); None: the task's
    seed: int = 0  # weights, batches and test set of every run
    data: str | None = None  # lm: the text (None: $RNNKIT_DATA/tinyshakespeare/input.txt)
    cell_options: dict = field(default_factory=dict)  # options of the cells, each cell takes its own
    test_size: int | None = None  # memory tasks: the fixed test set's size; None: the task's (1000)
    gen_seconds: float = 1.0  # how long one token at a time is timed for, per cell
    force: bool = False  # replace an earlier comparison in the output folder and its runs
    progress: bool = True  # each run's progress bar (stderr, terminals only)
    lengths: list = field(default_factory=lambda: list(DEFAULT_LENGTHS))  # --speed's T
    speed_batch: int = 16  # --speed's N

    def validate(self):
        """Raise UserError naming the first bad setting (as its CLI flag)."""
        if self.task not in TASKS:
            raise UserError(f"--task {self.task}: expected one of {', '.join(TASKS)}")
        known = registry.names()
        for flag, given in (("--cells", self.cells), ("--layers", list(self.layers_of))):
            bad = [c for c in given if c not in known]
            if bad:
                raise UserError(f"{flag}: unknown cell {bad[0]!r}; expected a comma-separated subset "
                                f"of {','.join(known)}")
        self.cells = list(dict.fromkeys(self.cells))  # a cell named twice: one run, one directory
        if self.data is not None and not TASKS[self.task].reads_data:
            raise UserError(f"--data: --task {self.task} generates its data; drop --data")
        if self.params is not None and self.params < 1:
            raise UserError(f"--params: expected a positive parameter count, got {self.params}")
        if self.minutes is not None and self.updates is not None:
            raise UserError("--minutes and --updates: give one budget per cell, not both")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise UserError(f"--minutes: expected a positive number, got {self.minutes}")
        if self.updates is not None and self.updates < 1:
            raise UserError(f"--updates: expected a positive integer, got {self.updates}")
        if self.eval_every is not None and self.eval_every < 1:
            raise UserError(f"--eval-every: expected a positive integer, got {self.eval_every}")
        if min([self.layers, *self.layers_of.values()]) < 1:
            raise UserError("--layers: expected positive layer counts")
        if not self.lengths or min(self.lengths) < 2:
            raise UserError(f"--lengths: expected sequence lengths of at least 2, got {self.lengths}")
        if self.speed_batch < 1:
            raise UserError(f"--batch: expected a positive integer, got {self.speed_batch}")

    def chosen_cells(self):
        return list(self.cells) or registry.names()

    def layers_for(self, cell):
        return self.layers_of.get(cell, self.layers)

    def target(self):
        return self.params if self.params is not None else TASKS[self.task].params


class Spec(NamedTuple):
    """One model of the comparison: a cell at a size."""

    cell: str
    hidden: int  # H
    layers: int  # L
    seed: int
    options: dict  # the cell's options (its own of CompareConfig.cell_options)


class Built(NamedTuple):
    """A cell's run on a task, ready for `fit`."""

    task: object  # what `fit` trains (LMTask, MemoryTask)
    model: object  # its model: `.rnn` the recurrent stack, `num_parameters()`
    source: Callable  # () -> the endless training batches
    config: dict  # the run's configuration, as `rnnkit train <task>` writes it (eval, sample read it)
    generate: Callable  # () -> step(token) -> next token: one token at a time, batch 1, state carried


@dataclass(frozen=True)
class CompareTask:
    """How `compare` trains a cell on one task (an entry of TASKS)."""

    title: str  # the table's words for the task
    build: Callable  # (Spec, CompareConfig, prepared) -> Built
    metric: str  # the figure of the last evaluation the table ranks by: "test_acc" | "val_loss"
    metric_title: str
    higher_is_better: bool
    params: int  # the default target parameter count
    updates: int  # the default budget of each run, in updates
    eval_every: int  # the default updates between evaluations
    train: dict  # TrainConfig fields of every run (lr, clip, ...)
    prepare: Callable = lambda cfg: None  # (CompareConfig) -> data read once for every cell (a text)
    reads_data: bool = False  # takes --data (CompareConfig.data)
    settings: dict = field(default_factory=dict)  # what the task fixes, shown with the table


# --- the tasks ------------------------------------------------------------------------------------


def _memory_task(name, title, length, params, updates, eval_every, metric="test_acc",
                 metric_title="accuracy", higher_is_better=True, **data):
    """A CompareTask over one of the generated memory tasks (`rnnkit.tasks.memory`): a one-hot input,
    the recurrent stack, a linear head; batch 64, Adam at 0.01, clip 1, float32 (the settings of the
    selective-copy comparison in docs/RESULTS.md). `data`: MemoryConfig's own fields of the task."""

    def build(spec, cfg, prepared):
        from rnnkit.models.memory import MemoryConfig
        from rnnkit.tasks.memory import MemoryTask

        mc = MemoryConfig(task=name, length=length, cell=spec.cell, hidden=spec.hidden,
                          layers=spec.layers, seed=spec.seed, cell_options=dict(spec.options),
                          dtype="float32", **data,
                          **({"test_size": cfg.test_size} if cfg.test_size else {}))
        task = MemoryTask(mc)
        return Built(task, task.model, task.source, asdict(mc), lambda: _memory_generator(task.model))

    return CompareTask(title=title, build=build, metric=metric, metric_title=metric_title,
                       higher_is_better=higher_is_better, params=params, updates=updates,
                       eval_every=eval_every, train={"lr": 1e-2, "clip": 1.0},
                       settings={"length": length, "batch": 64, "lr": 1e-2, "clip": 1.0,
                                 "dtype": "float32", **data})


def _memory_generator(model):
    """One token at a time through a memory model's input (one-hot or embedding), stack and head, its
    argmax fed back as the next input (batch 1)."""
    rnn, W, b = model.rnn, model.head.params["W"], model.head.params["b"]
    state = [None]

    def step(token):
        x = model.inputs(np.array([[token]]))[0]  # (1, D)
        y, state[0] = rnn.step(x, state[0])
        return int(np.argmax(y[0] @ W + b))  # logits = y W + b

    return step


LM_EMBED, LM_BATCH, LM_SEQ_LEN, LM_EVAL_CHARS = 64, 32, 64, 100_000


def _lm_text_path(cfg):
    if cfg.data:
        return Path(cfg.data)
    return Path(os.environ.get("RNNKIT_DATA", "../shared/data")) / "tinyshakespeare" / "input.txt"


def _lm_prepare(cfg):
    """The text, read once: its vocabulary and its train / validation split (the last 10%)."""
    from rnnkit.data.text import CharVocab, split_ids
    from rnnkit.tasks.lm import load_corpus

    path = _lm_text_path(cfg)
    if not path.is_file():
        raise UserError(f"--task lm: no text at {path} (set RNNKIT_DATA to the folder holding "
                        f"tinyshakespeare/input.txt, or pass --data FILE)")
    text, info = load_corpus(str(path), "utf-8", False)
    vocab = CharVocab.from_text(text, "char")
    train_ids, val_ids = split_ids(vocab.encode(text, str(path)), 0.1)
    if len(train_ids) < LM_BATCH * (LM_SEQ_LEN + 1) or len(val_ids) < 2:
        raise UserError(f"--data {path}: {len(text)} characters is too short for {LM_BATCH} streams of "
                        f"{LM_SEQ_LEN + 1} and a validation split")
    return {"path": str(path), "info": info, "vocab": vocab, "train": train_ids, "val": val_ids}


def _lm_build(spec, cfg, prepared):
    from rnnkit.models.lm import CharLM, LMConfig
    from rnnkit.tasks.lm import DATA_DEFAULTS, LMTask
    from rnnkit.train.batches import StreamBatches

    vocab = prepared["vocab"]
    lm_cfg = LMConfig(vocab_size=len(vocab), cell=spec.cell, embed=LM_EMBED, hidden=spec.hidden,
                      layers=spec.layers, seed=spec.seed, cell_options=dict(spec.options))
    model = CharLM(lm_cfg)
    task = LMTask(model, prepared["val"], eval_chars=LM_EVAL_CHARS)
    data_args = {**DATA_DEFAULTS, "data": prepared["path"], "batch": LM_BATCH, "seq_len": LM_SEQ_LEN}
    config = {"model": lm_cfg.__dict__, "vocab": vocab.to_json(), "corpus": prepared["info"],
              "data_args": data_args,
              "train_extra": {"eval_chars": LM_EVAL_CHARS, "bptt_checkpoint": None}}

    def source():
        return StreamBatches(prepared["train"], LM_BATCH, LM_SEQ_LEN, seed=spec.seed)

    return Built(task, model, source, config, lambda: _lm_generator(model))


def _lm_generator(model):
    """One character at a time through `CharLM.step` (the streaming API), greedy."""
    state = [None]

    def step(token):
        logits, state[0] = model.step(np.array([token]), state[0])
        return int(np.argmax(logits[0]))

    return step


# One entry per task; another task of `rnnkit.tasks.memory` is one more `_memory_task` line.
TASKS = {
    "selective-copy": _memory_task(
        "selective-copy", "selective copying (8 data tokens among noise, T = 128)", length=128,
        params=21_500, updates=1500, eval_every=250, tokens=8, vocab=16),
    "induction": _memory_task(
        "induction", "induction heads (T = 64)", length=64, params=21_500, updates=2000,
        eval_every=250, vocab=16),
    "recall": _memory_task(
        "recall", "multi-query associative recall (4 pairs, T = 64, V = 256)", length=64,
        params=50_000, updates=3000, eval_every=500, vocab=256, pairs=4, embed=32),
    "lm": CompareTask(
        title="character language model (tinyshakespeare)", build=_lm_build, prepare=_lm_prepare,
        reads_data=True,
        metric="val_loss", metric_title="validation loss (nats/char)", higher_is_better=False,
        params=250_000, updates=1000, eval_every=200, train={"lr": 2e-3, "clip": 5.0},
        settings={"embed": LM_EMBED, "batch": LM_BATCH, "seq_len": LM_SEQ_LEN, "lr": 2e-3,
                  "clip": 5.0, "dtype": "float32", "eval_chars": LM_EVAL_CHARS}),
}


# --- sizes ----------------------------------------------------------------------------------------


def match_hidden(count, target, h_max=1 << 16):
    """(H, count(H)): the hidden size whose model's parameter count is closest to `target` (a tie: the
    smaller H). `count(H)` must not decrease with H; each H is counted once. The count then lies within
    half the step between the counts of H - 1 and H + 1 of the target, or H is 1 and still above it."""
    seen = {}

    def n(h):
        if h not in seen:
            seen[h] = count(h)
        return seen[h]

    if n(1) >= target:
        return 1, n(1)
    lo, hi = 1, 2  # n(lo) < target, and then n(hi) >= target
    while n(hi) < target:
        if hi >= h_max:
            return hi, n(hi)
        lo, hi = hi, min(2 * hi, h_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if n(mid) < target:
            lo = mid
        else:
            hi = mid
    h = min((lo, hi), key=lambda k: (abs(n(k) - target), k))
    return h, n(h)


def count_parameters(built):
    return int(sum(m.num_parameters() for m in built.task.modules.values()))


def cell_spec(cfg, cell, hidden):
    """The Spec of `cell` at `hidden` units, with the options of cfg's that this cell has."""
    have = registry.options(cell)
    options = {k: v for k, v in cfg.cell_options.items() if k in have}
    return Spec(cell, hidden, cfg.layers_for(cell), cfg.seed, options)


def sized_spec(cfg, cell, prepared):
    """(Spec, parameter count) of `cell` at cfg's layers, its hidden size matched to the target."""
    entry = TASKS[cfg.task]

    def count(h):
        return count_parameters(entry.build(cell_spec(cfg, cell, h), cfg, prepared))

    hidden, n = match_hidden(count, cfg.target())
    return cell_spec(cfg, cell, hidden), n


def state_floats(rnn):
    """Floats of the recurrent state one stream carries from step to step, every layer and part
    (`Cell.state_shape`: the LSTM's h and c, Mamba's convolution window and (E, S) matrix)."""
    per_layer = sum(math.prod(shape) for shape in rnn.cell.state_shape(1, rnn.hidden_size).values())
    return int(per_layer * rnn.num_layers * rnn.num_directions)


def generation_speed(step, seconds, warmup=8, block=16):
    """Tokens a second of `step(token) -> next token`, fed its own output, timed for at least
    `seconds` after `warmup` untimed tokens (first-call allocations)."""
    token = 0
    with kernels.flush_subnormals():
        for _ in range(warmup):
            token = step(token)
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(block):
                token = step(token)
            n += block
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return n / elapsed


# --- the comparison -------------------------------------------------------------------------------


def check_out(out, cfg, name):
    """Refuse an output folder that holds an earlier comparison (`name`: compare.json or speed.json)
    or a run in progress, before anything is trained; --force replaces them."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if (out / name).exists() and not cfg.force:
        raise UserError(f"--out {out}: holds an earlier comparison ({name}); pass --force to replace "
                        f"it, or another --out")


def train_config(cfg):
    entry = TASKS[cfg.task]
    steps = None if cfg.minutes is not None else (cfg.updates or entry.updates)
    every = cfg.eval_every or entry.eval_every
    return TrainConfig(steps=steps, minutes=cfg.minutes, optimizer="adam", eval_every=every,
                       checkpoint_every=every, seed=cfg.seed, **entry.train)


def run_compare(cfg: CompareConfig, out, log=None) -> dict:
    """Train every chosen cell on cfg.task into out/<cell>/ and write out/compare.json and
    out/compare.md. A cell that fails (cannot be built for the task, or diverges) gets its row marked
    "failed" with the reason and the others go on. `log(row)`: called as each row is done.
    Returns the comparison (compare.json's content)."""
    cfg.validate()
    entry = TASKS[cfg.task]
    out = Path(out)
    chosen = cfg.chosen_cells()
    check_out(out, cfg, "compare.json")
    for cell in chosen:
        check_run_dir(out / cell, force=cfg.force)
    prepared = entry.prepare(cfg)
    tcfg = train_config(cfg)
    tcfg.validate()
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    t_all = time.perf_counter()
    for cell in chosen:
        row, curve = _run_cell(cfg, entry, cell, prepared, tcfg, out)
        rows.append(row)
        curves[cell] = curve
        if log is not None:
            log(row)
    result = {"task": cfg.task, "title": entry.title, "metric": entry.metric,
              "metric_title": entry.metric_title, "higher_is_better": entry.higher_is_better,
              "settings": {"params": cfg.target(), "budget": budget_words(cfg),
                           "minutes": cfg.minutes, "updates": tcfg.steps,
                           "eval_every": tcfg.eval_every, "seed": cfg.seed,
                           "cell_options": cfg.cell_options, **entry.settings},
              "rows": rows, "curves": curves, "seconds": round(time.perf_counter() - t_all, 1),
              "machine": machine()}
    write_json_atomic(out / "compare.json", result)
    (out / "compare.md").write_text(markdown(result), encoding="utf-8")
    return result


def _run_cell(cfg, entry, cell, prepared, tcfg, out):
    """(row, validation curve) of one cell's run."""
    run_dir = out / cell
    row = {"cell": cell, "status": "ok"}
    t0 = time.perf_counter()
    try:
        spec, n = sized_spec(cfg, cell, prepared)
        built = entry.build(spec, cfg, prepared)
        row.update({"layers": spec.layers, "hidden": spec.hidden, "params": n,
                    "params_off": round((n - cfg.target()) / cfg.target(), 4),
                    "state_floats": state_floats(built.model.rnn), "run_dir": str(run_dir)})
        prepare_run_dir(run_dir, force=cfg.force)
        summary = fit(built.task, built.source(), tcfg, run_dir, built.config,
                      progress=cfg.progress)
        last = summary["last_eval"] or {}
        row.update({"steps": summary["step"], "val_loss": last.get("val_loss"),
                    "test_acc": last.get("test_acc"), "metric": last.get(entry.metric),
                    "best_val_loss": summary["best"], "best_step": summary["best_step"],
                    "train_tokens_per_s": round(summary["tokens_per_s"], 1)})
        built.model.eval()
        row["gen_tokens_per_s"] = round(generation_speed(built.generate(), cfg.gen_seconds), 1)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a cell (a plugin's too) may fail any way: its row says how
        row["status"] = "failed"
        row["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    try:  # a minutes budget buys fewer updates on a busy machine: what the run shared it with
        row["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return row, read_curve(run_dir / "metrics.jsonl", entry.metric)


def read_curve(path, metric):
    """[[step, seconds, val_loss, metric]] of a run's evaluations (empty when it logged none)."""
    path = Path(path)
    if not path.is_file():
        return []
    curve = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "eval":
            curve.append([rec["step"], rec.get("time"), rec.get("val_loss"), rec.get(metric)])
    return curve


def budget_words(cfg):
    if cfg.minutes is not None:
        return f"{cfg.minutes:g} minutes per cell"
    return f"{cfg.updates or TASKS[cfg.task].updates} updates per cell"


def machine():
    import platform

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "machine": platform.machine(), "cores": os.cpu_count(), "rnnkit_threads": kernels.threads()}
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]  # others' work on a shared VM
    except OSError:
        pass
    return info


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def table_rows(result):
    """The table's header and rows as strings (compare.md and compare.html)."""
    header = ["cell", "layers x hidden", "parameters", result["metric_title"], "validation loss",
              "updates", "training tokens/s", "generation tokens/s", "state floats / stream",
              "seconds"]
    rows = []
    for r in result["rows"]:
        if r["status"] != "ok":
            size = f"{r['layers']} x {r['hidden']}" if "hidden" in r else ""
            rows.append([r["cell"], size, _fmt(r.get("params"), ","), f"failed: {r['error']}", "", "",
                         "", "", _fmt(r.get("state_floats"), ","), _fmt(r["seconds"], ".0f")])
            continue
        metric = r["metric"]
        shown = "" if metric is None else (f"{metric:.3f}" if result["metric"] != "val_loss"
                                           else f"{metric:.4f}")
        rows.append([r["cell"], f"{r['layers']} x {r['hidden']}",
                     f"{r['params']:,} ({100 * r['params_off']:+.1f}%)", shown,
                     _fmt(r["val_loss"], ".4f"), f"{r['steps']:,}",
                     _fmt(r["train_tokens_per_s"], ",.0f"), _fmt(r["gen_tokens_per_s"], ",.0f"),
                     f"{r['state_floats']:,}", _fmt(r["seconds"], ".0f")])
    return header, rows


def markdown(result):
    s = result["settings"]
    header, rows = table_rows(result)
    lines = [f"{result['title']}: every cell at about {s['params']:,} parameters, "
             f"{s['budget']}, seed {s['seed']}. {result['metric_title'].capitalize()} and validation "
             f"loss at the end of the budget; training tokens/s over the run (evaluations left out); "
             f"generation one token at a time, batch 1, state carried; the state a stream carries "
             f"between steps, in floats.", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append(f"\nTotal {result['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


# --- speed against the sequence length ------------------------------------------------------------


def speed_table(cfg: CompareConfig, out, log=None) -> dict:
    """Training tokens/s (forward + backward of the recurrent stack alone, batch cfg.speed_batch,
    float32) of each chosen cell at each of cfg.lengths, at the sizes the comparison would train; each
    length times the cells in turn (`rnnkit.bench.interleaved_times`), so a load on the machine falls
    on all of them alike. Writes out/speed.json and out/speed.md; returns speed.json's content."""
    from rnnkit.bench import interleaved_times

    cfg.validate()
    entry = TASKS[cfg.task]
    out = Path(out)
    check_out(out, cfg, "speed.json")
    prepared = entry.prepare(cfg)
    chosen, sizes, stacks, failed = cfg.chosen_cells(), {}, {}, {}
    for cell in chosen:
        try:
            spec, n = sized_spec(cfg, cell, prepared)
            stacks[cell] = entry.build(spec, cfg, prepared).model.rnn
            sizes[cell] = {"layers": spec.layers, "hidden": spec.hidden, "params": n}
        except Exception as e:  # noqa: BLE001 - as in run_compare: the row says why
            failed[cell] = f"{type(e).__name__}: {e}"
    N = cfg.speed_batch
    rng = np.random.default_rng(cfg.seed)
    table = {cell: {} for cell in stacks}
    with kernels.flush_subnormals():
        for T in cfg.lengths:
            fns = {}
            for cell, rnn in stacks.items():
                x = rng.standard_normal((T, N, rnn.input_size)).astype(rnn.dtype)
                dout = rng.standard_normal((T, N, rnn.output_size)).astype(rnn.dtype)
                fns[cell] = _train_pass(rnn, x, dout)
            times = interleaved_times(fns, repeats=5) if fns else {}
            for cell, ts in times.items():
                table[cell][str(T)] = round(T * N / float(np.median(ts)), 1)
            if log is not None:
                log(T, {cell: table[cell][str(T)] for cell in times})
    result = {"task": cfg.task, "params": cfg.target(), "batch": N, "lengths": list(cfg.lengths),
              "sizes": sizes, "tokens_per_s": table, "failed": failed, "machine": machine()}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "speed.json", result)
    (out / "speed.md").write_text(speed_markdown(result), encoding="utf-8")
    return result


def _train_pass(rnn, x, dout):
    rnn.train()

    def run():
        rnn.zero_grad()
        rnn.forward(x)
        rnn.backward(dout)

    return run


def speed_rows(result):
    header = ["cell", "layers x hidden"] + [f"T = {T}" for T in result["lengths"]]
    rows = []
    for cell, by_length in result["tokens_per_s"].items():
        size = result["sizes"][cell]
        rows.append([cell, f"{size['layers']} x {size['hidden']}"]
                    + [f"{by_length[str(T)]:,.0f}" for T in result["lengths"]])
    for cell, why in result["failed"].items():
        rows.append([cell, f"failed: {why}"] + [""] * len(result["lengths"]))
    return header, rows


def speed_markdown(result):
    header, rows = speed_rows(result)
    lines = [f"Training tokens/s of the recurrent stack (forward + backward, batch {result['batch']}, "
             f"float32, median of 5), each cell at about {result['params']:,} parameters on "
             f"{result['task']}, against the sequence length T.", "",
             "| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(result["lengths"])]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def read_json_if_any(path):
    """The JSON object in `path`, or None when there is no such file (the other mode's table)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
