"""Two ``hamflow train`` processes joined through ``jax.distributed`` (CPU, gloo) on this machine.

The processes are started by hand (``HAMFLOW_NUM_PROCESSES`` / ``HAMFLOW_PROCESS_ID`` /
``HAMFLOW_COORDINATOR_ADDRESS``, coordinator on localhost), one CPU device each, and train the tiny
H2O setup. Checked: their loss curve is the one of a single process on two CPU devices; process 1
writes nothing (it is given a run folder of its own, which must stay absent); a SIGTERM to process
1 alone stops both after the same batch with a checkpoint, and both rerun resume on the same curve.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from training_setup import REPO, set_args, tiny_overrides

from hamflow.errors import HamflowError
from hamflow.train import run as train_run
from hamflow.train.checkpoint import RunLayout, newest_resumable

MANUAL = (train_run.NUM_PROCESSES_VARIABLE, train_run.PROCESS_ID_VARIABLE, train_run.COORDINATOR_VARIABLE)


# ------------------------------------------------------------------ joining by hand (no processes)


@pytest.fixture
def no_join(monkeypatch: pytest.MonkeyPatch) -> list:
    for key in (*MANUAL, "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    calls: list = []
    monkeypatch.setattr(train_run.jax.distributed, "initialize", lambda *a, **k: calls.append(k))
    return calls


def test_joining_by_hand_passes_the_coordinator_and_ranks(no_join: list, monkeypatch) -> None:
    monkeypatch.setenv(train_run.NUM_PROCESSES_VARIABLE, "2")
    monkeypatch.setenv(train_run.PROCESS_ID_VARIABLE, "1")
    monkeypatch.setenv(train_run.COORDINATOR_VARIABLE, "127.0.0.1:4711")
    assert train_run.join_slurm_processes() is True
    assert no_join == [{"coordinator_address": "127.0.0.1:4711", "num_processes": 2, "process_id": 1}]


def test_one_process_by_hand_does_not_join(no_join: list, monkeypatch) -> None:
    monkeypatch.setenv(train_run.NUM_PROCESSES_VARIABLE, "1")
    assert train_run.join_slurm_processes() is False
    assert no_join == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HAMFLOW_NUM_PROCESSES": "2"}, "set HAMFLOW_PROCESS_ID (0..1) and HAMFLOW_COORDINATOR_ADDRESS"),
        ({"HAMFLOW_NUM_PROCESSES": "two"}, "HAMFLOW_NUM_PROCESSES='two' is not an integer"),
        (
            {"HAMFLOW_NUM_PROCESSES": "2", "HAMFLOW_PROCESS_ID": "2", "HAMFLOW_COORDINATOR_ADDRESS": "h:1"},
            "HAMFLOW_PROCESS_ID=2 is outside 0..1",
        ),
    ],
)
def test_joining_by_hand_names_what_is_missing(no_join: list, monkeypatch, env: dict, message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(HamflowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_run.join_slurm_processes()
    assert no_join == []


# ------------------------------------------------------------------------ two real processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _curve(run_dir: Path) -> np.ndarray:
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)), "each epoch once, in order"
    return np.asarray([(float(r["train_loss"]), float(r["validate_loss"])) for r in rows])


def _start_pair(command: list[str], run_dirs: tuple[Path, Path]) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank, run_dir in enumerate(run_dirs):
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            train_run.NUM_PROCESSES_VARIABLE: "2",
            train_run.PROCESS_ID_VARIABLE: str(rank),
            train_run.COORDINATOR_VARIABLE: f"127.0.0.1:{port}",
        }
        for key in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID", "XLA_FLAGS"):
            env.pop(key, None)
        procs.append(
            subprocess.Popen(
                [*command, "--run-dir", str(run_dir)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


@pytest.mark.slow
def test_two_processes_train_as_two_devices_write_once_and_resume_after_sigterm(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path
) -> None:
    # 6 training structures, batches of 2 over 2 devices: 3 steps per epoch; 6 epochs leave time to signal
    overrides = tiny_overrides(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 6})
    command = [sys.executable, "-m", "hamflow.cli", "train", str(REPO / "config" / "train.toml")]
    command += set_args(overrides)
    reference = tmp_path / "reference"
    one = subprocess.run(
        [*command, "--set", 'system.device="cpu*2"', "--run-dir", str(reference)],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k not in MANUAL},
    )
    assert one.returncode == 0, one.stderr
    expected = _curve(reference)
    assert len(expected) == 6

    pair = [*command, "--set", 'system.device="cpu*1"']
    run, elsewhere = tmp_path / "run", tmp_path / "process1_own_folder"
    procs = _start_pair(pair, (run, elsewhere))
    try:
        head = []
        assert procs[0].stderr is not None
        deadline = time.monotonic() + 900
        for line in procs[0].stderr:
            head.append(line)
            if "epoch 1 |" in line or time.monotonic() > deadline:
                break
        assert "joined 2 processes (this one: 0): 2 devices in all" in "".join(head), "".join(head)
        procs[1].send_signal(signal.SIGTERM)  # process 1 alone: process 0 must stop with it
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        _stop(procs)
    errors = ["".join(head) + outputs[0][1], outputs[1][1]]
    for proc, text in zip(procs, errors, strict=True):
        assert proc.returncode == 128 + signal.SIGTERM, text
        assert "SIGTERM received: latest checkpoint saved" in text
    saved = newest_resumable(RunLayout(run))
    assert saved is not None and 0 < saved.meta["step"] < 18
    assert not elsewhere.exists(), "process 1 wrote into its run folder"
    assert not RunLayout(run).done.exists()

    procs = _start_pair(pair, (run, run))
    try:
        outputs = [p.communicate(timeout=900) for p in procs]
    finally:
        _stop(procs)
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert f"step {saved.meta['step']})" in err and "resuming from" in err
    log = RunLayout(run).log.read_text()
    # one writer: each epoch line once in deepx.log (two writers would double them)
    assert [log.count(f"epoch {n} |") for n in range(1, 7)] == [1] * 6, log
    assert "test pass skipped in a multi-process run" in log
    np.testing.assert_allclose(_curve(run), expected, rtol=1e-5)
    assert RunLayout(run).done.exists()
