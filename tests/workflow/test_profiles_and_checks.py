"""Fast checks without running a job: the SLURM profile's dry run on a machine without SLURM, its
installation as the `slurm` profile, config errors, and the workflow's lint and format state."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from workflow_harness import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

    from workflow_harness import Workflow

SLURM_COMMANDS = {"sbatch", "sinfo", "squeue", "sacct", "scancel", "srun", "scontrol", "salloc", "sacctmgr"}

# `snakemake --lint` findings kept on purpose (docs/workflow.md, "Lint"):
JUSTIFIED_LINTS = {
    # the stages are the project's own `hamflow` commands, from the environment hamflow is installed in
    "Specify a conda environment or container for each rule.",
    # the resolved train/infer TOMLs are read through globals: their names change with every setting,
    # while a stage must rerun only when one of its own settings (its params) changes
    "Shell command directly uses variable RESOLVED_TOML from outside of the rule",
    "Shell command directly uses variable INFER_TOML from outside of the rule",
}


def _path_without_slurm(folder: Path) -> str:
    """A PATH of links to every command on the current PATH except the SLURM client commands."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = folder / entry.name
            if entry.name not in SLURM_COMMANDS and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return str(folder)


def _job_blocks(text: str) -> dict[str, str]:
    """{rule: its dry-run block} (the text from ``rule NAME:`` to the next blank line)."""
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r"(?:rule|checkpoint) (\w+):\n(?:.+\n)+", text)
    }


def test_slurm_profile_dry_run_works_without_slurm(
    new_workflow: Callable[[], Workflow], tmp_path: Path
) -> None:
    workflow = new_workflow()
    path = _path_without_slurm(tmp_path / "bin")
    assert shutil.which("sinfo", path=path) is None
    result = workflow.snakemake("--dry-run", profile="profiles/slurm", env={"PATH": path})
    jobs = _job_blocks(result.stdout + result.stderr)
    assert "slurm_partition=gpu" in jobs["train"] and "gpu=1" in jobs["train"]
    assert "slurm_extra=--signal=TERM@300" in jobs["train"]
    assert "slurm_partition=cpu" in jobs["discover"]


def test_installed_slurm_profile_is_found_by_name(
    new_workflow: Callable[[], Workflow], tmp_path: Path
) -> None:
    workflow = new_workflow()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    script = REPO_ROOT / "scripts" / "install_slurm_profile.sh"
    subprocess.run([str(script)], env=env, check=True, capture_output=True)
    assert (tmp_path / "config" / "snakemake" / "slurm" / "config.v8+.yaml").is_file()
    again = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    result = workflow.snakemake("--dry-run", profile="slurm", env={"XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"]})
    assert "slurm_partition=gpu" in _job_blocks(result.stdout + result.stderr)["train"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("shard_size=0", "pipeline config [shard_size] = 0: 0 is less than the minimum of 1"),
        (
            "finetune_checkpoint=newest",
            "pipeline config [finetune_checkpoint] = 'newest': 'newest' is not one of",
        ),
        ("run=a/b", "pipeline config [run] = 'a/b': 'a/b' does not match"),
        ("run=x.partial", "pipeline config [run] = 'x.partial'"),
        (
            "shards=3",
            "pipeline config [(top level)]: Additional properties are not allowed ('shards' was unexpected)",
        ),
        (
            'train_overrides={"model.net_type": "owl"}',
            "pipeline config [train_overrides]: config/train.toml: [model.net_type]",
        ),
    ],
)
def test_bad_config_value_names_the_key(
    new_workflow: Callable[[], Workflow], setting: str, message: str
) -> None:
    workflow = new_workflow()
    result = workflow.snakemake("--dry-run", "--config", setting, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_lint_reports_only_the_justified_findings(new_workflow: Callable[[], Workflow]) -> None:
    workflow = new_workflow()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=workflow.root, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    findings = {
        line.strip().removeprefix("* ").rstrip(":") for line in output.splitlines() if "    * " in line
    }
    assert findings, output[-2000:]
    assert findings <= JUSTIFIED_LINTS, findings - JUSTIFIED_LINTS


def test_workflow_files_are_snakefmt_clean() -> None:
    snakefmt = shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (it is in the [dev] extra)")
    rules = sorted(str(path) for path in (REPO_ROOT / "workflow" / "rules").glob("*.smk"))
    files = ["workflow/Snakefile", *rules]
    result = subprocess.run([snakefmt, "--check", *files], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
