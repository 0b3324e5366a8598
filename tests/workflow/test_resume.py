"""A training job killed mid-run (SIGTERM, as SLURM sends before a time limit) resumes on the next run.

The train rule trains in results/runs/<run>.partial/, which no rule declares as an output, so
Snakemake does not delete it when the job fails; rerunning the workflow continues from the saved
checkpoint's epoch instead of starting again.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from workflow_harness import SNAKEMAKE_TIMEOUT_S, tiny_run_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from workflow_harness import Workflow

pytestmark = pytest.mark.slow

MAX_EPOCH = 150  # long enough to be caught mid-run, short enough to finish on the rerun
KILL_AFTER_EPOCHS = 3


def _metrics_epochs(path: Path) -> list[int]:
    if not path.is_file():
        return []
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _hamflow_train(parent: psutil.Process) -> psutil.Process | None:
    """The ``hamflow train`` process among ``parent``'s descendants (not the bash wrapping it)."""
    for child in parent.children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if any(Path(arg).name == "hamflow" for arg in argv[:2]) and "train" in argv[1:3]:
            return child
    return None


def _start_and_kill_training(workflow: Workflow) -> subprocess.CompletedProcess:
    """Run the workflow; SIGTERM the training once it has finished a few epochs; wait for snakemake."""
    command = [sys.executable, "-m", "snakemake", "--until", "train", "--profile", "profiles/local"]
    command += ["--configfile", "test.yaml"]
    log = workflow.root / "killed_run.log"
    with open(log, "w") as out:
        snakemake = subprocess.Popen(
            command, cwd=workflow.root, env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=out, stderr=out
        )
        metrics = workflow.root / "results" / "runs" / "A.partial" / "metrics.csv"
        deadline = time.monotonic() + SNAKEMAKE_TIMEOUT_S
        try:
            while len(_metrics_epochs(metrics)) < KILL_AFTER_EPOCHS:
                assert snakemake.poll() is None, f"workflow ended before the kill:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, "training did not reach the kill point in time"
                time.sleep(0.05)
            trainer = _hamflow_train(psutil.Process(snakemake.pid))
            assert trainer is not None, "no hamflow train process found"
            trainer.send_signal(signal.SIGTERM)
            returncode = snakemake.wait(timeout=SNAKEMAKE_TIMEOUT_S)
        finally:
            if snakemake.poll() is None:
                snakemake.kill()
    return subprocess.CompletedProcess(command, returncode, log.read_text(), "")


def test_train_killed_mid_run_resumes_from_its_checkpoint(new_workflow: Callable[[], Workflow]) -> None:
    workflow = new_workflow()
    workflow.write_config(
        # latest checkpoints only at the end: the one the rerun finds is the one SIGTERM saved
        tiny_run_config(**{"process.train.max_epoch": MAX_EPOCH, "data.model_save.latest_interval": 0})
    )
    killed = _start_and_kill_training(workflow)
    assert killed.returncode != 0, "snakemake must report the killed training job as failed"

    partial = workflow.root / "results" / "runs" / "A.partial"
    saved = sorted(
        int(p.name.removeprefix("epoch_")) for p in (partial / "model/params/latest").glob("epoch_*")
    )
    assert len(saved) == 1, f"expected the one checkpoint saved on SIGTERM, found epochs {saved}"
    killed_at = saved[0]
    assert KILL_AFTER_EPOCHS <= killed_at < MAX_EPOCH
    assert (
        "SIGTERM received: latest checkpoint saved"
        in (workflow.root / "results/logs/A/train.log").read_text()
    )
    assert not (workflow.run_dir("A") / "TRAINING_DONE").exists()

    rerun = workflow.snakemake("--until", "train")
    assert workflow.ran(rerun) == Counter({"train": 1}), "only training reruns: the data stages are done"

    log = (workflow.run_dir("A") / "deepx.log").read_text()
    resumed = re.search(r"resuming from \S+/epoch_(\d+) \(epoch (\d+),", log)
    assert resumed is not None, log[-3000:]
    assert int(resumed.group(1)) == int(resumed.group(2)) == killed_at
    first_epoch_after = re.search(r"\] epoch (\d+) \|", log[resumed.end() :])
    assert first_epoch_after is not None and int(first_epoch_after.group(1)) == killed_at + 1
    assert _metrics_epochs(workflow.run_dir("A") / "metrics.csv") == list(range(1, MAX_EPOCH + 1))
    assert not partial.exists(), "the finished run is moved to results/runs/A/"
