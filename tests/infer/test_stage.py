"""`hamflow infer` mechanics with a tiny stand-in network saved as a real run directory.

The stand-in (one weight tensor over the edge vectors) replaces ``build_network`` so that these tests
exercise everything around the network in seconds: discovery, graphs from overlap.h5 pairs and from
the neighbour search, the store, checkpoint loading, batching, Hermitian output, placement.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hamflow.train.saved_model as saved_model
from hamflow.cli import main
from hamflow.config.infer_config import parse_infer_config
from hamflow.data.info import read_info
from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.errors import DataError
from hamflow.graph.basis import union_basis
from hamflow.infer.predict import example_batch
from hamflow.infer.stage import run_inference
from hamflow.train import checkpoint as ckpt
from hamflow.train.normaliser import MAX_Z, Normaliser
from hamflow.train.saved_model import ModelSpec


class TinyNet(nn.Module):
    """Blocks linear in the edge vector: enough to be non-trivial and non-Hermitian."""

    size: int

    @nn.compact
    def __call__(self, batch):
        weight = self.param("w", nn.initializers.normal(1.0), (3, self.size, self.size))
        blocks = jnp.einsum("ex,xab->eab", jnp.asarray(batch.edge_vec), weight)
        return jnp.where(jnp.asarray(batch.edge_mask)[:, None, None], blocks, 0.0)


def _tiny_network(spec: ModelSpec, compute_dtype) -> nn.Module:
    return TinyNet(size=sum(2 * l + 1 for l in spec.shell_ls))


@pytest.fixture
def tiny_network(monkeypatch):
    monkeypatch.setattr(saved_model, "build_network", _tiny_network)


@pytest.fixture
def restore_x64():
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def inputs(deeph_dock: Path, tmp_path: Path) -> Path:
    """dft/138: POSCAR + info.json + overlap.h5; dft/282: full DFT folder; dft/bare: POSCAR + info.json."""
    source = deeph_dock / "h2o" / "dft"
    root = tmp_path / "inputs"
    for name in ("POSCAR", "info.json", "overlap.h5"):
        (root / "dft" / "138").mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "138" / name, root / "dft" / "138" / name)
    shutil.copytree(source / "282", root / "dft" / "282")
    for name in ("POSCAR", "info.json"):
        (root / "dft" / "bare").mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "1009" / name, root / "dft" / "bare" / name)
    return root


@pytest.fixture
def run_dir(inputs: Path, tmp_path: Path) -> Path:
    """A run directory holding the stand-in's model.json, normaliser and best/latest parameters."""
    info = read_info(inputs / "dft" / "138" / "info.json")
    basis = union_basis(info.elements_orbital_map)
    spec = ModelSpec(
        net_type="sparrow",
        shell_ls=basis.shell_ls,
        net_irreps="4x0e",
        num_blocks=1,
        gaussian_basis_rmax=5.0,
        consider_parity=False,
        spinful=False,
        target_type="H",
        elements_orbital_map=dict(info.elements_orbital_map),
        float_type="fp32",
    )
    layout = ckpt.RunLayout(tmp_path / "run")
    layout.model.mkdir(parents=True)
    spec.save(layout.model_json)
    size = basis.size
    Normaliser(
        species_of_z=np.zeros(MAX_Z, dtype=np.int32),
        onsite_scale=np.full((1, size, size), 0.5, dtype=np.float32),
        offsite_scale=np.full((1, 1, size, size), 0.1, dtype=np.float32),
        onsite_offset=(-2.0 * np.eye(size, dtype=np.float32))[None],
    ).save(layout.normaliser)
    from hamflow.data.structure import load_structure
    from hamflow.graph.structure_graph import build_structure_graph

    graph = build_structure_graph(
        load_structure(inputs / "dft" / "138", quantities=("S",)), basis, graph_type="S"
    )
    params = TinyNet(size).init(jax.random.PRNGKey(0), example_batch(graph))["params"]
    ckpt.save_best(layout, params, {"epoch": 2})
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, params)
    ckpt.save_latest(layout, 1, params, {"x": np.zeros(1)}, {"epoch": 1}, keep=3)
    ckpt.save_latest(layout, 2, doubled, {"x": np.zeros(1)}, {"epoch": 2}, keep=3)
    return layout.root


def _config(inputs: Path, run_dir: Path, tmp_path: Path, **changes) -> object:
    data = {
        "system": {"device": "cpu*1", "float_type": "fp32", "log_level": "warning"},
        "data": {
            "inputs_dir": str(inputs),
            "outputs_dir": str(tmp_path / "outputs"),
            "graph": {"graph_type": "S", "parallel_num": 1},
        },
        "model": {"model_dir": str(run_dir / "model")},
        "process": {"infer": {"dataloader": {"batch_size": 2}}},
    }
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return parse_infer_config(data)


def _assert_hermitian(path: Path) -> None:
    matrix = read_matrix_h5(path)
    index = matrix.pair_index()
    for n, pair in enumerate(matrix.atom_pairs):
        r1, r2, r3, i, j = (int(v) for v in pair)
        np.testing.assert_array_equal(matrix.block(n), matrix.block(index[(-r1, -r2, -r3, j, i)]).T)


def test_infer_writes_hermitian_predictions_for_every_kind_of_structure(
    inputs, run_dir, tmp_path, tiny_network, restore_x64
) -> None:
    cfg = _config(inputs, run_dir, tmp_path)
    result = run_inference(cfg, run_dir=tmp_path / "infer")
    assert result.predicted and sorted(result.predicted) == ["138", "282", "bare"]
    assert result.output_dir == tmp_path / "infer" / "dft"
    assert result.graph_store == inputs / "graph" / "INFER-DEMO.S.memory.h5"
    overlap = read_matrix_h5(inputs / "dft" / "138" / "overlap.h5")
    for sid in result.predicted:
        path = result.output_dir / sid / "hamiltonian_pred.h5"
        matrix = read_matrix_h5(path)
        assert matrix.entries.dtype == np.float32
        _assert_hermitian(path)
        # H2O in a 15 A box: overlap.h5 and the neighbour search (5 A) both give the 9 R = 0 pairs
        assert sorted(map(tuple, matrix.atom_pairs.tolist())) == sorted(
            map(tuple, overlap.atom_pairs.tolist())
        )
    np.testing.assert_array_equal(
        read_matrix_h5(result.output_dir / "138" / "hamiltonian_pred.h5").atom_pairs, overlap.atom_pairs
    )
    record = json.loads((tmp_path / "infer" / "predictions.json").read_text())
    assert record["checkpoint"].endswith("params/best") and record["predicted"] == ["138", "282", "bare"]
    assert (tmp_path / "infer" / "infer.toml").is_file() and (tmp_path / "infer" / "deepx.log").is_file()

    # the graph store is reused; latest epoch 2 holds doubled weights: the off-site blocks double
    again = run_inference(
        _config(
            inputs, run_dir, tmp_path, **{"model.load_model_type": "latest", "system.float_type": "fp64"}
        ),
        run_dir=tmp_path / "infer2",
    )
    first = read_matrix_h5(result.output_dir / "282" / "hamiltonian_pred.h5")
    second = read_matrix_h5(again.output_dir / "282" / "hamiltonian_pred.h5")
    assert second.entries.dtype == np.float64
    offsite = [n for n, p in enumerate(first.atom_pairs) if p[3] != p[4]]
    for n in offsite:
        np.testing.assert_allclose(second.block(n), 2 * first.block(n), rtol=1e-5, atol=1e-6)


def test_to_input_sap_only_save_graph_and_errors(
    inputs, run_dir, tmp_path, tiny_network, restore_x64
) -> None:
    cfg = _config(
        inputs,
        run_dir,
        tmp_path,
        **{"process.infer.output_into": "to_input", "data.graph.graph_type": "Sap"},
    )
    result = run_inference(cfg, run_dir=tmp_path / "infer", ids=["bare", "138"])
    assert sorted(result.predicted) == ["138", "bare"]
    assert (inputs / "dft" / "bare" / "hamiltonian_pred.h5").is_file()
    assert not (inputs / "dft" / "282" / "hamiltonian_pred.h5").exists()
    assert (inputs / "graph" / "INFER-DEMO.Sap.memory.h5").is_file()

    only = _config(inputs, run_dir, tmp_path, **{"data.graph.only_save_graph": True})
    graph_only = run_inference(only, run_dir=tmp_path / "graph-only")
    assert graph_only.only_graph and not graph_only.predicted and graph_only.graph_store.is_file()

    with pytest.raises(DataError, match="1 requested structure.*first: nope"):
        run_inference(cfg, run_dir=tmp_path / "x", ids=["nope"])
    info = json.loads((inputs / "dft" / "bare" / "info.json").read_text())
    info["elements_orbital_map"]["O"] = [0, 1]
    (inputs / "dft" / "bare" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"structure bare: .*element O has shells \[0, 1\], the model was"):
        run_inference(cfg, run_dir=tmp_path / "y")


def test_an_incomplete_structure_folder_stops_inference_instead_of_being_left_out(
    inputs, run_dir, tmp_path, tiny_network, restore_x64
) -> None:
    cfg = _config(inputs, run_dir, tmp_path)
    (inputs / "dft" / "half").mkdir()
    (inputs / "dft" / "half" / "POSCAR").write_text((inputs / "dft" / "bare" / "POSCAR").read_text())
    left_out = r"1 folder\(s\) .* left out of the prediction.*structure half.*no info.json"
    with pytest.raises(DataError, match=left_out):
        run_inference(cfg, run_dir=tmp_path / "whole")
    assert not (tmp_path / "whole" / "dft").exists()
    # Asking for other structures by id does not trip over it.
    assert run_inference(cfg, run_dir=tmp_path / "some", ids=["bare"]).predicted == ["bare"]


def test_cli_infer_then_evaluate(inputs, run_dir, tmp_path, tiny_network, restore_x64, capsys) -> None:
    toml = tmp_path / "infer.toml"
    toml.write_text(
        '[system]\ndevice = "cpu*1"\nlog_level = "warning"\n'
        f'[data]\ninputs_dir = "{inputs}"\noutputs_dir = "{tmp_path / "outputs"}"\n'
        "[data.graph]\nparallel_num = 1\n"
        '[model]\nmodel_dir = "/nonexistent/model"\n'
    )
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["138"], "validate": [], "test": ["282"]}))
    code = main(
        ["infer", str(toml), "--run-dir", str(tmp_path / "run-infer"), "--split", str(split),
         "--set", f"model.model_dir={run_dir / 'model'}"]
    )  # fmt: skip
    assert code == 0
    assert "1 structure(s) predicted" in capsys.readouterr().out
    code = main(
        [
            "evaluate",
            "--dft",
            str(inputs),
            "--pred",
            str(tmp_path / "run-infer"),
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["structures"] == 1 and metrics["overall"]["entries"] == 529

    code = main(["infer", str(toml)])
    err = capsys.readouterr().err
    assert code == 1 and "not a hamflow run directory" in err and err.count("\n") == 1


def test_cli_test_one_shot_infer_and_evaluate(
    inputs, run_dir, tmp_path, tiny_network, restore_x64, capsys
) -> None:
    """`hamflow test RUN --data DIR`: the run's test part predicted and compared, the data untouched."""
    (run_dir / "dataset_split.json").write_text(
        json.dumps({"train": ["138"], "validate": [], "test": ["282"]})
    )
    out = tmp_path / "test-out"
    code = main(["test", str(run_dir), "--data", str(inputs), "--out", str(out), "--no-bands"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 structure(s) tested (part 'test'" in captured.out
    assert "1 structure(s), 529 entries: MAE" in captured.out and "  H-O " in captured.out
    assert (out / "dft" / "282" / "hamiltonian_pred.h5").is_file()
    assert not (out / "dft" / "138").exists()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["structures"] == 1 and metrics["overall"]["entries"] == 529
    assert not (inputs / "graph").exists()  # the graph store went to a scratch folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".test-out")) == []

    # again into the same folder (replaced), with another split and part
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": [], "other": ["138", "282"]}))
    assert main(["test", str(run_dir), "--data", str(inputs / "dft"), "--out", str(out),
                 "--split", str(split), "--part", "other", "--no-bands"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "2 structure(s) tested" in captured.out and "1 structure(s), 529 entries" in captured.out
    assert "structure 138 not compared: no DFT hamiltonian.h5" in captured.err  # 138: overlap only
    assert (out / "dft" / "138" / "hamiltonian_pred.h5").is_file()

    # one-line errors
    for argv, message in [
        (["test", str(tmp_path / "nope"), "--data", str(inputs)], "[RUN_DIR] = "),
        (["test", str(inputs), "--data", str(inputs)], "not a hamflow run directory"),
        (["test", str(run_dir), "--data", str(tmp_path / "nope")], "[--data] = "),
        (
            ["test", str(run_dir), "--data", str(inputs), "--split", str(split), "--part", "x"],
            "[--part] = 'x'",
        ),
        (["test", str(run_dir), "--data", str(inputs), "--split", str(split)], "holds no structures"),
        (["test", str(run_dir), "--data", str(inputs), "--out", str(inputs)], "no `hamflow test` wrote"),
    ]:
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0 and message in err and err.count("\n") == 1, (argv, err)
