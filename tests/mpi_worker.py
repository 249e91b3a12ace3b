"""A tiny language model trained by `fit`, for tests/test_mpi.py: run alone (one process) or under
`mpiexec -n P` (data-parallel). Each rank writes its final weights to OUT/weights.<rank>.npz.

    python tests/mpi_worker.py OUT --cell lstm --streams 4 --steps 6 [--resume] [--fail-rank 1]
"""

from __future__ import annotations

import argparse
import sys
import traceback

import numpy as np

from rnnkit.models.lm import CharLM, LMConfig
from rnnkit.tasks.lm import LMTask
from rnnkit.train import distributed
from rnnkit.train.batches import StreamBatches
from rnnkit.train.loop import TrainConfig, fit

V, T = 11, 5  # vocabulary, chunk length


class FailingTask(LMTask):
    """Raises on one rank at the second update, the others carrying on into the allreduce."""

    def __init__(self, *args, fail_rank, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_rank, self.calls = fail_rank, 0

    def train_step(self, batch):
        self.calls += 1
        if self.calls == 2 and distributed.world().rank == self.fail_rank:
            raise RuntimeError(f"injected failure on rank {self.fail_rank}")
        return super().train_step(batch)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail-rank", type=int, default=None)
    args = p.parse_args(argv)

    ids = np.random.default_rng(1).integers(0, V, 400)
    cfg = LMConfig(vocab_size=V, cell=args.cell, embed=6, hidden=8, layers=2, dropout=args.dropout,
                   seed=3)
    model = CharLM(cfg, dtype=np.float64)
    kw = {"val_ids": ids[:60], "eval_chars": 50}
    task = LMTask(model, **kw) if args.fail_rank is None else \
        FailingTask(model, fail_rank=args.fail_rank, **kw)
    source = StreamBatches(ids, args.streams, T, seed=cfg.seed)
    # a small clip, so that clipping by the global norm is exercised at every step
    tcfg = TrainConfig(steps=args.steps, lr=0.02, clip=0.5, eval_every=3, checkpoint_every=3,
                       seed=cfg.seed)
    fit(task, source, tcfg, args.out, {"model": cfg.__dict__}, resume=args.resume, progress=False)
    comm = distributed.world()
    np.savez(f"{args.out}/weights.{comm.rank}.npz", **model.state_dict())


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        distributed.abort_job(1)
        sys.exit(1)
