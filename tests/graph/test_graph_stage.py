"""The graph stage from a TrainConfig: build, reuse, rebuild, validation policy, workers, shards, CLI."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from graph_synthetic import synthetic_structure, write_structure

from hamflow.cli import main
from hamflow.config.train_config import parse_train_config
from hamflow.data.validate import validate_tree
from hamflow.errors import ConfigError, DataError
from hamflow.graph.stage import build_graph_store, resolve_parallel_num
from hamflow.graph.store import GraphStore, read_store_meta


def _config(inputs_dir: Path, **graph):
    data = {
        "data": {"inputs_dir": str(inputs_dir), "outputs_dir": str(inputs_dir / "out"), "graph": graph},
        "model": {"advanced": {"net_irreps": ""}},
    }
    if graph.get("graph_type") == "Rho":
        data["model"]["target_type"] = "Rho"
    return parse_train_config(data)


@pytest.fixture
def h2o_inputs(deeph_dock, tmp_path) -> Path:
    """A writable copy of the H2O structures (H, S, density matrix) under tmp/inputs/dft."""
    inputs = tmp_path / "inputs"
    shutil.copytree(deeph_dock / "h2o" / "dft", inputs / "dft")
    for folder, _, files in os.walk(inputs):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)
    return inputs


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, node: out.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None
        )
        out.update({f"@{key}": value for key, value in handle.attrs.items()})
    return out


def _assert_same_file_content(a: Path, b: Path) -> None:
    x, y = _datasets(a), _datasets(b)
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_parallel_num_1_and_2_give_identical_stores(h2o_inputs, tmp_path):
    stores = []
    for workers in (1, 2):
        cfg = _config(h2o_inputs, graph_type="HS", storage_type="disk", parallel_num=workers)
        stores.append(build_graph_store(cfg, out=tmp_path / f"p{workers}.h5", progress=False))
    _assert_same_file_content(*stores)
    with GraphStore.open(stores[0]) as store:
        assert store.ids == sorted(store.ids) and len(store.ids) == 6


def test_store_is_reused_when_current_and_rebuilt_when_stale(h2o_inputs, caplog):
    cfg = _config(h2o_inputs, graph_type="Rho", parallel_num=1)
    path = build_graph_store(cfg, progress=False)
    assert path == h2o_inputs / "graph" / "DATASET-DEMO.Rho.memory.h5"
    first = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="hamflow"):
        assert build_graph_store(cfg, progress=False) == path
    assert path.stat().st_mtime_ns == first and "up to date" in caplog.text

    caplog.clear()
    touched = h2o_inputs / "dft" / "138" / "density_matrix.h5"
    os.utime(touched, ns=(first + 10**9, first + 10**9))
    with caplog.at_level(logging.INFO, logger="hamflow"):
        build_graph_store(cfg, progress=False)
    assert "inputs changed: 0 structures added, 0 removed, 1 modified" in caplog.text

    caplog.clear()
    bigger = _config(h2o_inputs, graph_type="Rho", parallel_num=1, common_orbital_types="s3p2d1")
    with caplog.at_level(logging.INFO, logger="hamflow"):
        build_graph_store(bigger, progress=False)
    assert "settings changed: basis 's2p2d1' -> 's3p2d1'" in caplog.text
    assert read_store_meta(path).basis.to_string() == "s3p2d1"

    caplog.clear()
    shutil.copytree(h2o_inputs / "dft" / "138", h2o_inputs / "dft" / "9999")
    with caplog.at_level(logging.INFO, logger="hamflow"):
        build_graph_store(bigger, progress=False)
    assert "1 structures added" in caplog.text
    assert "9999" in read_store_meta(path).ids


def test_bad_structures_fail_or_are_skipped(h2o_inputs, caplog):
    (h2o_inputs / "dft" / "282" / "overlap.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"structure 282: .*overlap.h5"):
        build_graph_store(_config(h2o_inputs, graph_type="HS", parallel_num=1), progress=False)
    assert not (h2o_inputs / "graph" / "DATASET-DEMO.HS.memory.h5").exists()
    cfg = parse_train_config(
        {
            "data": {
                "inputs_dir": str(h2o_inputs),
                "outputs_dir": str(h2o_inputs / "out"),
                "dft": {"on_bad_structure": "skip"},
                "graph": {"graph_type": "HS", "parallel_num": 1},
            },
            "model": {"advanced": {"net_irreps": ""}},
        }
    )
    with caplog.at_level(logging.WARNING, logger="hamflow"):
        path = build_graph_store(cfg, progress=False)
    meta = read_store_meta(path)
    assert "282" not in meta.ids and meta.excluded_ids == ["282"] and len(meta.ids) == 5
    assert "282" in caplog.text
    with caplog.at_level(logging.INFO, logger="hamflow"):
        assert build_graph_store(cfg, progress=False) == path
    assert "up to date" in caplog.text  # validation outcome is covered by the fingerprint


def test_reports_replace_validation(h2o_inputs, tmp_path):
    report = validate_tree(h2o_inputs, depth=0, ids=["138", "282", "1009"])
    cfg = _config(h2o_inputs, graph_type="HS", parallel_num=1)
    path = build_graph_store(cfg, reports=[report], out=tmp_path / "r.h5", progress=False)
    assert read_store_meta(path).ids == ["1009", "138", "282"]
    with pytest.raises(DataError, match=r"structure 1978: 1 structure\(s\) are in no validation report"):
        build_graph_store(cfg, ids=["138", "1978"], reports=[report], out=tmp_path / "x.h5", progress=False)


def test_spinful_dataset_at_depth_two(tmp_path):
    inputs = tmp_path / "inputs"
    for k, sid in enumerate(["a/x/1", "a/y/2", "b/x/3"]):
        structure = synthetic_structure(sid, spinful=True, periodic=k == 0, seed=k)
        write_structure(inputs / "dft" / sid, structure)
    cfg = parse_train_config(
        {
            "data": {
                "inputs_dir": str(inputs),
                "outputs_dir": str(tmp_path / "out"),
                "dft": {"data_dir_depth": 2},
                "graph": {"graph_type": "HS", "parallel_num": 1, "storage_type": "disk"},
            },
            "model": {"advanced": {"net_irreps": ""}},
            "system": {"float_type": "fp64"},
        }
    )
    with GraphStore.open(build_graph_store(cfg, progress=False)) as store:
        assert store.ids == ["a/x/1", "a/y/2", "b/x/3"]
        assert store.meta.spinful and store.meta.dtype == "float64"
        graph = store.get(1)
        assert graph.labels.dtype == np.complex128 and graph.labels.shape[1] == 2 * store.meta.basis.size


def test_uncovered_requested_basis_names_the_toml(h2o_inputs):
    cfg = _config(h2o_inputs, common_orbital_types="s1p1")
    with pytest.raises(ConfigError, match=r"data\.graph\.common_orbital_types.*element H"):
        build_graph_store(cfg, progress=False)


def test_parallel_num_resolution():
    cores = len(os.sched_getaffinity(0))
    assert resolve_parallel_num(1) == 1
    assert resolve_parallel_num(-1) == cores == resolve_parallel_num(0) == resolve_parallel_num(cores + 50)


def _write_toml(tmp_path: Path, inputs: Path, graph_type: str = "HS", storage_type: str = "disk") -> Path:
    toml = tmp_path / "train.toml"
    toml.write_text(
        f'[data]\ninputs_dir = "{inputs}"\noutputs_dir = "{tmp_path / "out"}"\n'
        f'[data.graph]\ngraph_type = "{graph_type}"\nstorage_type = "{storage_type}"\nparallel_num = 1\n'
        '[model.advanced]\nnet_irreps = ""\n'
    )
    return toml


def test_cli_whole_shards_and_join(h2o_inputs, tmp_path, capsys):
    toml = _write_toml(tmp_path, h2o_inputs)
    assert main(["graph", str(toml)]) == 0
    whole = Path(capsys.readouterr().out.strip())
    assert whole == h2o_inputs / "graph" / "DATASET-DEMO.HS.disk.h5"
    shards = []
    for k in range(3):
        out = tmp_path / f"shard{k}.h5"
        assert main(["graph", str(toml), "--shard", f"{k}/3", "--out", str(out)]) == 0
        shards.append(out)
    capsys.readouterr()
    joined = tmp_path / "joined.h5"
    assert main(["graph", str(toml), "--join", *map(str, shards), "--out", str(joined)]) == 0
    assert capsys.readouterr().out.strip() == str(joined)
    _assert_same_file_content(whole, joined)


def test_cli_reports_and_manifest(h2o_inputs, tmp_path, capsys):
    toml = _write_toml(tmp_path, h2o_inputs, storage_type="memory")
    report = tmp_path / "report.json"
    assert main(["validate", str(h2o_inputs), "--report", str(report)]) == 0
    manifest = tmp_path / "discover" / "manifest.json"
    assert main(["discover", "--inputs-dir", str(h2o_inputs), "--out", str(manifest.parent)]) == 0
    capsys.readouterr()
    out = tmp_path / "r.h5"
    assert (
        main(["graph", str(toml), "--ids-from", str(manifest), "--reports", str(report), "--out", str(out)])
        == 0
    )
    assert read_store_meta(out).ids == sorted(p.name for p in (h2o_inputs / "dft").iterdir())


def test_cli_errors_are_one_line(h2o_inputs, tmp_path, capsys):
    toml = _write_toml(tmp_path, h2o_inputs)
    assert main(["graph", str(toml), "--set", "data.graph.common_orbital_types=s1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hamflow: error: ") and "train.toml" in err[0]
    (tmp_path / "bogus.h5").write_bytes(b"x")
    assert main(["graph", str(toml), "--join", str(tmp_path / "bogus.h5")]) == 1
    assert "bogus.h5: cannot open as HDF5" in capsys.readouterr().err


def test_a_worker_error_reaches_the_caller_as_one_line(deeph_dock):
    from hamflow.graph.basis import common_basis
    from hamflow.graph.stage import build_graphs

    basis = common_basis({"O": [0, 0, 1, 1, 2], "H": [0, 0, 1]})
    ids = ["138", "missing", "282"] * 4
    with pytest.raises(DataError, match="structure missing: .*structure folder not found"):
        list(build_graphs(deeph_dock / "h2o", ids, basis, graph_type="HS", workers=2, progress=False))
