"""Layer objects: own parameters and gradients, call the stateless math in `rnnkit.functional`."""

from rnnkit.layers.basic import BagEmbedding, Dropout, Embedding, Linear
from rnnkit.layers.module import Module
from rnnkit.layers.recurrent import GRU, LSTM, RNN, CellKind, MinGRU, Recurrent, make_recurrent

__all__ = ["BagEmbedding", "CellKind", "Dropout", "Embedding", "GRU", "LSTM", "Linear", "MinGRU", "Module",
           "RNN", "Recurrent", "make_recurrent"]
