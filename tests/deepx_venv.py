"""A Python >= 3.12 with DeepH-dock installed, for tests that run DeepH-dock's own code on hamflow's files.

DeepH-dock (PyPI ``deepx-dock``) declares Python >= 3.12 and its ``misc.py`` uses 3.12-only f-string
syntax, so it does not import in hamflow's Python 3.11. :func:`deepx_python` finds a base interpreter
(``$HAMFLOW_DEEPX_PYTHON``, else pyenv's 3.12 / 3.13 / 3.14) and installs DeepH-dock into a venv cached
outside the repo, ``$XDG_CACHE_HOME/hamflow/deepx-venv-py<X.Y>-deepx-dock-<version>`` (``~/.cache`` by
default). The venv is built in a temporary folder beside it and renamed into place only once DeepH-dock
imports, so an install killed half way is never trusted; a warm cache costs one ``python -c`` check.

DeepH-dock is installed with ``--no-deps`` plus only what its readers import: its declared
dependencies include mpi4py (needs an MPI compiler), mendeleev, ase and matplotlib, none of which the
code the tests run needs.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

DEEPX_DOCK_VERSION = "0.9.11"
# what deepx_dock.compute.eigen.hamiltonian and deepx_dock.analyze.error.with_train_log import
DEEPX_DEPS = ("numpy", "h5py", "scipy", "tqdm", "joblib", "threadpoolctl", "toml")
MIN_VERSION, MAX_VERSION = (3, 12), (3, 14)  # deepx-dock 0.9.11: Requires-Python >=3.12,<3.15
ENV_VAR = "HAMFLOW_DEEPX_PYTHON"
READY_MARK = "hamflow-deepx-ready"
INSTALL_TIMEOUT_S = 900
# pip's words when the index cannot be reached or does not hold the package: skip, not fail
NO_NETWORK = re.compile(
    r"No matching distribution found|Could not find a version|NewConnectionError|Name or service not "
    r"known|Temporary failure in name resolution|Network is unreachable|Max retries exceeded|"
    r"ConnectTimeout|ReadTimeout|Connection refused",
)


def _version_of(python: str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None where it does not run."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def _pyenv_pythons() -> list[str]:
    """pyenv's installed CPython 3.12+ interpreters, oldest first (``pyenv root``/versions/3.1x*)."""
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            done = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and done.stdout.strip():
                roots.append(Path(done.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    roots.append(Path.home() / ".pyenv")
    found: list[tuple[tuple[int, ...], str]] = []
    for root in dict.fromkeys(roots):
        for python in (root / "versions").glob("3.1[2-9]*/bin/python"):
            match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", python.parent.parent.name)
            if match and str(python) not in (p for _, p in found):
                found.append((tuple(int(g or 0) for g in match.groups()), str(python)))
    return [python for _, python in sorted(found)]


def _has_deepx(python: str) -> bool:
    done = subprocess.run([python, "-c", "import deepx_dock.misc"], capture_output=True, timeout=120)
    return done.returncode == 0


def find_base_python() -> tuple[str | None, str]:
    """(interpreter, "") for the first Python in [MIN_VERSION, MAX_VERSION], or (None, why none)."""
    tried = []
    env = os.environ.get(ENV_VAR)
    candidates = ([env] if env else []) + _pyenv_pythons()
    for python in candidates:
        version = _version_of(python)
        if version is not None and MIN_VERSION <= version <= MAX_VERSION:
            return python, ""
        tried.append(f"{python} ({'does not run' if version is None else '{}.{}'.format(*version)})")
    reason = f"${ENV_VAR}={env} is not a runnable Python 3.12-3.14" if env else f"${ENV_VAR} is unset"
    return None, (
        f"DeepH-dock needs Python >= 3.12 and none was found: {reason}, and pyenv has no 3.12-3.14 "
        f"({', '.join(tried) or 'no pyenv versions'}). Install one (pyenv install 3.12) or set "
        f"{ENV_VAR} to it."
    )


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hamflow"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _build_venv(base: str, final: Path) -> None:
    """Build the venv in a temporary folder beside ``final``, check it, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.building-*"):  # left by a killed install
        if time.time() - stale.stat().st_mtime > 2 * INSTALL_TIMEOUT_S:
            shutil.rmtree(stale, ignore_errors=True)
    build = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    build.chmod(0o755)
    try:
        steps = [
            [base, "-m", "venv", str(build)],
            [
                str(_venv_python(build)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *DEEPX_DEPS,
            ],
            [
                str(_venv_python(build)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                f"deepx-dock=={DEEPX_DOCK_VERSION}",
            ],
            [str(_venv_python(build)), "-c", "import deepx_dock.compute.eigen.hamiltonian"],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.skip(f"installing DeepH-dock timed out after {INSTALL_TIMEOUT_S} s: {' '.join(step)}")
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip()[-1500:]
                command = " ".join(step)
                message = f"installing DeepH-dock {DEEPX_DOCK_VERSION} for {base} failed: {command}\n{tail}"
                if NO_NETWORK.search(tail):
                    pytest.skip(f"no package index reachable; {message}")
                pytest.fail(message)
        (build / READY_MARK).write_text(f"deepx-dock {DEEPX_DOCK_VERSION}\n", encoding="utf-8")
        try:
            build.rename(final)
        except OSError:
            if not (final / READY_MARK).is_file():  # another process won the race if it is there
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)


def deepx_python() -> str:
    """An interpreter that imports DeepH-dock: this one or ``$HAMFLOW_DEEPX_PYTHON`` if it has it, else
    the cached venv (built on first use); skips saying why where there is no Python >= 3.12 or no index."""
    if sys.version_info[:2] >= MIN_VERSION and importlib.util.find_spec("deepx_dock") is not None:
        return sys.executable
    base, why = find_base_python()
    if base is None:
        pytest.skip(why)
    if base == os.environ.get(ENV_VAR) and _has_deepx(base):
        return base
    major, minor = _version_of(base)
    final = cache_root() / f"deepx-venv-py{major}.{minor}-deepx-dock-{DEEPX_DOCK_VERSION}"
    if (final / READY_MARK).is_file() and _has_deepx(str(_venv_python(final))):
        return str(_venv_python(final))
    if final.exists():  # marked but broken (its base Python removed?): rebuild
        shutil.rmtree(final)
    _build_venv(base, final)
    return str(_venv_python(final))


def run_deepx(python: str, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` (``python -c``) in the DeepH-dock interpreter ``python``; assert it succeeded."""
    done = subprocess.run(
        [python, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, f"DeepH-dock script failed in {python}:\n{done.stderr}"
    return done
