"""Classification metrics of a global or local model: accuracy, macro-F1, per-class scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Compute accuracy, macro-F1, per-class precision and recall and the confusion matrix.

    Every class in ``class_names`` gets per-class scores, also one absent from
    ``y_true`` (its scores are then 0 by scikit-learn's ``zero_division=0``
    rule), so reports of different runs have the same keys. Macro-F1 averages
    over the classes present in ``y_true`` or ``y_pred`` only.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Class indices of shape (n,), values in ``range(len(class_names))``.
    class_names : Sequence[str]
        Name of each class index.

    Returns
    -------
    dict[str, Any]
        ``accuracy`` and ``macro_f1`` (floats), ``precision``, ``recall`` and
        ``f1`` (dicts keyed by class name), ``support`` (records per class in
        ``y_true``) and ``confusion_matrix`` (list of rows, true class by row,
        predicted class by column).

    Raises
    ------
    ValueError
        On empty or mismatched inputs or a class index outside ``class_names``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if len(y_true) == 0 or len(y_true) != len(y_pred):
        raise ValueError(
            f"need as many predictions as labels, at least one: got {len(y_true)} labels "
            f"and {len(y_pred)} predictions"
        )
    labels = np.arange(len(class_names))
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.min() < 0 or values.max() >= len(class_names):
            raise ValueError(
                f"invalid {name}: class indices span {int(values.min())}..{int(values.max())}, "
                f"outside 0..{len(class_names) - 1} of class_names {list(class_names)}"
            )

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision": {
            name: float(value) for name, value in zip(class_names, precision, strict=True)
        },
        "recall": {name: float(value) for name, value in zip(class_names, recall, strict=True)},
        "f1": {name: float(value) for name, value in zip(class_names, f1, strict=True)},
        "support": {name: int(value) for name, value in zip(class_names, support, strict=True)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
