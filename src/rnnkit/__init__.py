"""rnnkit: recurrent networks written out by hand on NumPy.

The public API is the small set re-exported here; the stateless math is in `rnnkit.functional`.
"""

from rnnkit import functional
from rnnkit.backend import DEFAULT_DTYPE, get_array_module
from rnnkit.layers import GRU, LSTM, RNN, Dropout, Embedding, Linear, MinGRU, Module, make_recurrent

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DTYPE", "Dropout", "Embedding", "GRU", "LSTM", "Linear", "MinGRU", "Module", "RNN",
    "functional", "get_array_module", "make_recurrent",
]
