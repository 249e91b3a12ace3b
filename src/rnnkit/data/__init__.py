"""Data readers, tokenizers and vocabularies (each task's format in its own module)."""

from rnnkit.data.vocab import Vocab  # noqa: F401
