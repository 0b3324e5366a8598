"""``[data.dft] validation_check = true`` (DeepH-pack's newer template): every structure folder is
validated before the graph stage, as ``hamflow validate`` does, and on_bad_structure applies."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from hamflow.config.train_config import load_train_config, with_overrides
from hamflow.errors import DataError
from hamflow.graph.stage import build_graph_store
from hamflow.graph.store import GraphStore

REPO = Path(__file__).resolve().parents[2]


def inputs_with_one_bad(root: Path) -> Path:
    source = REPO / "data" / "demo" / "molecules" / "dft" / "h2o"
    for sid in sorted(p.name for p in source.iterdir())[:3]:
        shutil.copytree(source / sid, root / "dft" / sid)
    (root / "dft" / sorted(p.name for p in source.iterdir())[1] / "hamiltonian.h5").unlink()
    return root


def config(inputs: Path, outputs: Path, **extra):
    values = {
        "data.inputs_dir": str(inputs),
        "data.outputs_dir": str(outputs),
        "data.dft.data_dir_depth": 0,
        "data.graph.parallel_num": 1,
        "data.dft.validation_check": True,
    }
    return with_overrides(load_train_config(REPO / "config" / "train.toml"), values | extra)


def test_validation_runs_first_and_skip_leaves_the_bad_structure_out(tmp_path, caplog):
    inputs = inputs_with_one_bad(tmp_path / "in")
    cfg = config(inputs, tmp_path / "out", **{"data.dft.on_bad_structure": "skip"})
    with caplog.at_level(logging.INFO, logger="hamflow"):
        path = build_graph_store(cfg)
    assert "validation_check: validated 3 structures (2 ok, 1 bad)" in caplog.text
    assert len(GraphStore.open(path).ids) == 2


def test_validation_check_fails_on_a_bad_structure_by_default(tmp_path):
    inputs = inputs_with_one_bad(tmp_path / "in")
    with pytest.raises(DataError, match="hamiltonian.h5"):
        build_graph_store(config(inputs, tmp_path / "out"))
