"""Packaging as the ecosystem expects: ``python -m hamflow``, a LICENSE matching pyproject's, and every
package the workflow imports declared."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_python_dash_m_hamflow_is_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "hamflow", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hamflow ")


def test_license_file_is_the_declared_mit():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_jsonschema_used_by_the_workflow_is_declared():
    assert "from jsonschema import" in (REPO / "workflow" / "rules" / "common.smk").read_text()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dep.startswith("jsonschema") for dep in dependencies)
