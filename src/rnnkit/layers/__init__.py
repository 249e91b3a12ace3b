"""Layer objects: own parameters and gradients, call the stateless math (`rnnkit.functional`, and each
cell's own module in `rnnkit.cells`). The recurrent layer classes (`LSTM`, `GRU`, `RNN`, one for every
registered cell) are made from the cell registry: `layer_class`, `layer_classes`."""

from rnnkit.layers.basic import BagEmbedding, Dropout, Embedding, Linear
from rnnkit.layers.module import Module
from rnnkit.layers.recurrent import Recurrent, layer_class, layer_classes, make_recurrent

__all__ = ["BagEmbedding", "Dropout", "Embedding", "Linear", "Module", "Recurrent", "layer_class",
           "layer_classes", "make_recurrent", *layer_classes(plugins=False)]


def __getattr__(name):
    """`rnnkit.layers.LSTM` and the like: the layer class of the registered cell of that title."""
    classes = layer_classes()
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
