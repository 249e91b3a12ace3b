"""Classification figures: accuracy, macro-F1, per-class precision / recall / F1, confusion matrix.

Conventions (those of scikit-learn with `zero_division=0`): the confusion matrix has true classes as rows
and predicted classes as columns; a class never predicted has precision 0, a class absent from the data
has recall 0; macro-F1 is the unweighted mean of the per-class F1 over the classes given (all the model's
classes, present in the data or not, so that one number means the same thing across data sets).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) counts: entry [i, j] is the number of examples of class i predicted as class j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape}, y_pred {y_pred.shape}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} has classes outside [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _ratio(a, b):
    return float(a) / float(b) if b else 0.0


def classification_report(y_true, y_pred, labels) -> dict:
    """All the figures as a JSON-able dict; `labels[k]` names class k."""
    labels = [str(x) for x in labels]
    C = len(labels)
    cm = confusion_matrix(y_true, y_pred, C)
    n = int(cm.sum())
    tp = np.diag(cm)
    per_class = {}
    f1s = []
    for k, name in enumerate(labels):
        predicted = int(cm[:, k].sum())
        support = int(cm[k, :].sum())
        p = _ratio(tp[k], predicted)  # precision = TP / (TP + FP)
        r = _ratio(tp[k], support)  # recall = TP / (TP + FN)
        f1 = _ratio(2 * p * r, p + r)  # harmonic mean of the two
        f1s.append(f1)
        per_class[name] = {"precision": p, "recall": r, "f1": f1, "support": support,
                           "predicted": predicted}
    return {"n": n, "accuracy": _ratio(tp.sum(), n), "macro_f1": float(np.mean(f1s)) if C else 0.0,
            "per_class": per_class, "confusion": {"labels": labels, "matrix": cm.tolist()}}


def format_report(rep: dict) -> str:
    """A plain-text table of `classification_report`'s figures."""
    labels = rep["confusion"]["labels"]
    w = max([len("class")] + [len(x) for x in labels])
    lines = [f"examples  {rep['n']}", f"accuracy  {rep['accuracy']:.4f}",
             f"macro-F1  {rep['macro_f1']:.4f}", "",
             f"{'class':<{w}}  precision  recall     f1  support"]
    for name in labels:
        c = rep["per_class"][name]
        lines.append(f"{name:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  "
                     f"{c['support']:7d}")
    cw = max([w] + [len(str(v)) for row in rep["confusion"]["matrix"] for v in row])
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * (w + 2) + "  ".join(f"{x:>{cw}}" for x in labels)]
    for name, row in zip(labels, rep["confusion"]["matrix"]):
        lines.append(f"{name:<{w}}  " + "  ".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
