"""Faults around a training run that must never give a wrong result or lose work (issue 16).

Stale split, two trainers in one run folder, OS errors, every optimizer state corrupt, a signal
before the training loop. Most stop before the model is built (nothing is compiled), so they are
fast; the fabricated checkpoints only need to be valid files, not a real model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from training_setup import REPO, h2o_inputs, set_args, tiny_config, tiny_overrides

from hamflow.cli import main
from hamflow.config.train_config import dump_train_config
from hamflow.errors import ConfigError, DataError
from hamflow.train import checkpoint as ckpt
from hamflow.train import run as train_run


class _Stop(Exception):
    """Raised in place of building the model: the run got past the split."""


@pytest.fixture
def stop_before_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop

    monkeypatch.setattr(train_run, "resolve_spec", stop)


def _sizes(split_file: Path) -> tuple[int, int, int]:
    split = json.loads(split_file.read_text())
    return len(split["train"]), len(split["validate"]), len(split["test"])


def _old_split(run: Path, cfg) -> dict[str, list[str]]:
    """An earlier attempt's dataset_split.json (train 4, validate 4, test 2) and its train.toml."""
    ids = sorted(f"h2o/{p.name}" for p in (Path(cfg.data.inputs_dir) / "dft" / "h2o").iterdir())
    split = {"train": ids[:4], "validate": ids[4:8], "test": ids[8:]}
    layout = ckpt.RunLayout(run)
    layout.model.mkdir(parents=True)
    layout.split.write_text(json.dumps(split))
    layout.train_toml.write_text(dump_train_config(cfg))
    return split


def _fake_checkpoint(layout: ckpt.RunLayout, epoch: int) -> None:
    tree = {"w": np.arange(3.0)}
    ckpt.write_payload(layout.states / f"epoch_{epoch}", "state.msgpack", tree, {"epoch": epoch})
    ckpt.write_payload(layout.latest / f"epoch_{epoch}", "params.msgpack", tree, {"epoch": epoch})


# ------------------------------------------------------------------------------------ the split


def test_a_run_folder_without_checkpoint_takes_the_configured_sizes(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, stop_before_model: None
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
    _old_split(tmp_path / "run", cfg)
    with pytest.raises(_Stop):
        train_run.train(cfg, run_dir=tmp_path / "run")
    assert _sizes(tmp_path / "run" / "dataset_split.json") == (6, 2, 2)


def test_a_run_folder_without_checkpoint_takes_an_explicit_split(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, stop_before_model: None
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
    old = _old_split(tmp_path / "run", cfg)
    wanted = {"train": old["validate"] + old["test"], "validate": old["train"][:2], "test": []}
    (tmp_path / "wanted.json").write_text(json.dumps(wanted))
    with pytest.raises(_Stop):
        train_run.train(cfg, run_dir=tmp_path / "run", split_path=tmp_path / "wanted.json")
    assert json.loads((tmp_path / "run" / "dataset_split.json").read_text()) == wanted


def test_resuming_checkpoints_of_another_split_is_refused(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, stop_before_model: None
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
    _old_split(tmp_path / "run", cfg)
    _fake_checkpoint(ckpt.RunLayout(tmp_path / "run"), 1)
    with pytest.raises(ConfigError, match=r"train_size/validate_size/test_size\] asks for a split \(train 6"):
        train_run.train(cfg, run_dir=tmp_path / "run")
    assert _sizes(tmp_path / "run" / "dataset_split.json") == (4, 4, 2)  # untouched


# ------------------------------------------------------------------------------------ incomplete folders


def test_training_fails_on_an_incomplete_structure_folder(jax_cache: Path, tmp_path: Path) -> None:
    inputs = h2o_inputs(tmp_path / "inputs")
    (inputs / "dft" / "h2o" / "empty").mkdir()
    cfg = tiny_config(inputs, tmp_path, jax_cache, **{"data.dft.on_bad_structure": "fail"})
    with pytest.raises(DataError, match=r"^structure h2o/empty: \.: empty folder"):
        train_run.train(cfg, run_dir=tmp_path / "run")


# ------------------------------------------------------------------------------------ moving aside


def test_every_state_corrupt_moves_best_and_metrics_aside(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, stop_before_model: None
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
    _old_split(tmp_path / "run", cfg)
    layout = ckpt.RunLayout(tmp_path / "run")
    _fake_checkpoint(layout, 1)
    ckpt.save_best(layout, {"w": np.arange(3.0)}, {"epoch": 1, "loss": 0.5})
    layout.metrics.write_text("epoch,step\n1,3\n")
    state = layout.states / "epoch_1" / "state.msgpack"
    state.write_bytes(state.read_bytes()[:-1] + b"\x00")  # every optimizer state corrupt
    assert ckpt.newest_resumable(layout) is None
    with pytest.raises(_Stop):
        train_run.train(cfg, run_dir=layout.root)
    (aside,) = layout.root.glob("model.replaced-*")
    assert ckpt.read_meta(aside / "params" / "best") is not None
    assert (aside / "metrics.csv").read_text() == "epoch,step\n1,3\n"
    assert (aside / "dataset_split.json").is_file()
    assert not layout.best.exists() and not layout.metrics.exists()
    assert "no resumable checkpoint" in layout.log.read_text()


# ------------------------------------------------------------------------------------ the lock


def test_a_second_trainer_in_the_same_run_folder_is_refused(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    (tmp_path / "run").mkdir()
    held = ckpt.RunLock.acquire(tmp_path / "run")
    try:
        cfg = tiny_config(h2o_dir, tmp_path, jax_cache)
        with pytest.raises(ckpt.RunFolderLocked) as caught:
            train_run.train(cfg, run_dir=tmp_path / "run")
        assert f"PID {os.getpid()} on host {socket.gethostname()}" in str(caught.value)
        assert not (tmp_path / "run" / "deepx.log").exists()
    finally:
        held.release()
    again = ckpt.RunLock.acquire(tmp_path / "run")  # released: free again
    again.release()


def test_the_lock_refusal_from_another_process_is_one_line(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from hamflow.train.checkpoint import RunLock; "
            f"RunLock.acquire(Path({str(run)!r})); print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        command = [sys.executable, "-m", "hamflow.cli", "train", str(REPO / "config" / "train.toml")]
        command += ["--run-dir", str(run), *set_args(tiny_overrides(h2o_dir, tmp_path, jax_cache))]
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    holder_text = f"(PID {holder.pid} on host {socket.gethostname()})"
    assert f"is in use by another `hamflow train` {holder_text}" in lines[0]


# ------------------------------------------------------------------------------------ OS errors


def test_run_dir_that_is_a_file_is_one_line(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("x")
    args = ["train", str(REPO / "config" / "train.toml"), "--run-dir", str(tmp_path / "a_file")]
    assert main(args + set_args(tiny_overrides(h2o_dir, tmp_path, jax_cache))) == 1
    err = capsys.readouterr().err.strip()
    folder = tmp_path / "a_file"
    assert err == f"hamflow: error: cannot create the run folder {folder}: a file of that name is in the way"


def test_outputs_dir_that_cannot_be_created_is_one_line(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("x")
    overrides = tiny_overrides(h2o_dir, tmp_path / "a_file" / "outputs", jax_cache)
    assert main(["train", str(REPO / "config" / "train.toml"), *set_args(overrides)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hamflow: error: cannot create the run folder {tmp_path / 'a_file' / 'outputs'}/")
    assert err.endswith(": Not a directory") and "\n" not in err


def test_an_unnamed_os_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import errno

    def full(args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/metrics.csv")

    monkeypatch.setattr("hamflow.cli._run_plot", full)
    assert main(["plot", "somewhere", "--out", "elsewhere"]) == 1
    assert capsys.readouterr().err == (
        "hamflow: error: hamflow plot: cannot complete: No space left on device (/data/run/metrics.csv)\n"
    )


def test_a_full_disk_while_checkpointing_names_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import errno

    from hamflow.errors import FileSystemError

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(FileSystemError, match=r"^cannot write the checkpoint .*epoch_3: No space left"):
        ckpt.write_payload(tmp_path / "epoch_3", "state.msgpack", {"w": np.zeros(2)}, {})
    assert list(tmp_path.iterdir()) == []  # no torn folder left


# ------------------------------------------------------------------------------------ signals


@pytest.mark.slow
def test_sigterm_before_the_training_loop_is_reported(h2o_dir: Path, jax_cache: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "hamflow.cli", "train", str(REPO / "config" / "train.toml")]
    command += ["--run-dir", str(tmp_path / "run"), *set_args(tiny_overrides(h2o_dir, tmp_path, jax_cache))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if "hamflow train: run directory" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "SIGTERM received before the training loop began" in rest
    assert "Traceback" not in rest and "Logging error" not in rest
    assert ckpt.newest_resumable(ckpt.RunLayout(tmp_path / "run")) is None


def test_sigterm_during_the_final_test_pass_stops_it_and_a_rerun_does_it(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job cancelled after the last epoch (a SLURM time limit, a benchmark's deadline) stops in the
    test pass with the resumable exit code, writes no partial test_metrics.csv and no TRAINING_DONE;
    the rerun trains nothing, does the pass and finishes."""
    from hamflow.train import test_pass
    from hamflow.train.loop import TrainingInterrupted

    original = test_pass.evaluate_structures

    def signalled(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded by the run's handler, seen before a structure
        return original(*args, **kwargs)

    cfg = tiny_config(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 1})
    layout = ckpt.RunLayout(tmp_path / "run")
    monkeypatch.setattr(test_pass, "evaluate_structures", signalled)
    with pytest.raises(TrainingInterrupted) as stopped:
        train_run.train(cfg, run_dir=layout.root)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert not layout.test_metrics.exists() and not layout.done.exists()
    assert ckpt.newest_resumable(layout) is not None  # the last epoch is saved
    monkeypatch.setattr(test_pass, "evaluate_structures", original)
    train_run.train(cfg, run_dir=layout.root)
    assert layout.test_metrics.is_file() and layout.done.is_file()
    assert "test pass interrupted" in (layout.root / "deepx.log").read_text()
