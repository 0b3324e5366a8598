"""Graph-store faults (issue 16): altered content, a killed build's temporary file, signals during a
build, workers left behind, OS errors. Every one is one line, or a rebuild, never a silent reuse."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from hamflow.cli import main
from hamflow.config.train_config import parse_train_config
from hamflow.errors import DataError, FileSystemError
from hamflow.graph import stage
from hamflow.graph.stage import GraphBuildInterrupted, build_graph_store
from hamflow.graph.store import GraphStore

DEMO_H2O = Path(__file__).resolve().parents[2] / "data" / "demo" / "molecules" / "dft" / "h2o"


@pytest.fixture
def inputs(tmp_path: Path, demo_dir: Path) -> Path:
    """4 demo H2O structures under tmp/inputs/dft (data_dir_depth 0); ``demo_dir`` (tests/conftest.py)
    skips, naming the generator, only in a checkout without the committed demo data."""
    root = tmp_path / "inputs"
    for sid in sorted(p.name for p in DEMO_H2O.iterdir())[:4]:
        shutil.copytree(DEMO_H2O / sid, root / "dft" / sid)
    return root


def _config(inputs: Path, **graph: object):
    graph = {"graph_type": "HS", "parallel_num": 1, **graph}
    return parse_train_config(
        {
            "data": {"inputs_dir": str(inputs), "outputs_dir": str(inputs / "out"), "graph": graph},
            "model": {"advanced": {"net_irreps": ""}},
        }
    )


def _alter(path: Path, index: int) -> str:
    """Add 1 eV to one label entry of structure ``index``; return its id."""
    with h5py.File(path, "r+") as handle:
        start = int(handle["graphs/edge_offsets"][index])
        labels = handle["edges/labels"]
        labels[start] = labels[start] + np.float32(1.0)
        return handle["ids"][index].decode()


def test_an_altered_store_is_refused_on_read(inputs: Path) -> None:
    path = build_graph_store(_config(inputs), progress=False)
    sid = _alter(path, 2)
    with GraphStore.open(path) as store:
        store.get(0)
        with pytest.raises(DataError, match=rf"^structure {sid}: .*: content differs from the digest"):
            store.get(2)
        assert store.altered() == [sid]


def test_an_altered_store_is_rebuilt_not_reused(inputs: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config(inputs)
    path = build_graph_store(cfg, progress=False)
    sid = _alter(path, 1)
    with caplog.at_level(logging.INFO, logger="hamflow"):
        assert build_graph_store(cfg, progress=False) == path
    assert f"structure {sid} differs from the content digest written at build time" in caplog.text
    assert "up to date" not in caplog.text
    with GraphStore.open(path) as store:
        assert store.altered() == []


def test_a_killed_builds_temporary_file_is_removed(inputs: Path) -> None:
    cfg = _config(inputs)
    (inputs / "graph").mkdir()
    stale = inputs / "graph" / ".DATASET-DEMO.HS.memory.h5.k1ll3d.h5.tmp"
    stale.write_bytes(b"\0" * 1024)
    path = build_graph_store(cfg, progress=False)
    assert not stale.exists() and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [".DATASET-DEMO.HS.memory.h5.lock", path.name]


def _loky_workers() -> list[int]:
    """PIDs of this process's joblib (loky) worker processes."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that ended while we listed them (JAX's, the test runner's)
            continue
        for pid in children:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"popen_loky" in cmdline:
                pids.append(int(pid))
    return pids


def test_workers_are_stopped_when_the_build_ends(inputs: Path) -> None:
    build_graph_store(_config(inputs, parallel_num=2), progress=False)
    assert _loky_workers() == []


def test_sigterm_during_a_build_is_one_line_and_leaves_nothing(
    inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stage.build_graphs

    def killed(*args: object, **kwargs: object):
        for number, graph in enumerate(real(*args, **kwargs)):
            if number == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield graph

    monkeypatch.setattr(stage, "build_graphs", killed)
    with pytest.raises(
        GraphBuildInterrupted, match=r"^SIGTERM received while building graph store"
    ) as caught:
        build_graph_store(_config(inputs), progress=False)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert [p.name for p in (inputs / "graph").iterdir()] == [".DATASET-DEMO.HS.memory.h5.lock"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_graph_folder_that_cannot_be_created_is_one_line(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (inputs / "graph").write_text("a file where the graph folder belongs")
    toml = tmp_path / "train.toml"
    toml.write_text(
        f'[data]\ninputs_dir = "{inputs}"\noutputs_dir = "{tmp_path / "out"}"\n'
        '[data.graph]\nparallel_num = 1\n[model.advanced]\nnet_irreps = ""\n'
    )
    assert main(["graph", str(toml)]) == 1
    assert capsys.readouterr().err == (
        f"hamflow: error: cannot create the graph folder {inputs / 'graph'}: File exists\n"
    )


def test_a_full_disk_names_the_store(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stage, "write_store", full)
    with pytest.raises(FileSystemError, match=r"^cannot write the graph store .*HS.memory.h5: No space left"):
        build_graph_store(_config(inputs), progress=False)
