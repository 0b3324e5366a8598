"""The learning rate as a runtime input of the compiled step, and the moving average of the weights.

- Changing the learning rate, the schedule's warmup, ``max_epoch`` or the optimizer's betas, eps,
  weight decay and gradient clipping (switched on here) compiles no new XLA program
  (counted with JAX's compilation-cache events) and the run follows the new rate.
- ``process.train.ema_decay``: the saved parameters are the moving average of the optimizer's
  weights (which travel in the optimizer state), validation uses the average, and a resumed run
  reproduces the uninterrupted one.
"""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_setup import tiny_config

from cache_events import CacheEvents
from hamflow.train import run as train_run
from hamflow.train.checkpoint import RunLayout
from hamflow.train.step import AveragedState, ema_weight, init_opt_state, make_optimizer

pytestmark = pytest.mark.slow


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_changed_rate_schedule_and_epochs_compile_nothing_new(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    first = tiny_config(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 2})
    train_run.train(first, run_dir=tmp_path / "first")
    counter = CacheEvents()
    jax.monitoring.register_event_listener(counter)
    try:
        changed = tiny_config(
            h2o_dir,
            tmp_path,
            jax_cache,
            **{
                "process.train.max_epoch": 3,
                "process.train.optimizer.init_learning_rate": 1e-3,
                "process.train.scheduler.warmup_steps": 1,
                # optax.inject_hyperparams keeps these in the optimizer state: runtime values too
                "process.train.optimizer.betas": [0.8, 0.99],
                "process.train.optimizer.eps": 1e-7,
                "process.train.optimizer.weight": 0.01,
                # clipping switched on: its threshold is in the optimizer state too
                "process.train.optimizer.clip_norm_factor": 0.5,
            },
        )
        train_run.train(changed, run_dir=tmp_path / "second")
    finally:
        jax.monitoring.unregister_event_listener(counter)
    assert counter.requests > 0  # the steps were looked up in the cache ...
    assert counter.misses == 0  # ... and every one was there: nothing compiled anew
    first_rates = [float(r["learning_rate"]) for r in _rows(tmp_path / "first")]
    second_rates = [float(r["learning_rate"]) for r in _rows(tmp_path / "second")]
    assert len(second_rates) == 3
    assert second_rates[0] < first_rates[0]  # the new, smaller rate was used
    assert max(second_rates) <= 1e-3 * (1 + 1e-6)


def test_ema_weight_warms_up_to_the_decay() -> None:
    weights = np.asarray([ema_weight(0.99, jnp.asarray(t)) for t in (0, 1, 10, 1000, 10**6)])
    np.testing.assert_allclose(weights[:3], [0.1, 2 / 11, 11 / 20], rtol=1e-6)
    assert weights[-1] == pytest.approx(0.99)
    state = init_opt_state(make_optimizer(_adam()), {"w": np.ones(3)}, ema_decay=0.9)
    assert isinstance(state, AveragedState)
    np.testing.assert_array_equal(state.raw_params["w"], np.ones(3))


def _adam():
    from hamflow.config.train_config import OptimizerConfig

    return OptimizerConfig(type="adam", init_learning_rate=1e-3)


def test_ema_saves_the_average_and_resumes_exactly(h2o_dir: Path, jax_cache: Path, tmp_path: Path) -> None:
    import shutil

    from hamflow.train.checkpoint import list_epochs

    ema = {"process.train.ema_decay": 0.9}
    whole = tiny_config(h2o_dir, tmp_path, jax_cache, **ema)
    train_run.train(whole, run_dir=tmp_path / "whole")
    # the run as it was after epoch 2 (newer checkpoints dropped), then rerun: resumes at epoch 2
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    layout = RunLayout(tmp_path / "resumed")
    for parent in (layout.latest, layout.states):
        for info in list_epochs(parent):
            if info.epoch > 2:
                shutil.rmtree(info.path)
    train_run.train(whole, run_dir=tmp_path / "resumed")
    assert "resuming from" in (tmp_path / "resumed" / "deepx.log").read_text()
    for column in ("train_loss", "validate_loss"):
        np.testing.assert_allclose(
            [float(r[column]) for r in _rows(tmp_path / "resumed")],
            [float(r[column]) for r in _rows(tmp_path / "whole")],
            rtol=1e-6,
        )
    # the optimizer's trajectory is the plain run's (gradients at its own weights), while
    # validation and the saved model use the average
    plain = tiny_config(h2o_dir, tmp_path, jax_cache)
    train_run.train(plain, run_dir=tmp_path / "plain")
    plain_rows, ema_rows = _rows(tmp_path / "plain"), _rows(tmp_path / "whole")
    np.testing.assert_allclose(
        [float(r["train_loss"]) for r in ema_rows], [float(r["train_loss"]) for r in plain_rows], rtol=1e-5
    )
    assert all(a["validate_loss"] != b["validate_loss"] for a, b in zip(ema_rows, plain_rows, strict=True))
    assert (RunLayout(tmp_path / "whole").best / "params.msgpack").is_file()
