"""Stateless math: every `*_forward` returns (out, cache) and its `*_backward` consumes that cache."""

from rnnkit.functional.gru import GRUCache, gru_backward, gru_forward, gru_recompute
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
from rnnkit.functional.lstm import LSTMCache, lstm_backward, lstm_forward, lstm_recompute
from rnnkit.functional.mingru import (
    MinGRUCache,
    linear_scan,
    mingru_backward,
    mingru_forward,
    mingru_recompute,
)
from rnnkit.functional.rnn import (
    RNNCache,
    rnn_backward,
    rnn_forward,
    rnn_recompute,
    rnn_step_backward,
    rnn_step_forward,
)

__all__ = [
    "GRUCache", "LSTMCache", "MinGRUCache", "RNNCache",
    "affine_backward", "affine_forward", "bag_mean_backward_into", "bag_mean_forward",
    "dropout_backward", "dropout_forward",
    "embedding_backward", "embedding_backward_into", "embedding_forward",
    "gru_backward", "gru_forward", "gru_recompute",
    "lengths_to_mask", "linear_scan", "mask_to_lengths", "reverse_padded",
    "lstm_backward", "lstm_forward", "lstm_recompute",
    "mingru_backward", "mingru_forward", "mingru_recompute",
    "rnn_backward", "rnn_forward", "rnn_recompute", "rnn_step_backward", "rnn_step_forward",
    "softmax_cross_entropy",
]
