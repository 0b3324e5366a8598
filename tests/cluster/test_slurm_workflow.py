"""The whole workflow on a real SLURM cluster: ``--executor slurm`` with profiles/slurm-test.

The demo subset of the workflow tests (10 H2O molecules in 2 shards, tiny model, 2 epochs) runs through
the local one-node cluster of scripts/slurm/start_cluster.sh: data stages, evaluation and plots land on
partition ``cpu``, training and inference on partition ``gpu`` with one (fake) GPU allocated, and the
run directory is complete at the end.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cluster.conftest import SlurmCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def _workflow_harness():
    """tests/workflow/workflow_harness.py (the workflow copy the workflow tests drive), by path."""
    if "workflow_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "workflow_harness", REPO_ROOT / "tests" / "workflow" / "workflow_harness.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["workflow_harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["workflow_harness"]


def test_workflow_runs_on_slurm_with_training_on_a_gpu(
    slurm_cluster: SlurmCluster, tmp_path: Path, demo_dir: Path
) -> None:
    harness = _workflow_harness()
    workflow = harness.make_workflow(tmp_path / "workflow", demo_dir)
    workflow.write_config({**harness.tiny_run_config(), "shard_size": 5})  # 2 shards: one wave on 2 CPUs
    result = workflow.snakemake(profile=str(slurm_cluster.profile))  # JAX_PLATFORMS=cpu in the job env

    assert workflow.ran(result) == Counter(
        {
            "discover": 1,
            "parse": 2,
            "graph_shard": 2,
            "graph": 1,
            "train": 1,
            "infer": 1,
            "evaluate": 1,
            "plot": 1,
            "all": 1,
        }
    )
    run_dir = workflow.run_dir("A")
    assert (run_dir / "TRAINING_DONE").is_file()
    assert (run_dir / "model" / "params" / "best" / "meta.json").is_file()

    jobs = slurm_cluster.jobs_by_rule()
    (train_id,) = jobs["train"]
    train = slurm_cluster.show_job(train_id)
    assert train["Partition"] == "gpu"
    assert train["JOB_GRES"] == "gpu:fake:1", "the training job must have a GPU allocated"
    assert train["JobState"] == "COMPLETED"
    assert train["TimeLimit"] == "00:15:00"  # profiles/slurm-test: runtime 15 min
    (infer_id,) = jobs["infer"]
    infer = slurm_cluster.show_job(infer_id)
    assert (infer["Partition"], infer["JOB_GRES"], infer["JobState"]) == ("gpu", "gpu:fake:1", "COMPLETED")
    for rule in ("discover", "parse", "graph_shard", "graph", "evaluate", "plot"):
        for job_id in jobs[rule]:
            job = slurm_cluster.show_job(job_id)
            placed = (job["Partition"], job["JOB_GRES"], job["JobState"])
            assert placed == ("cpu", "(null)", "COMPLETED"), rule

    # the job log of the training job (kept by the test profile)
    logs = workflow.root / ".snakemake" / "slurm_logs"
    train_logs = list((logs / "rule_train").rglob(f"{train_id}.log"))
    assert len(train_logs) == 1, sorted(str(path) for path in logs.rglob("*"))
    assert "Finished jobid" in train_logs[0].read_text()
