"""Fixtures of the training-stage tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_setup import DEMO_MOLECULES, h2o_inputs


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One persistent compilation cache for every training run of the session."""
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="session")
def h2o_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 demo H2O structures (data_dir_depth = 1); the graph store is built once inside."""
    if not (DEMO_MOLECULES / "dft" / "h2o").is_dir():
        pytest.skip("the demo dataset (data/demo/molecules) is missing")
    return h2o_inputs(tmp_path_factory.mktemp("h2o_inputs"))
