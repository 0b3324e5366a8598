"""Fixtures of the workflow tests: fresh copies of the workflow, and one finished run per module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from workflow_harness import Workflow, make_workflow


@pytest.fixture
def new_workflow(tmp_path: Path, demo_dir: Path) -> Callable[[], Workflow]:
    """A factory of fresh workflow copies under this test's tmp_path."""
    made = iter(range(100))
    return lambda: make_workflow(tmp_path / f"wf{next(made)}", demo_dir)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Workflow:
    """One workflow copy, run to the end once (run A), shared by a test module."""
    workflow = make_workflow(tmp_path_factory.mktemp("workflow"), demo_dir)
    workflow.snakemake()
    return workflow
