"""Stateless math: every `*_forward` returns (out, cache) and its `*_backward` consumes that cache.

The recurrent cells' own math (`lstm_forward`, `gru_backward`, ...) lives with each cell's declaration
in `rnnkit.cells` (`rnnkit.cells.lstm`, ...); here is what the layers, models and cells share.
"""

from rnnkit.functional.layers import (
    affine_backward,
    affine_forward,
    bag_mean_backward_into,
    bag_mean_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_backward_into,
    embedding_forward,
    lengths_to_mask,
    mask_to_lengths,
    reverse_padded,
    softmax_cross_entropy,
)
from rnnkit.functional.scan import linear_scan

__all__ = [
    "affine_backward", "affine_forward", "bag_mean_backward_into", "bag_mean_forward",
    "dropout_backward", "dropout_forward",
    "embedding_backward", "embedding_backward_into", "embedding_forward",
    "lengths_to_mask", "linear_scan", "mask_to_lengths", "reverse_padded",
    "softmax_cross_entropy",
]
