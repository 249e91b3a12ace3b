"""Training system: checkpoints, run directories, and the training loops."""

from rnnkit.train.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    prepare_run_dir,
    read_json,
    save_checkpoint,
    write_json_atomic,
)

__all__ = ["has_checkpoint", "load_checkpoint", "prepare_run_dir", "read_json", "save_checkpoint",
           "write_json_atomic"]
