"""Models for each task, built from the layers."""

from rnnkit.models.lm import CharLM, LMConfig, LMState  # noqa: F401
from rnnkit.models.classifier import ClassifierConfig, SentenceClassifier  # noqa: F401
