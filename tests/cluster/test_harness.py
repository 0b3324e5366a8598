"""The test cluster itself: a two-rule toy workflow through ``--executor slurm`` and profiles/slurm-test.

Proves the harness (partitions, fake GPU gres, squeue status polling) independently of hamflow's
stages, so a failure here points at the cluster, not the pipeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cluster.conftest import SlurmCluster

pytestmark = pytest.mark.cluster

TOY_SNAKEFILE = """\
rule all:
    input:
        "gpu.txt",


rule on_cpu:
    output:
        "cpu.txt",
    shell:
        "echo partition=$SLURM_JOB_PARTITION > {output}"


rule on_gpu:
    input:
        "cpu.txt",
    output:
        "gpu.txt",
    resources:
        slurm_partition="gpu",
        gpu=1,
    shell:
        "echo partition=$SLURM_JOB_PARTITION cuda=$CUDA_VISIBLE_DEVICES > {output}"
"""


def test_toy_workflow_lands_on_cpu_and_gpu_partitions(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(slurm_cluster.profile), "--jobs", "2"],
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    assert (tmp_path / "cpu.txt").read_text().split() == ["partition=cpu"]
    assert (tmp_path / "gpu.txt").read_text().split() == ["partition=gpu", "cuda=0"]

    gpu_job = slurm_cluster.show_job(slurm_cluster.jobs_by_rule()["on_gpu"][-1])
    assert gpu_job["Partition"] == "gpu"
    assert gpu_job["JOB_GRES"] == "gpu:fake:1"
    cpu_job = slurm_cluster.show_job(slurm_cluster.jobs_by_rule()["on_cpu"][-1])
    assert cpu_job["Partition"] == "cpu"
    assert cpu_job["JOB_GRES"] == "(null)"
