"""A training longer than its SLURM time limit: the workflow goes on by itself until it is done.

The demo subset of the workflow tests runs through the local cluster with profiles/slurm-test, whose
train rule gets a real 2-minute ``--time`` here (a copied profile; the rest as shipped: the
``--signal=TERM@60`` warning and the resubmission of failed jobs). The tiny model trains for
``EPOCHS`` epochs, more than fits in one 2-minute job on the 2-core test machine (40-300 epochs per
job were seen there, the first job the fewest), so each train job but the last is cut by its limit:
SIGTERM, ``hamflow train`` saves a checkpoint in ``results/runs/A.partial/`` and exits, Snakemake
resubmits the job, which resumes. Checked: more than one SLURM job ran the train rule, every one
with the 2-minute limit, all but the last ended cut off and the last completed; the run resumed from
a checkpoint; snakemake exited 0 without help; ``metrics.csv`` lists every epoch once, in order, each
with its own step count (no epoch trained twice).
"""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tests.cluster.conftest import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_MIN = 2  # the train job's time limit (SLURM counts whole minutes)
EPOCHS = 450  # ~0.1 s each on the 2-core machine, 40-300 per 2-minute job seen: 2 or more jobs
# Resubmissions a cut training may use here (profiles/slurm-test ships 3): the warning comes up to a
# minute early and each job starts by loading JAX, so a 2-minute job trains for 20-60 s only.
RETRIES = 8
STEPS_PER_EPOCH = 3  # 6 training structures in batches of 2 on one device
SNAKEMAKE_TIMEOUT_S = 1800
CUT_STATES = {"FAILED", "TIMEOUT"}  # hamflow exits 143 after the warning; TIMEOUT: cut at the limit


def _workflow_harness() -> ModuleType:
    """tests/workflow/workflow_harness.py (the workflow copy the workflow tests drive), by path."""
    if "workflow_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "workflow_harness", REPO_ROOT / "tests" / "workflow" / "workflow_harness.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["workflow_harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["workflow_harness"]


def _time_limited_profile(source: Path, target: Path) -> Path:
    """A copy of the test profile with a RUNTIME_MIN-minute train job and RETRIES resubmissions."""
    shutil.copytree(source, target)
    path = target / "config.v8+.yaml"
    profile = yaml.safe_load(path.read_text())
    train = profile["set-resources"]["train"]
    assert "--signal=TERM@" in train["slurm_extra"], "the test profile must ask for a warning signal"
    train["runtime"] = RUNTIME_MIN
    profile["retries"] = RETRIES
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return target


def _metrics(run_dir: Path) -> list[tuple[int, int]]:
    """(epoch, step) of each metrics.csv row."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [(int(row["epoch"]), int(row["step"])) for row in csv.DictReader(handle)]


def test_training_cut_by_its_time_limit_resumes_in_resubmitted_jobs_to_the_end(
    slurm_cluster: SlurmCluster, tmp_path: Path, demo_dir: Path
) -> None:
    harness = _workflow_harness()
    workflow = harness.make_workflow(tmp_path / "workflow", demo_dir)
    config = harness.tiny_run_config(**{"process.train.max_epoch": EPOCHS})
    workflow.write_config({**config, "shard_size": 5})  # 2 shards: one wave on 2 CPUs
    profile = _time_limited_profile(slurm_cluster.profile, tmp_path / "profile")
    result = workflow.snakemake(
        "--until", "train", profile=str(profile), check=False, timeout_s=SNAKEMAKE_TIMEOUT_S
    )

    jobs = sorted(slurm_cluster.jobs_by_rule().get("train", []), key=int)
    shown = [slurm_cluster.show_job(job_id) for job_id in jobs]
    summary = [
        (job_id, job["JobState"], job["RunTime"], job["TimeLimit"])
        for job_id, job in zip(jobs, shown, strict=True)
    ]
    assert result.returncode == 0, f"train jobs {summary}\n{result.stderr[-6000:]}"
    assert workflow.ran(result)["train"] == 1, "the train rule finished once"
    assert len(jobs) > 1, f"the training was never cut by its time limit: {summary}"
    assert all(job["TimeLimit"] == f"00:0{RUNTIME_MIN}:00" for job in shown), summary
    assert all(job["JobState"] in CUT_STATES for job in shown[:-1]), summary
    assert shown[-1]["JobState"] == "COMPLETED", summary

    run_dir = workflow.run_dir("A")
    assert (run_dir / "TRAINING_DONE").is_file()
    assert not (run_dir.parent / "A.partial").exists(), "the finished run was not moved into place"
    log = (run_dir / "deepx.log").read_text()
    resumed = [(int(e), int(s)) for e, s in re.findall(r"resuming from \S+ \(epoch (\d+), step (\d+)\)", log)]
    assert resumed, f"no job resumed from a checkpoint: {summary}"
    # never behind an earlier resume (a job cut during its start-up resumes where the last one did)
    assert resumed == sorted(resumed), f"a job resumed from an older checkpoint: {resumed}"
    # a job cut in the final test pass, after the last epoch, resumes from epoch EPOCHS itself
    assert all(0 < epoch <= EPOCHS for epoch, _ in resumed), resumed
    # every epoch once, in order, with its own steps: no epoch was trained twice or skipped
    rows = _metrics(run_dir)
    assert rows == [(epoch, epoch * STEPS_PER_EPOCH) for epoch in range(1, EPOCHS + 1)], (
        f"metrics.csv epochs {[epoch for epoch, _ in rows][:20]}... ({len(rows)} rows)"
    )
