"""Data-parallel training over MPI (`rnnkit.train.distributed`): `mpiexec -n 2` on this machine against
one process on the whole batch. The launches skip without mpi4py and an `mpiexec` (pip install
'rnnkit[mpi]' brings both); the helpers' tests run everywhere."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mpi_worker
from rnnkit.errors import UserError
from rnnkit.train import distributed
from rnnkit.train.batches import IndexBatches, StreamBatches

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).with_name("mpi_worker.py"))
TIMEOUT = 120  # seconds for one launch; a hang fails the test instead of CI


def _mpiexec():
    here = Path(sys.executable).with_name("mpiexec")
    return str(here) if here.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    HAVE_MPI = _mpiexec() is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI,
                               reason="needs mpi4py and mpiexec: pip install 'rnnkit[mpi]'")


def launch(n, *args, check=True):
    """`mpiexec -n n python ARGS` with src/ on the path; the CompletedProcess."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("RNNKIT_MPI", None)
    r = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *args], env=env, capture_output=True,
                       text=True, timeout=TIMEOUT)
    if check and r.returncode != 0:
        raise AssertionError(f"mpiexec -n {n} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r


def weights(run, rank=0):
    with np.load(run / f"weights.{rank}.npz") as f:
        return dict(f)


def assert_same(a, b, atol=1e-12):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


# --- launched ------------------------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("cell", ["lstm", "gru", "mingru"])
def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path, cell):
    """float64, dropout 0.2 between the layers and before the output, clipping active at every step:
    the split changes only the order of the sums."""
    mpi_worker.main([str(tmp_path / "one"), "--cell", cell, "--streams", "4"])
    launch(2, WORKER, str(tmp_path / "two"), "--cell", cell, "--streams", "4")
    one = weights(tmp_path / "one")
    two0, two1 = weights(tmp_path / "two", 0), weights(tmp_path / "two", 1)
    for k in two0:
        np.testing.assert_array_equal(two0[k], two1[k], err_msg=k)  # the same update on both ranks
    assert_same(one, two0)
    start = mpi_worker.CharLM(mpi_worker.LMConfig(vocab_size=mpi_worker.V, cell=cell, embed=6, hidden=8,
                                                  layers=2, dropout=0.2, seed=3), dtype=np.float64)
    assert max(np.abs(one[k] - v).max() for k, v in start.state_dict().items()) > 1e-3  # it trained


@needs_mpi
def test_uneven_shards_and_resume_on_one_and_two_processes(tmp_path):
    """7 streams over 2 ranks (4 + 3); a 2-rank run stopped at step 3 and resumed on 1 process and on
    2 ends where an uninterrupted one-process run does, with the same validation losses."""
    mpi_worker.main([str(tmp_path / "one"), "--streams", "7", "--steps", "6"])
    launch(2, WORKER, str(tmp_path / "two"), "--streams", "7", "--steps", "6")
    one = weights(tmp_path / "one")
    assert_same(one, weights(tmp_path / "two", 1))

    launch(2, WORKER, str(tmp_path / "half"), "--streams", "7", "--steps", "3")
    shutil.copytree(tmp_path / "half", tmp_path / "on1")
    shutil.copytree(tmp_path / "half", tmp_path / "on2")
    mpi_worker.main([str(tmp_path / "on1"), "--streams", "7", "--steps", "6", "--resume"])
    launch(2, WORKER, str(tmp_path / "on2"), "--streams", "7", "--steps", "6", "--resume")
    assert_same(one, weights(tmp_path / "on1"))
    assert_same(one, weights(tmp_path / "on2", 1))

    def val_losses(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [r["val_loss"] for r in map(json.loads, lines) if r["kind"] == "eval"]

    assert len(val_losses(tmp_path / "one")) == 2
    np.testing.assert_allclose(val_losses(tmp_path / "on2"), val_losses(tmp_path / "one"), rtol=1e-12)


@needs_mpi
def test_an_exception_on_rank_1_ends_the_job(tmp_path):
    """Rank 0 waits in the allreduce for rank 1, which raised: MPI Abort ends both, non-zero, with
    rank 1's message (no hang: `launch` has a timeout)."""
    r = launch(2, WORKER, str(tmp_path / "run"), "--fail-rank", "1", check=False)
    assert r.returncode != 0
    assert "injected failure on rank 1" in r.stderr


@needs_mpi
def test_cli_two_ranks_and_more_ranks_than_streams(tmp_path):
    """`mpiexec -n 2 rnnkit train lm`: stdout from rank 0 only, the weights of one process's run
    (float32: to rounding); --batch 1 on 2 ranks is one line naming the flag, no traceback, non-zero."""
    text = tmp_path / "t.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(list("abcde fgh\n"), 6000)))
    args = ["--data", str(text), "--batch", "4", "--seq-len", "8", "--hidden", "16", "--embed", "8",
            "--layers", "1", "--steps", "4", "--eval-every", "2", "--eval-chars", "200", "--no-progress"]
    from rnnkit.cli import main
    from rnnkit.train.checkpoint import load_checkpoint

    assert main(["train", "lm", *args, "--out", str(tmp_path / "one")]) == 0
    r = launch(2, "-m", "rnnkit", "train", "lm", *args, "--out", str(tmp_path / "two"))
    assert r.stdout.count("step 4:") == 1, r.stdout
    a, _, _ = load_checkpoint(tmp_path / "one", "last")
    b, meta, _ = load_checkpoint(tmp_path / "two", "last")
    assert meta["step"] == 4
    assert_same({k: v for k, v in a.items() if k.startswith("model.")},
                {k: v for k, v in b.items() if k.startswith("model.")}, atol=1e-5)
    np.testing.assert_allclose(a["extra/state.h"], b["extra/state.h"], atol=1e-5)  # by global stream

    bad = launch(2, "-m", "rnnkit", "train", "lm", *args[:2], "--batch", "1", "--out",
                 str(tmp_path / "bad"), check=False)
    assert bad.returncode != 0
    assert "--batch 1: cannot split 1 batch rows over 2 MPI ranks; expected --batch >= 2" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


# --- the helpers, on one process -----------------------------------------------------------------


def test_split_covers_the_rows_in_order():
    for n, size in [(7, 2), (8, 3), (5, 5), (64, 4)]:
        parts = [distributed.split(n, r, size) for r in range(size)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1


def test_row_keyed_draws_are_the_whole_batch_draws_cut():
    class Window:
        window = (0, 0, 7)

    whole = np.random.default_rng(5).random((3, 7, 4))
    feats = np.random.default_rng(5).random((7, 5))
    for lo, hi in [(0, 4), (4, 7)]:
        Window.window = (lo, hi, 7)
        g = distributed.RowKeyedGenerator(np.random.default_rng(5), Window)
        np.testing.assert_array_equal(g.random((3, hi - lo, 4)), whole[:, lo:hi])  # (T, N, H)
        g = distributed.RowKeyedGenerator(np.random.default_rng(5), Window)
        np.testing.assert_array_equal(g.random((hi - lo, 5)), feats[lo:hi])  # (N, D)


def test_sharded_sources_give_each_rank_its_rows():
    ids = np.arange(300)
    whole = StreamBatches(ids, 7, 5, seed=1).next_batch()
    parts = []
    for rank in range(2):
        s = distributed.ShardedSource(StreamBatches(ids, 7, 5, seed=1), rank, 2)
        parts.append(s.next_batch())
    np.testing.assert_array_equal(np.concatenate([p.x for p in parts], axis=1), whole.x)
    assert [p.reset for p in parts] == [True, True]

    src = distributed.ShardedSource(IndexBatches(4, 3, seed=0, shuffle=False), 1, 2)
    assert list(src.next_batch()) == [2]  # a batch of 3 items: rank 1 has the last
    assert src.next_batch() is None  # the epoch's short last batch, item 3, is rank 0's
    with pytest.raises(UserError, match="--batch 3: cannot split 3 batch rows over 4"):
        distributed.ShardedSource(IndexBatches(5, 3), 0, 4)
