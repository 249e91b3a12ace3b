"""Models for each task, built from the layers."""

from rnnkit.models.lm import CharLM, LMConfig, LMState  # noqa: F401
