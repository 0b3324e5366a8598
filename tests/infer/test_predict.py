"""Prediction mechanics with a stand-in network: batching, normaliser, unpadding, Hermitian blocks."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hamflow.data.matrix_h5 import BlockMatrix, read_matrix_h5
from hamflow.data.structure import load_structure
from hamflow.errors import DataError
from hamflow.graph.basis import union_basis
from hamflow.graph.structure_graph import StructureGraph, build_structure_graph
from hamflow.infer.predict import (
    graph_prediction,
    make_predict_fn,
    output_dtype,
    predict_graphs,
    symmetrize_hermitian,
    write_prediction,
)
from hamflow.train.normaliser import MAX_Z, Normaliser


class ListSource:
    """Graphs held in a list, with the GraphStore interface prediction reads."""

    def __init__(self, graphs: list[StructureGraph]) -> None:
        self.graphs = graphs

    @property
    def num_nodes(self) -> np.ndarray:
        return np.array([g.num_nodes for g in self.graphs])

    @property
    def num_edges(self) -> np.ndarray:
        return np.array([g.num_edges for g in self.graphs])

    def __len__(self) -> int:
        return len(self.graphs)

    def get(self, index: int) -> StructureGraph:
        return self.graphs[index]


def _normaliser(size: int, *, scale: float = 1.0, offset: float = 0.0) -> Normaliser:
    return Normaliser(
        species_of_z=np.zeros(MAX_Z, dtype=np.int32),
        onsite_scale=np.full((1, size, size), scale, dtype=np.float32),
        offsite_scale=np.full((1, 1, size, size), scale, dtype=np.float32),
        onsite_offset=(offset * np.eye(size, dtype=np.float32))[None],
    )


def _labels_network(params, batch):
    """Stand-in network: 'predicts' the DFT labels the graph carries, times params['k']."""
    return jnp.asarray(batch.labels) * params["k"]


@pytest.fixture(scope="module")
def h2o_graphs(deeph_dock: Path):
    folders = sorted((deeph_dock / "h2o" / "dft").iterdir())
    structures = [load_structure(folder) for folder in folders]
    orbital_map = structures[0].info.elements_orbital_map
    basis = union_basis(orbital_map)
    graphs = [build_structure_graph(s, basis, graph_type="H", dtype=np.float32) for s in structures]
    return structures, graphs, basis, orbital_map


def test_predicted_blocks_round_trip_to_the_dft_file(h2o_graphs) -> None:
    structures, graphs, basis, orbital_map = h2o_graphs
    predict_fn = make_predict_fn(
        _labels_network, _normaliser(basis.size), spinful=False, out_dtype=jnp.float32
    )
    seen = []
    for graph, blocks in predict_graphs(
        ListSource(graphs), predict_fn, {"k": 1.0}, batch_size=4, multi_way_jit_num=2
    ):
        assert blocks.shape == (graph.num_edges, basis.size, basis.size)
        matrix = graph_prediction(graph, blocks, basis, orbital_map)
        reference = next(s for s in structures if s.sid == graph.sid).matrices["H"]
        np.testing.assert_array_equal(matrix.atom_pairs, reference.atom_pairs)
        np.testing.assert_array_equal(matrix.chunk_shapes, reference.chunk_shapes)
        scale = np.abs(reference.entries).max()
        np.testing.assert_allclose(matrix.entries, reference.entries, atol=2e-7 * scale)
        seen.append(graph.sid)
    assert sorted(seen) == sorted(s.sid for s in structures)


def test_normaliser_scale_and_offset_apply(h2o_graphs) -> None:
    _, graphs, basis, _ = h2o_graphs
    graph = graphs[0]
    predict_fn = make_predict_fn(
        _labels_network, _normaliser(basis.size, scale=2.0, offset=3.0), spinful=False, out_dtype=jnp.float32
    )
    (_, blocks), *_ = predict_graphs(ListSource([graph]), predict_fn, {"k": 1.0})
    onsite = graph.edge_onsite
    expected = 2.0 * graph.labels + 3.0 * np.eye(basis.size)[None] * onsite[:, None, None]
    expected = np.where(graph.label_mask, expected, 0.0)
    np.testing.assert_allclose(blocks, expected, rtol=1e-6, atol=1e-5)


def test_asymmetric_prediction_is_made_hermitian(h2o_graphs) -> None:
    _, graphs, basis, orbital_map = h2o_graphs
    graph = graphs[1]

    def lopsided(params, batch):
        # a non-Hermitian 'network': labels plus a term that differs between (R,i,j) and (-R,j,i)
        tilt = jnp.asarray(batch.edge_vec)[:, 0][:, None, None] * jnp.arange(basis.size)[None, :, None]
        return jnp.asarray(batch.labels) + params["k"] * tilt

    predict_fn = make_predict_fn(lopsided, _normaliser(basis.size), spinful=False, out_dtype=jnp.float32)
    (_, blocks), *_ = predict_graphs(ListSource([graph]), predict_fn, {"k": 0.01})
    raw = graph_prediction(graph, blocks, basis, orbital_map, symmetrize=False)
    matrix = graph_prediction(graph, blocks, basis, orbital_map)
    index = matrix.pair_index()
    asymmetry_before = 0.0
    for n, pair in enumerate(matrix.atom_pairs):
        r1, r2, r3, i, j = (int(v) for v in pair)
        mirror = index[(-r1, -r2, -r3, j, i)]
        np.testing.assert_array_equal(matrix.block(n), matrix.block(mirror).T)
        np.testing.assert_allclose(matrix.block(n), 0.5 * (raw.block(n) + raw.block(mirror).T), rtol=1e-6)
        asymmetry_before = max(asymmetry_before, float(np.abs(raw.block(n) - raw.block(mirror).T).max()))
    assert asymmetry_before > 1e-3  # the stand-in really was not Hermitian


def test_symmetrize_spinful_uses_the_conjugate_transpose_and_adds_missing_mirrors() -> None:
    rng = np.random.default_rng(0)
    pairs = [[0, 0, 0, 0, 0], [1, 0, 0, 0, 1], [-1, 0, 0, 1, 0], [0, 1, 0, 0, 1]]
    shapes = [(4, 4), (4, 2), (2, 4), (4, 2)]
    blocks = [rng.normal(size=s) + 1j * rng.normal(size=s) for s in shapes]
    result = symmetrize_hermitian(BlockMatrix.from_blocks(pairs, blocks))
    assert result.num_pairs == 5
    assert result.atom_pairs[-1].tolist() == [0, -1, 0, 1, 0]
    np.testing.assert_allclose(result.block(4), blocks[3].conj().T)
    np.testing.assert_allclose(result.block(0), 0.5 * (blocks[0] + blocks[0].conj().T))
    np.testing.assert_allclose(result.block(1), result.block(2).conj().T)
    np.testing.assert_allclose(result.block(1), 0.5 * (blocks[1] + blocks[2].conj().T))
    bad = BlockMatrix.from_blocks([[1, 0, 0, 0, 1], [-1, 0, 0, 1, 0]], [np.zeros((4, 2)), np.zeros((4, 2))])
    with pytest.raises(DataError, match=r"mirror \(4, 2\)"):
        symmetrize_hermitian(bad)


def test_prediction_files_use_the_float_type(tmp_path: Path) -> None:
    assert output_dtype("fp32", False) == np.float32
    assert output_dtype("bf16", True) == np.complex64
    assert output_dtype("fp64", False) == np.float64
    assert output_dtype("fp64", True) == np.complex128
    matrix = BlockMatrix.from_blocks([[0, 0, 0, 0, 0]], [np.arange(4.0).reshape(2, 2)])
    write_prediction(tmp_path / "a" / "hamiltonian_pred.h5", matrix, output_dtype("fp32", False))
    back = read_matrix_h5(tmp_path / "a" / "hamiltonian_pred.h5")
    assert back.entries.dtype == np.float32
    np.testing.assert_array_equal(back.entries, [0, 1, 2, 3])
