import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

DATA_DIR = Path(os.environ.get("RNNKIT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def data_dir():
    return DATA_DIR


@pytest.fixture
def three_threads(monkeypatch):
    """The compiled time loops' batch rows cut into three parts on worker threads, however small the
    call; returns the list of how many parts each split call ran (one entry per split loop)."""
    from rnnkit import kernels

    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(kernels.pool, "SPLIT_MIN_ROWS", 1)
    monkeypatch.setattr(kernels.pool, "threads", lambda: 3)
    split_calls, run_parallel = [], kernels.pool.run_parallel
    monkeypatch.setattr(kernels.pool, "run_parallel",
                        lambda fn, calls: (split_calls.append(len(calls)), run_parallel(fn, calls)))
    return split_calls
