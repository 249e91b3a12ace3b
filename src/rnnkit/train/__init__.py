"""Training system: checkpoints, run directories, batch sources and the training loop."""

from rnnkit.train.batches import IndexBatches, LengthBatches, StreamBatch, StreamBatches
from rnnkit.train.checkpoint import (
    check_run_dir,
    has_checkpoint,
    load_checkpoint,
    prepare_run_dir,
    read_json,
    save_checkpoint,
    write_json_atomic,
)
from rnnkit.train.loop import BatchSource, TrainConfig, TrainTask, fit, plot_metrics

__all__ = ["BatchSource", "IndexBatches", "LengthBatches", "StreamBatch", "StreamBatches", "TrainConfig",
           "TrainTask", "check_run_dir", "fit", "has_checkpoint", "load_checkpoint", "plot_metrics",
           "prepare_run_dir", "read_json", "save_checkpoint", "write_json_atomic"]
