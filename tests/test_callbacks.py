"""Callbacks that need no model: the codebook collapse monitor."""

import pytest

from keras_slam.callbacks import CodebookCollapseError, CodebookCollapseMonitor


def test_collapse_monitor_raises_naming_metric_value_threshold_and_step():
    monitor = CodebookCollapseMonitor(
        {"codebook_usage": 0.2, "w2v_mlm_gain": 0.0},
        check_every_n_batches=2,
        patience=2,
        start_step=4,
        min_frames=0,
    )
    healthy = {"codebook_usage": 0.5, "w2v_mlm_gain": 0.3}
    for batch in range(3):  # steps 1-3: before start_step, or not a check
        monitor.on_train_batch_end(batch, {"codebook_usage": 0.01, "w2v_mlm_gain": -1.0})
    monitor.on_train_batch_end(3, dict(healthy, w2v_mlm_gain=-0.1))  # step 4: gain low once
    monitor.on_train_batch_end(0, {"loss": 1.0})  # a new epoch (batch 0), step 5: not a check
    assert monitor.history == [(4, dict(healthy, w2v_mlm_gain=-0.1))]
    with pytest.raises(
        CodebookCollapseError, match=r"w2v_mlm_gain = -0\.2000 < threshold 0\.0 at step 6"
    ):
        monitor.on_train_batch_end(1, {"codebook_usage": 0.1, "w2v_mlm_gain": -0.2})
    assert monitor.low_checks == {"codebook_usage": 1, "w2v_mlm_gain": 2}
    with pytest.raises(KeyError, match="w2v_mlm_gain"):
        CodebookCollapseMonitor({"w2v_mlm_gain": 0.0}, check_every_n_batches=1).on_train_batch_end(
            0, {"loss": 1.0}
        )


def test_collapse_monitor_can_only_warn():
    monitor = CodebookCollapseMonitor(check_every_n_batches=1, on_collapse="warn")
    with pytest.warns(RuntimeWarning, match="codebook_usage = 0.0500 < threshold 0.1 at step 1"):
        monitor.on_train_batch_end(0, {"codebook_usage": 0.05, "codebook_usage_frames": 256.0})
    with pytest.raises(ValueError, match="on_collapse"):
        CodebookCollapseMonitor(on_collapse="log")
