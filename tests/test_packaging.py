"""Packaging as the ecosystem expects: ``python -m hamflow``, a LICENSE matching pyproject's, and every
package the workflow imports declared."""

from __future__ import annotations

import re
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
    # common.smk checks config/config.yaml through hamflow.workflow_support
    assert "from jsonschema import" in (REPO / "src" / "hamflow" / "workflow_support.py").read_text()
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dep.startswith("jsonschema") for dep in dependencies)


def _requirements(key: str | None = None) -> dict[str, str]:
    """{name: specifier} of pyproject's dependencies (or of one optional extra)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entries = project["dependencies"] if key is None else project["optional-dependencies"][key]
    found = {}
    for entry in entries:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.split(";")[0].strip())
        assert match, entry
        found[match.group(1).lower()] = match.group(2)
    return found


def test_snakefile_min_version_is_the_pyproject_snakemake_floor():
    snakefile = (REPO / "workflow" / "Snakefile").read_text()
    match = re.search(r'^min_version\("([^"]+)"\)', snakefile, re.MULTILINE)
    assert match, "workflow/Snakefile calls min_version(...)"
    floor = re.search(r">=\s*([0-9][0-9.]*)", _requirements()["snakemake"])
    assert floor, "pyproject gives snakemake a >= floor"
    assert match.group(1) == floor.group(1)


def test_dev_tools_are_bounded_and_runtime_needs_no_test_only_package():
    dev = _requirements("dev")
    for name in ("ruff", "snakefmt"):
        assert "<" in dev[name], f"{name} (enforced by CI) has an upper bound: {dev[name]!r}"
    assert all("<" in spec for spec in dev.values()), dev
    runtime = _requirements()
    sources = "\n".join(path.read_text() for path in (REPO / "src").rglob("*.py"))
    for name in ("psutil", "pyscf"):
        imported = re.search(rf"^\s*(import|from) {name}\b", sources, re.MULTILINE) is not None
        assert (name in runtime) == imported, f"{name}: imported under src/ = {imported}"
        if not imported:
            assert name in dev
