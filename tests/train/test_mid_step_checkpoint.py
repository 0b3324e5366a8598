"""``data.model_save.latest_cache_mid_step_interval``: a resumable checkpoint every N optimizer steps.

A run killed inside an epoch (here: an exception raised before its 5th training step, which skips
every save, as a kill does) resumes from the last mid-epoch checkpoint at that step, and finishes on
the loss curve of an uninterrupted run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from training_setup import tiny_config

from hamflow.train import run as train_run
from hamflow.train.checkpoint import RunLayout, mid_step_save_due, newest_resumable
from hamflow.train.data import Batcher

INTERVAL = 2
OVERRIDES = {"process.train.max_epoch": 2, "data.model_save.latest_cache_mid_step_interval": INTERVAL}


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no except clause of the trainer catches it)."""


def _curve(run_dir: Path) -> list[tuple[float, float]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [(float(r["train_loss"]), float(r["validate_loss"])) for r in csv.DictReader(handle)]


def test_mid_step_save_is_due_every_interval_steps_inside_an_epoch():
    due = [step for step in range(1, 13) if mid_step_save_due(INTERVAL, step, (step - 1) % 3 + 1, 3)]
    assert due == [2, 4, 8, 10]  # 6 and 12 end an epoch: the end-of-epoch save takes over
    assert not any(mid_step_save_due(-1, step, 1, 3) for step in range(1, 10))
    assert not any(mid_step_save_due(0, step, 1, 3) for step in range(1, 10))


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_at_the_saved_step_on_the_same_curve(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache, **OVERRIDES)  # 6 structures, batch 2: 3 steps/epoch
    train_run.train(cfg, run_dir=tmp_path / "reference")
    reference = _curve(tmp_path / "reference")
    assert len(reference) == 2

    real = Batcher.device_batch
    seen: dict = {"train": None, "calls": 0}

    def device_batch(self, bucket, members):
        if seen["train"] is None:
            seen["train"] = self  # the first batch asked for is the first training step's
        if self is seen["train"]:
            seen["calls"] += 1
            if seen["calls"] == 5:  # before step 5: after the mid-epoch save at step 4 (epoch 2)
                raise Killed
        return real(self, bucket, members)

    monkeypatch.setattr(Batcher, "device_batch", device_batch)
    with pytest.raises(Killed):
        train_run.train(cfg, run_dir=tmp_path / "run")
    monkeypatch.setattr(Batcher, "device_batch", real)
    layout = RunLayout(tmp_path / "run")
    saved = newest_resumable(layout)
    assert saved is not None and saved.epoch == 1
    assert saved.meta["step"] == 4 and saved.meta["batches_done"] == 1
    assert not layout.done.exists()

    result = train_run.train(cfg, run_dir=tmp_path / "run")
    assert result.epochs_done == 2
    assert "resuming from" in layout.log.read_text() and "step 4)" in layout.log.read_text()
    np.testing.assert_allclose(_curve(tmp_path / "run"), reference, rtol=1e-6)
