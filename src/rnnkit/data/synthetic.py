"""Long-range memory tasks, generated: the adding problem, the copy-memory task, and the two tasks of
selection, selective copying and induction heads.

Dimensions, declared once for this module:
    T  sequence length (the task's "length")    N  batch size
    M  data tokens of selective copying         V  vocabulary of the selection tasks (16)

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

Selective copying (Gu and Dao 2023, section 4.1; the generator of state-spaces/s4,
`torch_copying_data(variable=True)`), tokens in {0..V-1}:
    0 is the noise token, 1..V-2 the data symbols, V-1 the marker
    x  (T, N)   M data symbols at M random positions (in order) among T-2M noise tokens, then M markers
    y  (M, N)   the M data symbols in order: the answers at the M marker steps, x's last M steps
T counts every step the model reads (s4's L is the noise tokens alone: L = T - 2M). The positions
differ from sequence to sequence, so a model must select the data by content, not by time. Chance:
accuracy 1/(V-2), cross-entropy ln(V-2) nats per answer.

Induction heads (Olsson et al. 2022, as in HazyResearch/safari `generate_induction_head`), same tokens:
    x  (T, N)   T-1 random symbols in 1..V-2, except one trigger (V-1) at a random step p <= T-3;
                the trigger again at the last step T-1
    y  (1, N)   the symbol that followed the first trigger, x[p+1]: the answer at the last step
0 is never drawn (safari's vocabulary of 16 holds 14 symbols and two special tokens, the trigger and an
unused no-op). safari trains a next-token loss at every step, of which only the last is predictable;
here the loss is that one step's. Chance: accuracy 1/(V-2), cross-entropy ln(V-2).

For both, the answers are the batch's last K steps (K = M or 1) and y is (K, N).

Each task has a batch source (endless, seeded, resumable: its position is the generator's state, which
is plain JSON) and a fixed test set drawn from its own seed.
"""

from __future__ import annotations

import math

import numpy as np

COPY_SYMBOLS = 10  # how many symbols are to be remembered
COPY_VOCAB = 10  # blank, 8 symbols, delimiter
COPY_BLANK, COPY_DELIM = 0, 9
TOKEN_NOISE = 0  # the noise token of selective copying (never drawn by induction)
SELECTION_TASKS = ("selective-copy", "induction")
TASKS = ("adding", "copy") + SELECTION_TASKS


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


def selective_copy_batch(N, T, M, V, rng):
    """One selective-copying batch: x (T, N), y (M, N), int64 tokens."""
    if M < 1 or T < 2 * M + 1:
        raise ValueError(f"selective copying needs M >= 1 and T >= 2M + 1, got T={T}, M={M}")
    if V < 4:
        raise ValueError(f"selective copying needs V >= 4 (noise, 2 symbols, marker), got {V}")
    P = T - M  # the data region: M data tokens among P - M noise tokens
    # M distinct positions per column, in time order: the first M of a random permutation, sorted
    pos = np.sort(np.argsort(rng.random((P, N)), axis=0)[:M], axis=0)
    tokens = rng.integers(1, V - 1, (M, N))
    x = np.full((T, N), TOKEN_NOISE, dtype=np.int64)
    x[pos, np.arange(N)] = tokens
    x[P:] = V - 1  # the markers: "now the m-th data token"
    return x, tokens.astype(np.int64)


def induction_batch(N, T, V, rng):
    """One induction-heads batch: x (T, N), y (1, N), int64 tokens."""
    if T < 3:
        raise ValueError(f"induction heads needs T >= 3 (trigger, symbol, trigger), got {T}")
    if V < 4:
        raise ValueError(f"induction heads needs V >= 4 (2 symbols, trigger, no-op), got {V}")
    x = rng.integers(1, V - 1, (T, N)).astype(np.int64)
    p = rng.integers(0, T - 2, N)  # the first trigger, with its symbol at p+1 <= T-2
    cols = np.arange(N)
    x[p, cols] = V - 1
    x[T - 1] = V - 1
    return x, x[p + 1, cols][None]


def answer_steps(task, tokens=None):
    """K of a selection task: how many of the batch's last steps are answers (the rows of y)."""
    return tokens if task == "selective-copy" else 1


def selection_baseline(V):
    """(cross-entropy, accuracy) of a uniform guess among the V-2 symbols: (ln(V-2), 1/(V-2))."""
    return math.log(V - 2), 1.0 / (V - 2)


def adding_baseline():
    """MSE of always predicting the mean, 1.0: Var(U + U) = 1/6."""
    return 1.0 / 6.0


def copy_baseline(T):
    """Cross-entropy (nats per step) of a memoryless model: blanks known, the 10 symbols guessed."""
    return COPY_SYMBOLS * math.log(8) / (T + 2 * COPY_SYMBOLS)


def make_batch(task, N, T, rng, dtype=np.float32, tokens=None, vocab=None):
    """A batch of `task`; `tokens` (M) and `vocab` (V) are the selection tasks' own options."""
    if task == "adding":
        return adding_batch(N, T, rng, dtype)
    if task == "copy":
        return copy_batch(N, T, rng)
    if task == "selective-copy":
        return selective_copy_batch(N, T, tokens, vocab, rng)
    if task == "induction":
        return induction_batch(N, T, vocab, rng)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def test_set(task, T, size=1000, seed=0, dtype=np.float32, **options):
    """A fixed test set, drawn from a seed kept apart from the training stream's. `options`: tokens,
    vocab (`make_batch`)."""
    rng = np.random.default_rng([seed, 7919])
    return make_batch(task, size, T, rng, dtype, **options)


class SyntheticSource:
    """Endless batches of a generated task. The state is the generator's (JSON-able) state.
    `options`: tokens, vocab (`make_batch`)."""

    def __init__(self, task, T, batch_size=64, seed=0, dtype=np.float32, **options):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.T, self.batch_size, self.dtype = task, T, batch_size, dtype
        self.options = options
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        return make_batch(self.task, self.batch_size, self.T, self.rng, self.dtype, **self.options)

    def state_dict(self):
        return {"task": self.task, "T": self.T, "batch_size": self.batch_size,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        if d.get("task") != self.task or d.get("T") != self.T:
            raise ValueError(f"source state is for {d.get('task')} T={d.get('T')}, "
                             f"not {self.task} T={self.T}")
        self.rng.bit_generator.state = d["rng"]
