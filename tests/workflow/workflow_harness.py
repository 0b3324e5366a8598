"""Driving the workflow in tests: ``python -m snakemake`` in a temporary copy of the workflow.

Each copy holds workflow/ (the Snakefile, rules, schema, report), config/, profiles/ and the 10 H2O
molecules of the demo dataset; ``test.yaml`` is the workflow's test config, .test/config/config.yaml
(the tiny run), plus a JAX compilation cache shared by every test run of the same tiny model (the
first training compiles, later ones load the compiled steps).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_RUN = REPO_ROOT / ".test" / "config" / "config.yaml"
WORKFLOW_FILES = ("workflow", "config", "profiles")
DEMO_SUBSET = Path("molecules") / "dft" / "h2o"
SNAKEMAKE_TIMEOUT_S = 600


def jax_cache_dir() -> Path:
    """A JAX compilation cache shared by the test runs (keyed by program, safe to share)."""
    return Path(tempfile.gettempdir()) / "hamflow-tests-jax-cache"


def tiny_run_config(**changes: object) -> dict:
    """.test/config/config.yaml with the shared compilation cache, and ``changes`` in train_overrides."""
    cfg = yaml.safe_load(TINY_RUN.read_text())
    cfg["train_overrides"]["process.train.compilation_cache_dir"] = str(jax_cache_dir())
    cfg["train_overrides"].update(changes)
    return cfg


def count_rules(text: str, pattern: str) -> Counter:
    return Counter(re.findall(pattern, text))


@dataclass
class Workflow:
    """A temporary copy of the workflow with the demo subset; runs snakemake with profiles/local."""

    root: Path

    def snakemake(
        self,
        *args: str,
        check: bool = True,
        env: dict | None = None,
        profile: str = "profiles/local",
        timeout_s: float = SNAKEMAKE_TIMEOUT_S,
    ) -> subprocess.CompletedProcess:
        """``python -m snakemake --profile PROFILE --configfile test.yaml ARGS`` in this copy (JAX on
        the CPU); fails with snakemake's stderr tail when it exits non-zero and ``check`` is set."""
        command = [sys.executable, "-m", "snakemake", "--profile", profile, "--configfile", "test.yaml"]
        result = subprocess.run(
            [*command, *args],
            cwd=self.root,
            env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stderr[-6000:]}")
        return result

    def planned(self, *args: str) -> Counter:
        """Jobs a dry run would run, {rule: count} (empty when there is nothing to do)."""
        result = self.snakemake("--dry-run", *args)
        return planned_jobs(result.stdout + result.stderr)

    def ran(self, result: subprocess.CompletedProcess) -> Counter:
        """Jobs a real run finished, {rule: count}."""
        return count_rules(result.stdout + result.stderr, r"Finished jobid: \d+ \(Rule: (\w+)\)")

    def write_config(self, cfg: dict, name: str = "test.yaml") -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def run_dir(self, run: str = "A") -> Path:
        return self.root / "results" / "runs" / run


def planned_jobs(text: str) -> Counter:
    """Parse the first "Job stats" table of snakemake's output into {rule: count}."""
    if "Job stats:" not in text:
        return Counter()
    table = text.split("Job stats:", 1)[1].splitlines()[3:]
    jobs: Counter = Counter()
    for line in table:
        name, _, count = line.strip().rpartition(" ")
        if not line.strip() or name.strip() == "total":
            break
        jobs[name.strip()] = int(count)
    return jobs


def make_workflow(root: Path, demo_dir: Path) -> Workflow:
    """Copy the workflow and the demo subset into ``root``; write test.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)
    shutil.copytree(demo_dir / DEMO_SUBSET, root / "data" / "demo" / DEMO_SUBSET)
    workflow = Workflow(root)
    workflow.write_config(tiny_run_config())
    return workflow
