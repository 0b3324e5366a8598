"""A real one-node SLURM cluster for the tests in this folder (scripts/slurm/start_cluster.sh).

The cluster is started once per session and torn down in the fixture's finalizer: running jobs are
cancelled (scancel) and each daemon the harness started is stopped by the PID it recorded. Where the
machine cannot host a cluster (not root, no apt-get, packages not installable, a foreign SLURM
present) the tests skip with the harness's reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = REPO_ROOT / "scripts" / "slurm" / "start_cluster.sh"
STOP_SCRIPT = REPO_ROOT / "scripts" / "slurm" / "stop_cluster.sh"
TEST_PROFILE = REPO_ROOT / "profiles" / "slurm-test"
CANNOT_HOST_EXIT = 3


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


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Start the test cluster, yield it, stop it (scancel, then each daemon by PID) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (munged, slurmd); CI runs the cluster tests as root")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is missing to install it (Debian/Ubuntu only)")
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
