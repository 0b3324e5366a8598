"""Shared fixtures: the DeepH-dock example data in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

# One BLAS thread per process: the 2-core CI machine runs JAX and joblib workers beside numpy, and a
# small eigh slows ~100x when OpenBLAS threads oversubscribe it. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests compile many small XLA programs and run each a few steps: trade run speed for compile speed
# (about 3x faster compiles, 2x slower steps on the CPU). Subprocesses inherit it. Never for real runs.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "data" / "demo"
CLUSTER_TESTS = "tests/cluster/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` with every file of tests/cluster/ in one scope: the cluster tests run one
    after another on one worker (one SLURM cluster per machine), instead of one worker waiting on
    the cluster lock (tests/cluster/conftest.py) while the other holds it."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ClusterFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return CLUSTER_TESTS if scope.startswith(CLUSTER_TESTS) else scope

    return ClusterFilesTogether(config, log)


def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout (or ``$HAMFLOW_SHARED_DIR``)."""
    override = os.environ.get("HAMFLOW_SHARED_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def deeph_dock() -> Path:
    """Root of the DeepH-dock example data (real files written by another tool)."""
    path = shared_dir() / "data" / "deeph-dock"
    if not path.is_dir():
        pytest.skip(
            f"DeepH-dock example data not found at {path}: it lives in ../shared beside the checkout "
            "(present in CI; absent in a fresh user clone). Set HAMFLOW_SHARED_DIR to point elsewhere."
        )
    return path


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The bundled demo dataset (real PySCF DFT), committed under data/demo/."""
    if not (DEMO_DIR / "molecules").is_dir():
        pytest.skip(f"demo dataset not generated yet at {DEMO_DIR} (run scripts/make_demo_dataset.py)")
    return DEMO_DIR


@pytest.fixture(scope="session")
def deepx_run():
    """``run(script, *args)``: ``python -c script`` in a Python >= 3.12 that imports DeepH-dock (the
    cached venv of tests/deepx_venv.py, built on first use); skips saying why where none can be had."""
    import functools

    from deepx_venv import deepx_python, run_deepx

    return functools.partial(run_deepx, deepx_python())
