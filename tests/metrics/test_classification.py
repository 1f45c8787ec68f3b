"""Known answers computed by hand with scikit-learn's definitions (see the
module docstring); the first case is scikit-learn's own `f1_score` example."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_slam.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    plot_confusion_matrix,
)
from tests import test_case


def test_scikit_learn_f1_example():
    # sklearn.metrics.f1_score docs: average="macro" gives 0.26666...
    y_true, y_pred = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]
    assert macro_f1(y_true, y_pred) == pytest.approx(0.8 / 3)
    assert accuracy(y_true, y_pred) == pytest.approx(1 / 3)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 3), [[2, 0, 0], [1, 0, 1], [0, 2, 0]]
    )


def test_classes_absent_from_both_are_left_out_unless_listed():
    # Class 0: TP 1, FN 1 -> F1 2/3; class 1: TP 1, FP 1 -> 2/3; classes 2, 3 absent.
    y_true, y_pred = [0, 0, 1], [0, 1, 1]
    assert macro_f1(y_true, y_pred, num_classes=4) == pytest.approx(2 / 3)
    assert macro_f1(y_true, y_pred, num_classes=4, labels=[0, 1, 2, 3]) == pytest.approx(1 / 3)


def test_class_only_predicted_counts_with_f1_zero():
    # Class 0: TP 1, FN 1 -> 2/3; class 1: FP 1, no TP -> 0 (zero_division=0).
    assert macro_f1([0, 0], [0, 1]) == pytest.approx(1 / 3)


def test_report_and_png(tmp_path):
    names = ["de", "en", "es"]
    report = classification_report([0, 1, 1, 2], [0, 1, 2, 2], names)
    assert report["accuracy"] == 0.75
    # de 1, en 2/3 (TP 1, FN 1), es 2/3 (TP 1, FP 1).
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert report["classes"]["en"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    json.dumps(report)
    path = plot_confusion_matrix(report["confusion_matrix"], names, str(tmp_path / "cm.png"))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="y_pred holds class id 3, outside"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="y_true has 2 examples, y_pred 1"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="no examples"):
        accuracy([], [])


@pytest.mark.slow(backend="jax")  # the same import on every backend: run once
def test_metrics_package_imports_first():
    """`keras_slam.metrics` imported before the layers package (as by
    `keras-slam evaluate-classifier`) used to fail on an import cycle."""
    code = "import keras_slam.metrics.classification"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ},
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
