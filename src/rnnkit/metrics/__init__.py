"""Scores of model output against references (`rnnkit.metrics.bleu`): plain functions of token lists,
below the tasks that compute them during training and the reports and commands that print them."""
