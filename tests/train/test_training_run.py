"""The training stage end to end on real DFT data (tiny model, CPU, few epochs).

Loss falls; the run directory has DeepH-pack's layout; a resumed run reproduces the uninterrupted
loss curve (in-process resume, continued training from another run directory, and a SIGTERM'd
subprocess); NaN stops training keeping the last good checkpoint; fine-tuning checks the basis;
ahead-of-time compilation and data-parallel training over two CPU devices run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from training_setup import REPO, set_args, tiny_config, tiny_overrides

from hamflow.errors import ConfigError
from hamflow.train import run as train_run
from hamflow.train.checkpoint import RunLayout, list_epochs, newest_resumable

pytestmark = pytest.mark.slow


def _losses(run_dir: Path, column: str = "train_loss") -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def reference_run(h2o_dir: Path, jax_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 uninterrupted epochs: the curve every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(h2o_dir, out, jax_cache)
    result = train_run.train(cfg, run_dir=out / "run")
    assert result.epochs_done == 4 and result.stopped_because == "max_epoch"
    return out / "run"


def test_loss_falls_and_run_directory_layout(reference_run: Path) -> None:
    losses = _losses(reference_run)
    assert len(losses) == 4
    # 4 epochs of a tiny model: with the environment baseline the off-site remainders (and their
    # normalised scales) are smaller, so the normalised loss starts lower and falls ~14% (was > 20%)
    assert losses[-1] < 0.9 * losses[0]
    layout = RunLayout(reference_run)
    for path in (
        layout.log,
        layout.metrics,
        layout.split,
        layout.train_toml,
        layout.model_json,
        layout.normaliser,
    ):
        assert path.is_file(), path
    assert (layout.best / "params.msgpack").is_file()
    assert [info.epoch for info in list_epochs(layout.latest)] == [1, 2, 3, 4]
    assert [info.epoch for info in list_epochs(layout.states)] == [1, 2, 3, 4]
    log = layout.log.read_text()
    assert "parameters" in log and "epoch 4 |" in log and "lr scale" in log
    split = json.loads(layout.split.read_text())
    assert (len(split["train"]), len(split["validate"]), len(split["test"])) == (6, 2, 2)
    assert json.loads(layout.done.read_text())["epochs"] == 4


def test_rerun_of_a_finished_run_trains_nothing_and_a_changed_config_starts_afresh(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 2})
    train_run.train(cfg, run_dir=tmp_path / "run")
    before = _losses(tmp_path / "run")
    again = train_run.train(cfg, run_dir=tmp_path / "run")
    assert again.epochs_done == 2
    assert _losses(tmp_path / "run") == before
    assert "resuming from" in (tmp_path / "run" / "deepx.log").read_text()

    # a changed learning rate invalidates the checkpoints but compiles nothing new (it is injected)
    changed = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{"process.train.max_epoch": 2, "process.train.optimizer.init_learning_rate": 1e-3},
    )
    train_run.train(changed, run_dir=tmp_path / "run")
    log = (tmp_path / "run" / "deepx.log").read_text()
    assert "checkpoints were written (process.train.optimizer.init_learning_rate)" in log
    aside = list((tmp_path / "run").glob("model.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "params" / "best" / "params.msgpack").is_file()
    assert len(_losses(tmp_path / "run")) == 2


def test_continued_training_reproduces_the_uninterrupted_curve(
    reference_run: Path, h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    # copy the reference run as it was after epoch 2: drop the newer checkpoints
    import shutil

    source = tmp_path / "first_half"
    shutil.copytree(reference_run, source)
    layout = RunLayout(source)
    for parent in (layout.latest, layout.states):
        for info in list_epochs(parent):
            if info.epoch > 2:
                shutil.rmtree(info.path)
    cfg = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{
            "process.train.continued.enable": True,
            "process.train.continued.previous_output_dir": str(source),
            "process.train.continued.load_model_type": "latest",
            "process.train.continued.load_model_epoch": 2,
        },
    )
    result = train_run.train(cfg, run_dir=tmp_path / "second_half")
    assert result.epochs_done == 4
    resumed = _losses(tmp_path / "second_half")
    np.testing.assert_allclose(resumed, _losses(reference_run), rtol=1e-6)
    np.testing.assert_allclose(
        _losses(tmp_path / "second_half", "validate_loss"), _losses(reference_run, "validate_loss"), rtol=1e-6
    )


def test_sigterm_saves_and_a_rerun_finishes_on_the_same_curve(
    reference_run: Path, h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(h2o_dir, tmp_path, jax_cache)
    command = [sys.executable, "-m", "hamflow.cli", "train", str(REPO / "config" / "train.toml")]
    command += ["--run-dir", str(tmp_path / "run"), *set_args(overrides)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        lines.append(line)
        if "epoch 2 |" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=300)
    output = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM received: latest checkpoint saved" in output
    assert newest_resumable(RunLayout(tmp_path / "run")) is not None
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr
    np.testing.assert_allclose(_losses(tmp_path / "run"), _losses(reference_run), rtol=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_make_steps = train_run.make_steps

    def poisoned_make_steps(*args, **kwargs):
        train_step, eval_step = real_make_steps(*args, **kwargs)

        def step(state, batch, rate):
            import jax.numpy as jnp

            new_state, metrics = train_step(state, batch, rate)
            # from the 4th step on (epoch 2 with 3 batches per epoch) the loss is NaN
            bad = new_state.step > 3
            return new_state, metrics._replace(loss=jnp.where(bad, jnp.nan, metrics.loss))

        return step, eval_step

    monkeypatch.setattr(train_run, "make_steps", poisoned_make_steps)
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
    with pytest.raises(train_run.NonFiniteLoss, match="epoch 2: loss is not finite"):
        train_run.train(cfg, run_dir=tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    assert [info.epoch for info in list_epochs(layout.latest)] == [1]
    assert newest_resumable(layout).epoch == 1
    assert not layout.done.exists()


def test_finetune_loads_weights_and_checks_the_basis(
    reference_run: Path, h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{
            "process.train.max_epoch": 1,
            "process.train.continued.enable": True,
            "process.train.continued.previous_output_dir": str(reference_run),
            "process.train.continued.new_training_data": True,
            "process.train.continued.new_optimizer": True,
            "process.train.continued.load_model_type": "best",
        },
    )
    train_run.train(cfg, run_dir=tmp_path / "tuned")
    tuned_first = _losses(tmp_path / "tuned")[0]
    assert tuned_first < _losses(reference_run)[0], "fine-tuning must start from the trained weights"
    assert "loaded parameters from" in (tmp_path / "tuned" / "deepx.log").read_text()

    wider = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{
            "data.graph.common_orbital_types": "s3p3d2",
            "process.train.continued.enable": True,
            "process.train.continued.previous_output_dir": str(reference_run),
            "process.train.continued.new_training_data": True,
            "process.train.continued.new_optimizer": True,
        },
    )
    with pytest.raises(ConfigError, match="orbital basis"):
        train_run.train(wider, run_dir=tmp_path / "wider")


def test_ahead_of_time_compile(h2o_dir: Path, jax_cache: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{"process.train.ahead_of_time_compile": True, "process.train.max_epoch": 2},
    )
    train_run.train(cfg, run_dir=tmp_path / "run")
    assert "ahead-of-time compiled 2 program(s)" in (tmp_path / "run" / "deepx.log").read_text()


def test_data_parallel_over_two_cpu_devices(h2o_dir: Path, jax_cache: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(
        h2o_dir, tmp_path, jax_cache, **{"system.device": "cpu*2", "process.train.max_epoch": 2}
    )
    command = [sys.executable, "-m", "hamflow.cli", "train", str(REPO / "config" / "train.toml")]
    command += ["--run-dir", str(tmp_path / "run"), *set_args(overrides)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "deepx.log").read_text()
    assert "CpuDevice(id=1)" in log
    losses = _losses(tmp_path / "run")
    assert len(losses) == 2 and all(np.isfinite(losses))
