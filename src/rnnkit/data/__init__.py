"""Data readers, tokenizers and vocabularies (each task's format in its own module)."""

from rnnkit.data.vocab import Vocab  # noqa: F401

from rnnkit.data.text import CharVocab, read_text, split_ids, stdlib_corpus  # noqa: F401
