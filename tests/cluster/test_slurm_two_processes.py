"""Two ``hamflow train`` processes joined by SLURM: ``srun -n 2`` in a batch job on the local cluster.

The tasks of the job step learn coordinator and ranks from SLURM's environment (no HAMFLOW_*
variables), one CPU device each, and train the tiny H2O setup of tests/train. Checked: both tasks
join; a SIGTERM to the job step (``scancel --signal=TERM``, as SLURM's ``--signal`` warning sends it)
stops both with a checkpoint written by process 0 alone (process 1 is given a run folder of its own,
which must stay absent); a second job resumes from that checkpoint and its loss curve equals that of
one process on two CPU devices (rtol 1e-5), each epoch once.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pytest

from hamflow.train.checkpoint import RunLayout, newest_resumable

if TYPE_CHECKING:
    from tests.cluster.conftest import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3  # 6 training structures, batches of 2 over 2 devices: 3 steps per epoch
JOB_TIMEOUT_S = 900  # generous: a loaded 2-core machine compiles 5-10x slower


def _training_setup() -> ModuleType:
    """tests/train/training_setup.py (the tiny H2O training setup), by path."""
    if "training_setup" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "training_setup", REPO_ROOT / "tests" / "train" / "training_setup.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["training_setup"] = module
        spec.loader.exec_module(module)
    return sys.modules["training_setup"]


def _clean_env() -> dict[str, str]:
    """This environment without any SLURM_* or HAMFLOW_* variable (no joining but SLURM's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HAMFLOW_"))}
    return {**env, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _curve(run_dir: Path) -> np.ndarray:
    """(train loss, validation loss) per epoch of metrics.csv, which must list each epoch once, in order."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)), "each epoch once, in order"
    return np.asarray([(float(r["train_loss"]), float(r["validate_loss"])) for r in rows])


def _job_script(folder: Path, command: list[str], run_dirs: tuple[Path, Path]) -> Path:
    """A batch script: ``srun -n 2`` of ``command --run-dir <run_dirs[rank]>`` (rank: SLURM_PROCID)."""
    task = folder / "task.sh"
    task.write_text(
        "#!/bin/bash\n"
        f'case "$SLURM_PROCID" in 0) dir={shlex.quote(str(run_dirs[0]))} ;;'
        f" *) dir={shlex.quote(str(run_dirs[1]))} ;; esac\n"
        f'exec {shlex.join(command)} --run-dir "$dir"\n'
    )
    task.chmod(0o755)
    batch = folder / "job.sh"
    # --label: each output line starts with the task's rank ("0: ", "1: ")
    batch.write_text(f"#!/bin/bash\nexec srun --label -n 2 {shlex.quote(str(task))}\n")
    batch.chmod(0o755)
    return batch


def _submit_pair(
    cluster: SlurmCluster, folder: Path, command: list[str], run_dirs: tuple[Path, Path]
) -> tuple[str, Path]:
    """Submit the two-task job (2 CPUs, 10 min limit); its id and output file (stdout + stderr)."""
    folder.mkdir(parents=True)
    output = folder / "job.out"
    job_id = cluster.submit(
        _job_script(folder, command, run_dirs),
        "-n",
        "2",
        "--mem-per-cpu=1500",
        "--time=10",
        f"--output={output}",
        f"--chdir={folder}",
        env=_clean_env(),
    )
    return job_id, output


def _wait_for_text(cluster: SlurmCluster, job_id: str, output: Path, needles: list[str]) -> str:
    """The job's output once it holds every needle; fails if the job ends or time runs out first."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        text = output.read_text() if output.is_file() else ""
        if all(needle in text for needle in needles):
            return text
        if cluster.show_job(job_id).get("JobState") not in {"PENDING", "RUNNING", "CONFIGURING"}:
            break
        time.sleep(0.5)
    text = output.read_text() if output.is_file() else "(no output)"
    raise AssertionError(f"job {job_id} output lacks {needles}:\n{text[-4000:]}")


def test_srun_two_tasks_train_as_two_devices_write_once_and_resume_after_sigterm(
    slurm_cluster: SlurmCluster, demo_dir: Path, tmp_path: Path
) -> None:
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout
    if int(cpus.split()[0].rstrip("+")) < 2:
        pytest.skip(f"the test cluster's node has {cpus.strip()} CPU: srun -n 2 needs 2")
    setup = _training_setup()
    inputs = setup.h2o_inputs(tmp_path / "h2o")
    overrides = setup.tiny_overrides(
        inputs, tmp_path / "outputs", tmp_path / "jax_cache", **{"process.train.max_epoch": EPOCHS}
    )
    command = [sys.executable, "-m", "hamflow.cli", "train", str(setup.REPO / "config" / "train.toml")]
    command += setup.set_args(overrides)

    # the reference: one process, two CPU devices, outside SLURM (it also builds the graph store)
    reference = tmp_path / "reference"
    one = subprocess.run(
        [*command, "--set", 'system.device="cpu*2"', "--run-dir", str(reference)],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        env=_clean_env(),
        check=False,
    )
    assert one.returncode == 0, one.stderr[-4000:]
    expected = _curve(reference)
    assert len(expected) == EPOCHS

    pair = [*command, "--set", 'system.device="cpu*1"']
    run, elsewhere = tmp_path / "run", tmp_path / "process1_own_folder"
    job_id, output = _submit_pair(slurm_cluster, tmp_path / "job1", pair, (run, elsewhere))
    # both tasks have joined and installed their signal handlers (the devices line comes after)
    joined = [f"{rank}: [INFO] joined 2 processes (this one: {rank}): 2 devices in all" for rank in (0, 1)]
    _wait_for_text(slurm_cluster, job_id, output, [*joined, "0: [INFO] devices:", "1: [INFO] devices:"])
    # SIGTERM to the job step's tasks (not the batch shell), as the time-limit warning --signal=TERM@N
    subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
    job = slurm_cluster.wait_for(job_id, JOB_TIMEOUT_S)
    text = output.read_text()
    assert job["JobState"] == "FAILED", text[-4000:]  # hamflow exits 143 after the checkpoint
    stopped = [line[:3] for line in text.splitlines() if "SIGTERM received: latest checkpoint saved" in line]
    assert sorted(stopped) == ["0: ", "1: "], text[-4000:]  # each task stopped on the signal, once
    saved = newest_resumable(RunLayout(run))
    assert saved is not None and 0 < saved.meta["step"] < 3 * EPOCHS, text[-4000:]
    assert not elsewhere.exists(), "process 1 wrote into its run folder"
    assert not RunLayout(run).done.exists()

    # the rerun: a new job, both tasks on the same folder (process 1 reads the checkpoint too)
    job_id, output = _submit_pair(slurm_cluster, tmp_path / "job2", pair, (run, run))
    job = slurm_cluster.wait_for(job_id, JOB_TIMEOUT_S)
    text = output.read_text()
    assert job["JobState"] == "COMPLETED", text[-4000:]
    resumed = [line for line in text.splitlines() if "resuming from" in line]
    assert sorted(line[:3] for line in resumed) == ["0: ", "1: "], text[-4000:]
    assert all(f"step {saved.meta['step']})" in line for line in resumed), resumed
    log = RunLayout(run).log.read_text()
    # one writer: each epoch line once in deepx.log (two writers would double them)
    assert [log.count(f"epoch {n} |") for n in range(1, EPOCHS + 1)] == [1] * EPOCHS, log
    assert "test pass skipped in a multi-process run" in log
    np.testing.assert_allclose(_curve(run), expected, rtol=1e-5)
    assert RunLayout(run).done.exists()
    assert not elsewhere.exists()
