"""What every model's config does with its cell's options (`cell_options`, a dict of
`rnnkit.cells` options by name, saved with the config as JSON)."""

from __future__ import annotations

from rnnkit import cells


def recurrent_options(cell: str, options: dict, **defaults) -> dict:
    """The keywords of a model's `make_recurrent` calls: `options` (its config's cell_options) over
    the model's own `defaults` (the LSTM's forget bias 1.0: make_recurrent leaves them out for cells
    without them). A config names one cell, so an option that cell lacks is refused here
    (ValueError) rather than dropped, as is a value the cell refuses."""
    cells.create(cell, **options)
    return {**defaults, **options}
