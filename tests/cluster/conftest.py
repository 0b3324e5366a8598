"""A real one-node SLURM cluster for the tests in this folder (scripts/slurm/start_cluster.sh).

One cluster per test module, started fresh (so a module's queries see only its own jobs) and torn
down when the module ends: running jobs are cancelled (scancel) and each daemon the harness started
is stopped by the PID it recorded. Only one module at a time holds the cluster: the pytest-xdist
workers (``-n 2 --dist loadfile`` puts each file on its own worker) queue on a file lock, since the
machine can host one cluster only. Where the machine cannot host a cluster (not root, no apt-get,
packages not installable, a foreign SLURM present) the tests skip with the harness's reason.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO_ROOT / "scripts" / "slurm" / "start_cluster.sh"
STOP_SCRIPT = REPO_ROOT / "scripts" / "slurm" / "stop_cluster.sh"
TEST_PROFILE = REPO_ROOT / "profiles" / "slurm-test"
CANNOT_HOST_EXIT = 3
#: Held by the module that owns the cluster; other xdist workers wait on it (one cluster per machine).
CLUSTER_LOCK = Path(tempfile.gettempdir()) / "hamflow-slurm-tests.lock"
#: Job states after which a job runs no more (``scontrol show job``'s JobState).
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE"}
)


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: its state folder (configs, daemon logs) and queries about its jobs."""

    state_dir: Path
    profile: Path = TEST_PROFILE

    @staticmethod
    def show_job(job_id: str) -> dict[str, str]:
        """``scontrol show job -d`` of one job as {field: value} (finished jobs stay listed 10 min)."""
        text = subprocess.run(
            ["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, check=True
        ).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", text))

    @staticmethod
    def jobs_by_rule() -> dict[str, list[str]]:
        """Ids of every job the cluster knows, keyed by Snakemake rule (job comment ``rule_<name>...``)."""
        text = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i %k"], capture_output=True, text=True, check=True
        ).stdout
        rules: dict[str, list[str]] = {}
        for line in text.splitlines():
            job_id, _, comment = line.strip().partition(" ")
            rule = comment.split("_wildcards_")[0].removeprefix("rule_").strip()
            rules.setdefault(rule, []).append(job_id)
        return rules

    @staticmethod
    def submit(script: Path, *options: str, env: dict[str, str] | None = None) -> str:
        """``sbatch --parsable OPTIONS SCRIPT``; the job id."""
        submitted = subprocess.run(
            ["sbatch", "--parsable", *options, str(script)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert submitted.returncode == 0, f"sbatch failed: {submitted.stderr}"
        return submitted.stdout.strip().split(";")[0]

    def wait_for(self, job_id: str, timeout_s: float) -> dict[str, str]:
        """Wait until the job has ended (a final JobState); its ``scontrol show job`` fields.

        On timeout the job is cancelled and the test fails, naming the job's last state.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.show_job(job_id)
            if job.get("JobState") in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                subprocess.run(["scancel", job_id], check=False)
                raise AssertionError(f"job {job_id} still {job.get('JobState')} after {timeout_s:.0f} s")
            time.sleep(1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start a fresh test cluster for this module (after waiting for any other module's to stop),
    yield it, stop it (scancel, then each daemon by PID) when the module is done."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (munged, slurmd); CI runs the cluster tests as root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is missing to install it (Debian/Ubuntu only)")
    with open(CLUSTER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, after the cluster stopped
        state_dir = tmp_path_factory.mktemp("slurm")
        started = subprocess.run(
            [str(START_SCRIPT), str(state_dir)], capture_output=True, text=True, timeout=600, check=False
        )
        try:
            if started.returncode == CANNOT_HOST_EXIT:
                pytest.skip(started.stderr.strip().splitlines()[-1])
            assert started.returncode == 0, f"start_cluster.sh failed:\n{started.stdout}\n{started.stderr}"
            yield SlurmCluster(state_dir)
        finally:
            subprocess.run([str(STOP_SCRIPT), str(state_dir)], capture_output=True, timeout=120, check=False)
