"""Stateless math: every `*_forward` returns (out, cache) and its `*_backward` consumes that cache.

The recurrent cells' own math (`lstm_forward`, `gru_backward`, ...) lives with each cell's declaration
in `rnnkit.cells` (`rnnkit.cells.lstm`, ...); here is what the layers, models and cells share.
"""

from rnnkit.functional.image_attention import (
    ImageAttentionCache,
    SatContextCache,
    image_attention_backward,
    image_attention_forward,
    sat_context_backward,
    sat_context_forward,
)
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
)
from rnnkit.functional.losses import (
    MSECache,
    log_softmax,
    logsumexp,
    mse_backward,
    mse_forward,
    softmax,
    softmax_cross_entropy,
    softmax_cross_entropy_loss_only,
)
from rnnkit.functional.norms import (
    ChannelNormCache,
    FeatureNormCache,
    RMSNormCache,
    channel_norm_backward,
    channel_norm_forward,
    feature_norm_backward,
    feature_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from rnnkit.functional.causal_conv import CausalConvCache, causal_conv_backward, causal_conv_forward
from rnnkit.functional.pooling import POOLINGS, SeqPoolCache, pool_backward, pool_forward
from rnnkit.functional.scan import linear_scan, linear_scan_log

__all__ = [
    "CausalConvCache", "ChannelNormCache", "FeatureNormCache", "RMSNormCache", "ImageAttentionCache",
    "MSECache",
    "POOLINGS", "SatContextCache", "SeqPoolCache",
    "affine_backward", "affine_forward", "bag_mean_backward_into", "bag_mean_forward",
    "causal_conv_backward", "causal_conv_forward",
    "channel_norm_backward", "channel_norm_forward",
    "dropout_backward", "dropout_forward",
    "embedding_backward", "embedding_backward_into", "embedding_forward",
    "feature_norm_backward", "feature_norm_forward",
    "image_attention_backward", "image_attention_forward",
    "lengths_to_mask", "linear_scan", "linear_scan_log", "mask_to_lengths", "reverse_padded",
    "log_softmax", "logsumexp",
    "mse_backward", "mse_forward",
    "pool_backward", "pool_forward", "rms_norm_backward", "rms_norm_forward",
    "sat_context_backward", "sat_context_forward",
    "softmax", "softmax_cross_entropy", "softmax_cross_entropy_loss_only",
]
