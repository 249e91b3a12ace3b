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
