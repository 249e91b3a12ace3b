"""Resumable batch sources for `rnnkit.train.loop.fit`.

`StreamBatches`: a token stream cut into N parallel streams for truncated BPTT (the language model).
`IndexBatches`: shuffled mini-batches of item indices for full BPTT on padded batches (other tasks give a
`collate` that pads the items into arrays).

Both return to the same batch after `load_state_dict(state_dict())`: the position and the RNG state are
plain JSON.

Dimensions: T time steps (chunk length), N streams / batch size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnkit.train.distributed import check_rows, split


class StreamBatch(NamedTuple):
    x: np.ndarray  # (T, N) input tokens
    y: np.ndarray  # (T, N) next tokens (targets)
    reset: bool  # first chunk of an epoch: the carried hidden state must be reset to zeros


class StreamBatches:
    """Cut `ids` into N equal streams (stream n is ids[n*L : (n+1)*L]); batch k is the k-th chunk of T
    steps of every stream, so the hidden state at the end of one chunk is the right initial state for the
    next (truncated BPTT). Each epoch starts at a random offset in [0, T) (`shuffle_offset`), so chunk
    boundaries fall in different places from epoch to epoch; the state is reset at each epoch's start.
    """

    def __init__(self, ids, batch_size: int, seq_len: int, seed: int = 0, shuffle_offset: bool = True):
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError("ids must be a 1-D token array")
        if batch_size < 1 or seq_len < 1:
            raise ValueError("batch_size and seq_len must be positive")
        self.N, self.T = batch_size, seq_len
        self.L = len(ids) // batch_size  # tokens per stream
        if self.L < seq_len + 1:
            raise ValueError(f"{len(ids)} tokens is too short for {batch_size} streams of one chunk of "
                             f"{seq_len} steps (needs {batch_size * (seq_len + 1)})")
        self.streams = ids[: self.N * self.L].reshape(self.N, self.L).T.copy()  # (L, N)
        self.shuffle_offset = shuffle_offset
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.pos = None  # start of the next chunk in the current epoch; None: start a new epoch
        self.window = (0, self.N, self.N)  # the streams lo:hi of N this process trains on

    def shard(self, rank: int, size: int, what: str = "--batch"):
        """Give `next_batch` only this rank's streams (data-parallel training); the epochs, offsets
        and state stay those of the whole batch."""
        check_rows(self.N, size, what)
        self.window = (*split(self.N, rank, size), self.N)

    def chunks_per_epoch(self, offset=0):
        return (self.L - 1 - offset) // self.T

    def _new_epoch(self):
        offset = int(self.rng.integers(0, min(self.T, self.L - 1 - self.T) + 1)) if self.shuffle_offset \
            else 0
        self.pos = offset
        self.epoch += 1

    def next_batch(self) -> StreamBatch:
        reset = False
        if self.pos is None or self.pos + self.T + 1 > self.L:
            self._new_epoch()
            reset = True
        p, T = self.pos, self.T
        lo, hi, _ = self.window
        x = self.streams[p:p + T, lo:hi]
        y = self.streams[p + 1:p + T + 1, lo:hi]
        self.pos = p + T
        return StreamBatch(x, y, reset)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d: dict):
        self.epoch, self.pos = int(d["epoch"]), (None if d["pos"] is None else int(d["pos"]))
        self.rng.bit_generator.state = d["rng"]


class EpochBatches:
    """Endless batches drawn one epoch at a time: a subclass says how an epoch is cut into batches of
    indices (`epoch_batches(rng)`), `collate(indices)` turns each into the batch. Resumable: the state is
    the epoch, the position and the RNG state from before the epoch was drawn (the epoch's batches are
    re-drawn from it, so the JSON stays small)."""

    def __init__(self, seed: int = 0, collate=None, shuffle: bool = True):
        self.collate = collate or (lambda idx: idx)
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.batches = None
        self.pos = 0
        self._rng_at_epoch = None
        self.part = (0, 1)  # (rank, size): this process collates its part of each batch
        self.window = (0, 0, 0)  # the items lo:hi of the last batch's n

    def shard(self, rank: int, size: int, what: str = "--batch"):
        """Collate only this rank's part of each batch (data-parallel training); a batch of which it
        gets no item (an epoch's short last one) is None."""
        check_rows(getattr(self, "batch_size", size), size, what)
        self.part = (rank, size)

    def epoch_batches(self, rng=None) -> list:
        """One epoch's list of index arrays; `rng` None means no shuffling."""
        raise NotImplementedError

    def _draw(self):
        self._rng_at_epoch = self.rng.bit_generator.state
        self.batches = self.epoch_batches(self.rng if self.shuffle else None)

    def next_batch(self):
        if self.batches is None or self.pos >= len(self.batches):
            self._draw()
            self.epoch += 1
            self.pos = 0
        idx = self.batches[self.pos]
        self.pos += 1
        lo, hi = split(len(idx), *self.part)
        self.window = (lo, hi, len(idx))
        if self.part[1] > 1:
            if hi == lo:
                return None
            idx = idx[lo:hi]
        return self.collate(idx)

    def state_dict(self) -> dict:
        started = self.batches is not None
        return {"epoch": self.epoch, "pos": self.pos, "started": started,
                "rng": self._rng_at_epoch if started else self.rng.bit_generator.state}

    def load_state_dict(self, d: dict):
        self.epoch, self.pos = int(d["epoch"]), int(d["pos"])
        self.rng.bit_generator.state = d["rng"]
        if d.get("started"):
            self._draw()
        else:
            self.batches = None


class IndexBatches(EpochBatches):
    """Endless mini-batches of indices into `n` items, reshuffled each epoch. The last short batch of an
    epoch is kept unless `drop_last`."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, collate=None, shuffle: bool = True,
                 drop_last: bool = False):
        if n < 1 or batch_size < 1 or (drop_last and n < batch_size):
            raise ValueError("need at least one item (a full batch with drop_last) and a positive "
                             "batch size")
        super().__init__(seed, collate, shuffle)
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last

    def epoch_batches(self, rng=None):
        order = rng.permutation(self.n) if rng is not None else np.arange(self.n)
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        return [order[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]


class LengthBatches(EpochBatches):
    """Endless mini-batches of items of similar length, so that little of a padded batch is padding.

    Each epoch: the items are shuffled, cut into pools of `pool` batches, each pool is sorted by length
    (stably, so ties keep their shuffled order) and cut into batches, and the epoch's batches are
    shuffled. Within a pool the order is by length; across the epoch, which items meet in a batch and the
    batch order stay random (the "bucketing" of torchtext's BucketIterator and fairseq). Without
    shuffling (`epoch_batches()`), the items in length order.

    lengths: (n,) or (n, k): with k columns items are ordered by the first, ties by the next (for a
    translation pair, source length then target length).
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, collate=None, shuffle: bool = True,
                 pool: int = 100):
        lengths = np.asarray(lengths)
        if lengths.ndim == 1:
            lengths = lengths[:, None]
        if lengths.ndim != 2 or len(lengths) < 1 or batch_size < 1 or pool < 1:
            raise ValueError("need at least one item's lengths ((n,) or (n, k)), a positive batch size "
                             "and a positive pool")
        super().__init__(seed, collate, shuffle)
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool

    def epoch_batches(self, rng=None):
        n, B = len(self.lengths), self.batch_size
        order = rng.permutation(n) if rng is not None else np.arange(n)
        batches = []
        for p in range(0, n, B * self.pool):
            chunk = order[p:p + B * self.pool]
            # lexsort sorts by its last key first, and is stable: ties keep the shuffled order
            chunk = chunk[np.lexsort(self.lengths[chunk].T[::-1])]
            batches += [chunk[i:i + B] for i in range(0, len(chunk), B)]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches
