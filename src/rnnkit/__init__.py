"""rnnkit: recurrent networks written out by hand on NumPy.

The public API is the small set re-exported here. The cells (`rnnkit.cells`) are declared once each
and registered by name; the layer classes (`LSTM`, `GRU`, `RNN`, one for every registered cell) are
made from that registry. The stateless math shared by the layers is in
`rnnkit.functional`, each cell's own in its module (`rnnkit.cells.lstm`, ...).
"""

from rnnkit import cells, functional
from rnnkit.backend import DEFAULT_DTYPE, get_array_module
from rnnkit.layers import Dropout, Embedding, Linear, Module, Recurrent, layer_class, layer_classes, \
    make_recurrent

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DTYPE", "Dropout", "Embedding", "Linear", "Module", "Recurrent", "cells", "functional",
    "get_array_module", "layer_class", "make_recurrent", *layer_classes(plugins=False),
]


def __getattr__(name):
    """`rnnkit.LSTM` and the like: the layer class of the registered cell of that title."""
    classes = layer_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
