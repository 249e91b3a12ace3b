"""Long-range memory tasks, generated: the adding problem and the copy-memory task.

Dimensions, declared once for this module:
    T  sequence length (the task's "length")    N  batch size

Adding problem (Hochreiter and Schmidhuber 1997, in the form of Le et al. 2015 and Arjovsky et al. 2016):
    x  (T, N, 2)   channel 0: values drawn from U(0, 1); channel 1: a marker, 1 at exactly two steps
                   (one in the first half, one in the second half), 0 elsewhere
    y  (N,)        the sum of the two marked values
Predicting the mean (1.0) gives MSE Var(u1 + u2) = 2/12 = 0.167, the baseline to beat; the task counts
as solved below 0.01. The first marker lies up to T-1 steps before the answer, so the model must carry it.

Copy-memory task (Hochreiter and Schmidhuber 1997; Arjovsky et al. 2016), tokens in {0..9}:
    0 is the blank, 1..8 the symbols, 9 the delimiter ("go")
    x  (T+20, N)   10 random symbols, T-1 blanks, the delimiter, 10 blanks
    y  (T+20, N)   T+10 blanks, then the 10 symbols of the start
A memoryless model predicts blanks, then a uniform guess among the 8 symbols: cross-entropy
10 ln(8) / (T+20) nats per step, the baseline to beat.

Each task has a batch source (endless, seeded, resumable: its position is the generator's state, which
is plain JSON) and a fixed test set drawn from its own seed.
"""

from __future__ import annotations

import math

import numpy as np

COPY_SYMBOLS = 10  # how many symbols are to be remembered
COPY_VOCAB = 10  # blank, 8 symbols, delimiter
COPY_BLANK, COPY_DELIM = 0, 9
TASKS = ("adding", "copy")


def adding_batch(N, T, rng, dtype=np.float32):
    """One adding-problem batch: x (T, N, 2), y (N,)."""
    if T < 2:
        raise ValueError(f"adding problem needs T >= 2, got {T}")
    values = rng.uniform(0.0, 1.0, (T, N))
    half = T // 2
    first = rng.integers(0, half, N)  # one marker in the first half ...
    second = rng.integers(half, T, N)  # ... and one in the second
    marks = np.zeros((T, N))
    cols = np.arange(N)
    marks[first, cols] = 1.0
    marks[second, cols] = 1.0
    x = np.stack([values, marks], axis=-1).astype(dtype)
    y = (values[first, cols] + values[second, cols]).astype(dtype)
    return x, y


def copy_batch(N, T, rng):
    """One copy-memory batch: x (T+20, N), y (T+20, N), int64 tokens."""
    if T < 1:
        raise ValueError(f"copy task needs T >= 1, got {T}")
    S = COPY_SYMBOLS
    total = T + 2 * S
    symbols = rng.integers(1, 9, (S, N))
    x = np.full((total, N), COPY_BLANK, dtype=np.int64)
    y = np.full((total, N), COPY_BLANK, dtype=np.int64)
    x[:S] = symbols
    x[S + T - 1] = COPY_DELIM  # after T-1 blanks: "now repeat"
    y[T + S:] = symbols
    return x, y


def adding_baseline():
    """MSE of always predicting the mean, 1.0: Var(U + U) = 1/6."""
    return 1.0 / 6.0


def copy_baseline(T):
    """Cross-entropy (nats per step) of a memoryless model: blanks known, the 10 symbols guessed."""
    return COPY_SYMBOLS * math.log(8) / (T + 2 * COPY_SYMBOLS)


def make_batch(task, N, T, rng, dtype=np.float32):
    if task == "adding":
        return adding_batch(N, T, rng, dtype)
    if task == "copy":
        return copy_batch(N, T, rng)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def test_set(task, T, size=1000, seed=0, dtype=np.float32):
    """A fixed test set, drawn from a seed kept apart from the training stream's."""
    rng = np.random.default_rng([seed, 7919])
    return make_batch(task, size, T, rng, dtype)


class SyntheticSource:
    """Endless batches of a generated task. The state is the generator's (JSON-able) state."""

    def __init__(self, task, T, batch_size=64, seed=0, dtype=np.float32):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.T, self.batch_size, self.dtype = task, T, batch_size, dtype
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        return make_batch(self.task, self.batch_size, self.T, self.rng, self.dtype)

    def state_dict(self):
        return {"task": self.task, "T": self.T, "batch_size": self.batch_size,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        if d.get("task") != self.task or d.get("T") != self.T:
            raise ValueError(f"source state is for {d.get('task')} T={d.get('T')}, "
                             f"not {self.task} T={self.T}")
        self.rng.bit_generator.state = d["rng"]
