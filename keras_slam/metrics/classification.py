"""Classification metrics: accuracy, macro-F1, confusion matrix and its plot.

Definitions follow scikit-learn (`accuracy_score`, `f1_score(average="macro",
zero_division=0)`, `confusion_matrix`):

- confusion matrix: rows are true classes, columns predicted classes.
- per-class F1 = 2 TP / (2 TP + FP + FN), and 0 when that denominator is 0
  (zero_division=0).
- macro-F1: the unweighted mean of the per-class F1 over `labels`; by
  default, as scikit-learn's, the classes that occur in y_true or y_pred
  (a class absent from both is left out of the mean; pass `labels` to
  count it, with F1 0).
"""

import numpy as np


def _class_ids(values, num_classes, what):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must be 1-D class ids, got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)][0]
        raise ValueError(f"{what} holds class id {bad}, outside [0, {num_classes})")
    return values.astype(int)


def confusion_matrix(y_true, y_pred, num_classes):
    """(C, C) int64 counts: [i, j] = examples of true class i predicted as j.

    Raises:
        ValueError: lengths differ or an id is outside [0, num_classes).
    """
    y_true = _class_ids(y_true, num_classes, "y_true")
    y_pred = _class_ids(y_pred, num_classes, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} examples, y_pred {len(y_pred)}")
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def accuracy(y_true, y_pred):
    """Fraction of examples whose prediction equals the label.

    Raises:
        ValueError: no examples, or lengths differ.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} examples, y_pred {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("accuracy of no examples is undefined")
    return float(np.mean(y_true == y_pred))


def per_class_scores(matrix):
    """Precision, recall, F1 and support per class of a confusion matrix
    (each 0 where its denominator is 0). Returns four (C,) arrays."""
    matrix = np.asarray(matrix, np.float64)
    true_positives = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)

    def ratio(numerator, denominator):
        return np.divide(
            numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0
        )

    precision = ratio(true_positives, predicted)
    recall = ratio(true_positives, support)
    f1 = ratio(2 * true_positives, predicted + support)
    return precision, recall, f1, support.astype(np.int64)


def macro_f1(y_true, y_pred, num_classes=None, labels=None):
    """Unweighted mean of the per-class F1 (module docstring).

    Args:
        y_true, y_pred: (N,) class ids.
        num_classes: C (default: 1 + the largest id seen).
        labels: the classes to average over; default: those in y_true or y_pred.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    _, _, f1, _ = per_class_scores(confusion_matrix(y_true, y_pred, num_classes))
    if labels is None:
        labels = np.union1d(y_true, y_pred)
    if len(labels) == 0:
        raise ValueError("macro-F1 of no classes is undefined")
    return float(np.mean(f1[np.asarray(labels, int)]))


def classification_report(y_true, y_pred, class_names):
    """Accuracy, macro-F1, per-class scores and the confusion matrix.

    Args:
        y_true, y_pred: (N,) class ids into `class_names`.
        class_names: C names.
    Returns:
        A JSON-ready dict {"examples", "accuracy", "macro_f1", "classes":
        {name: {"precision", "recall", "f1", "support"}}, "class_names",
        "confusion_matrix" (C x C list, rows true, columns predicted)}.
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    precision, recall, f1, support = per_class_scores(matrix)
    return {
        "examples": int(len(y_true)),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(class_names)),
        "classes": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion_matrix(matrix, class_names, path, title="confusion matrix"):
    """Writes the confusion matrix as a PNG: cells shaded by the row's share
    (recall), annotated with counts; rows true, columns predicted.

    Uses matplotlib's Agg canvas directly (no display, no global backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    size = max(3.0, 0.5 * len(class_names) + 2.0)
    figure = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            color = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
