"""The long-range memory tasks (adding, copy, selective-copy, induction and recall,
`rnnkit.data.synthetic`) as tasks: the training loop's view of a `MemoryModel` on its fixed test set
(`MemoryTask`), and the run directory of `rnnkit train adding|copy|selective-copy|induction|recall`,
whose checkpoint meta's "config" is the run's `MemoryConfig`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rnnkit.data.synthetic import TASKS, SyntheticSource, test_set
from rnnkit.errors import UserError
from rnnkit.models.memory import MemoryConfig, MemoryModel, evaluate_model
from rnnkit.train.checkpoint import has_checkpoint, load_checkpoint


class MemoryTask:
    """`rnnkit.train.loop.TrainTask` for the long-range memory tasks."""

    def __init__(self, cfg: MemoryConfig, dtype=None):
        self.cfg = cfg
        self.task = cfg.task
        self.model = MemoryModel(cfg, dtype)
        self.modules = {"model": self.model}
        self._test = None

    def test_data(self):
        if self._test is None:
            self._test = self.test_data_at(self.cfg.length)
        return self._test

    def test_data_at(self, length):
        """A fixed test set of this run's task at sequence length `length` (recall: with its pairs
        scaled to it, `MemoryConfig.pairs_at`)."""
        return test_set(self.cfg.task, length, self.cfg.test_size, self.cfg.seed, self.model.dtype,
                        **self.cfg.data_options(length))

    def source(self):
        """The run's endless training batches."""
        return SyntheticSource(self.cfg.task, self.cfg.length, self.cfg.batch_size, seed=self.cfg.seed,
                               dtype=self.model.dtype, **self.cfg.data_options())

    def train_step(self, batch):
        x, y = batch
        loss, dpred = self.model.loss(x, y)
        self.model.backward(dpred)
        return {"loss": loss, "tokens": int(x.shape[0] * x.shape[1])}

    def evaluate(self):
        figures = evaluate_model(self.model, *self.test_data())
        key = "test_mse" if self.cfg.task == "adding" else "test_loss"
        return {"val_loss": figures[key], **figures}

    def evaluate_lengths(self, lengths):
        """[{"length", test figures}] at each test length: a recurrent model runs at any length, and
        the induction task asks whether it generalises beyond the one it was trained at; recall, how
        many more pairs its fixed-size state holds at a longer length ("pairs" in its rows)."""
        rows = []
        for T in lengths:
            figures = evaluate_model(self.model, *self.test_data_at(T))
            row = {"length": T, "test_loss": figures["test_loss"], "test_acc": figures["test_acc"]}
            if self.cfg.task == "recall":
                row.update(pairs=figures["pairs"], test_seq_acc=figures["test_seq_acc"])
            rows.append(row)
        return rows

    def extra_state(self):
        return {}, {}

    def load_extra_state(self, arrays, obj):
        pass

    def config(self):
        return asdict(self.cfg)


def load_run(run_dir, which=None):
    """(MemoryTask with the run's weights, meta). Uses best.json when there is one, else last.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    which = which or ("best" if has_checkpoint(run_dir, "best") else "last")
    arrays, meta, task_name = load_checkpoint(run_dir, which)
    if task_name not in TASKS:
        raise UserError(f"{run_dir}: a run of task {task_name!r}, expected one of {', '.join(TASKS)}")
    try:
        cfg = MemoryConfig(**meta["config"])
        task = MemoryTask(cfg)
        task.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir}/{which}.json: checkpoint does not match a {task_name} model "
                        f"({e.__class__.__name__}: {e})") from None
    return task, meta
