"""One structure -> graph: edges, edge vectors, padding round trip, masks, spinful data, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from graph_synthetic import WATER_MAP, synthetic_structure

from hamflow.data.discover import discover_structures
from hamflow.data.structure import load_structure
from hamflow.errors import DataError
from hamflow.graph.basis import common_basis, element_slots, parse_orbital_types
from hamflow.graph.neighbours import neighbour_edges
from hamflow.graph.structure_graph import build_structure_graph, unpad_block, unpad_edges

WATER_BASIS = common_basis(WATER_MAP)  # s2p2d1, B = 13


def _shells(structure, atom):
    return structure.info.elements_orbital_map[structure.poscar.elements[atom]]


@pytest.mark.parametrize("spinful", [False, True])
@pytest.mark.parametrize("basis_text", ["", "s3p3d2f1"])
def test_padding_round_trips_every_block(spinful, basis_text):
    structure = synthetic_structure(spinful=spinful, periodic=True, tiny_shell=False)
    basis = common_basis(WATER_MAP, basis_text)
    graph = build_structure_graph(structure, basis, graph_type="HS", dtype=np.float64)
    h = structure.matrices["H"]
    assert graph.num_edges == h.num_pairs
    b = basis.size * (2 if spinful else 1)
    assert graph.labels.shape == (h.num_pairs, b, b)
    assert np.iscomplexobj(graph.labels) == spinful
    for e, (*_, i, j) in enumerate(h.atom_pairs):
        block = unpad_block(graph.labels[e], basis, _shells(structure, i), _shells(structure, j))
        np.testing.assert_array_equal(block, h.block(e))
        mask = unpad_block(graph.label_mask[e], basis, _shells(structure, i), _shells(structure, j))
        assert mask.all()
        assert graph.label_mask[e].sum() == mask.size  # nothing outside the atoms' slots
    back = unpad_edges(graph.labels, graph, basis, structure.info.elements_orbital_map)
    np.testing.assert_array_equal(back.atom_pairs, h.atom_pairs)
    np.testing.assert_array_equal(back.chunk_shapes, h.chunk_shapes)
    np.testing.assert_array_equal(back.entries, h.entries)


def test_edge_vectors_and_onsite_pairs():
    structure = synthetic_structure(periodic=True)
    graph = build_structure_graph(structure, WATER_BASIS, graph_type="H", dtype=np.float64)
    pos, lattice = structure.poscar.positions, structure.poscar.lattice
    for e, (r1, r2, r3, i, j) in enumerate(structure.matrices["H"].atom_pairs):
        expected = pos[j] + np.array([r1, r2, r3]) @ lattice - pos[i]
        np.testing.assert_allclose(graph.edge_vec[e], expected, atol=1e-12)
        assert graph.edge_shift[e].tolist() == [r1, r2, r3]
    assert graph.edge_onsite.sum() == structure.poscar.num_atoms
    assert np.all(np.linalg.norm(graph.edge_vec[graph.edge_onsite], axis=1) == 0)
    assert graph.edge_vec.dtype == np.float64
    assert graph.atomic_numbers.tolist() == [8, 1, 1]


@pytest.mark.parametrize("spinful", [False, True])
def test_overlap_threshold_masks_shell_pairs_but_keeps_onsite_blocks(spinful):
    structure = synthetic_structure(spinful=spinful)  # first shell pair of every off-site block: |S| = 1e-13
    graph = build_structure_graph(structure, WATER_BASIS, graph_type="HS")
    b = WATER_BASIS.size
    for e, (*_, i, j) in enumerate(structure.matrices["H"].atom_pairs):
        first_i = element_slots(WATER_BASIS, _shells(structure, i))[0]  # the s shell: one orbital
        first_j = element_slots(WATER_BASIS, _shells(structure, j))[0]
        onsite = i == j
        quadrants = [(0, 0), (0, b), (b, 0), (b, b)] if spinful else [(0, 0)]
        for di, dj in quadrants:
            assert graph.label_mask[e, first_i + di, first_j + dj] == onsite
            assert graph.label_mask[e, first_i + di, first_j + dj + 1] == True  # noqa: E712 (next shell kept)
        assert np.all(graph.labels[e][~graph.label_mask[e]] == 0)
    assert graph.overlap.shape == graph.label_mask.shape
    if spinful:
        np.testing.assert_array_equal(graph.overlap[:, :b, b:], 0)
        np.testing.assert_array_equal(graph.overlap[:, :b, :b], graph.overlap[:, b:, b:])


def test_graph_types_carry_what_they_name():
    structure = synthetic_structure()
    kinds = {
        t: build_structure_graph(structure, WATER_BASIS, graph_type=t) for t in ("H", "S", "HS", "Rho", "Sap")
    }
    assert kinds["H"].overlap is None and kinds["H"].labels is not None
    assert kinds["S"].labels is None and kinds["S"].overlap is not None
    assert kinds["Rho"].overlap is None
    assert kinds["Sap"].labels is None and kinds["Sap"].overlap is None
    rho = structure.matrices["Rho"]
    np.testing.assert_array_equal(
        unpad_edges(kinds["Rho"].labels, kinds["Rho"], WATER_BASIS, WATER_MAP).entries[:5],
        rho.entries[:5].astype(np.float32),
    )
    # Sap: shape-only mask, masked blocks included
    assert kinds["Sap"].label_mask.sum() > kinds["H"].label_mask.sum()
    assert kinds["H"].labels.dtype == np.float32


def test_sap_without_overlap_uses_the_neighbour_search():
    structure = synthetic_structure(periodic=True)
    pairs = {tuple(row) for row in structure.matrices["S"].atom_pairs.tolist()}
    structure.matrices = {}
    graph = build_structure_graph(structure, WATER_BASIS, graph_type="Sap", neighbour_cutoff=4.0)
    assert {tuple(row) for row in graph.atom_pairs.tolist()} == pairs
    with pytest.raises(DataError, match="hamiltonian.h5 is needed"):
        build_structure_graph(structure, WATER_BASIS, graph_type="H")


def test_inconsistent_blocks_and_uncovered_elements_are_data_errors():
    structure = synthetic_structure()
    with pytest.raises(DataError, match="element O has shells .* not covered"):
        build_structure_graph(structure, parse_orbital_types("s2p2"), graph_type="H")
    bad = synthetic_structure(orbital_map={"O": (0, 0, 1, 1), "H": (0, 0, 1)})
    bad.info = structure.info  # the files say d shells on O, the blocks have none
    with pytest.raises(
        DataError, match=r"structure s0: .*overlap.h5: key 'chunk_shapes'.*shape \[5, 8\], expected \[5, 13\]"
    ):
        build_structure_graph(bad, WATER_BASIS, graph_type="H")


def _load_all(root: Path, quantities=("H", "S")):
    return [
        load_structure(root / sid, sid=sid, quantities=quantities) for sid in discover_structures(root, 0)
    ]


def _check_real_graph(structure, graph, basis, label_key):
    matrix = structure.matrices[label_key]
    assert graph.num_edges == matrix.num_pairs
    kept = unpad_edges(graph.label_mask.astype(np.float64), graph, basis, structure.info.elements_orbital_map)
    back = unpad_edges(graph.labels.astype(np.float64), graph, basis, structure.info.elements_orbital_map)
    np.testing.assert_array_equal(back.chunk_shapes, matrix.chunk_shapes)
    np.testing.assert_allclose(
        back.entries[kept.entries == 1], matrix.entries[kept.entries == 1], rtol=1e-6, atol=1e-5
    )
    # the masked-out entries are those of shell pairs without overlap (tiny values only)
    assert np.abs(matrix.entries[kept.entries == 0]).max(initial=0) < 1e-3


def test_graphs_of_the_molecules(deeph_dock):
    structures = _load_all(deeph_dock / "molecules" / "dft")
    orbital_map = {el: ls for s in structures for el, ls in s.info.elements_orbital_map.items()}
    basis = common_basis(orbital_map)
    assert basis.to_string() == "s2p2d1"
    for structure in structures:
        graph = build_structure_graph(structure, basis, graph_type="H")
        _check_real_graph(structure, graph, basis, "H")


@pytest.mark.parametrize("graph_type", ["Rho", "HS"])
def test_graphs_of_h2o(deeph_dock, graph_type):
    structures = _load_all(deeph_dock / "h2o" / "dft", quantities=("H", "S", "Rho"))
    basis = common_basis(structures[0].info.elements_orbital_map)
    for structure in structures:
        graph = build_structure_graph(structure, basis, graph_type=graph_type, dtype=np.float64)
        _check_real_graph(structure, graph, basis, "Rho" if graph_type == "Rho" else "H")
        if graph_type == "HS":
            s_back = unpad_edges(graph.overlap, graph, basis, structure.info.elements_orbital_map)
            np.testing.assert_array_equal(s_back.entries, structure.matrices["S"].entries)


def test_graph_of_periodic_mote2(deeph_dock):
    structure = load_structure(deeph_dock / "periodic" / "dft" / "MoTe2", sid="MoTe2")
    basis = common_basis(structure.info.elements_orbital_map)
    graph = build_structure_graph(structure, basis, graph_type="HS")
    _check_real_graph(structure, graph, basis, "H")
    assert len({tuple(r) for r in graph.edge_shift.tolist()}) == 19
    assert np.linalg.norm(graph.edge_vec, axis=1).max() == pytest.approx(7.138, abs=1e-3)


def test_graphs_of_the_demo_set(demo_dir):
    structures = _load_all(demo_dir / "molecules" / "dft")
    orbital_map = {el: ls for s in structures for el, ls in s.info.elements_orbital_map.items()}
    basis = common_basis(orbital_map)
    for structure in structures:
        graph = build_structure_graph(structure, basis, graph_type="HS")
        _check_real_graph(structure, graph, basis, "H")


@pytest.mark.parametrize("folder", ["periodic/dft/MoTe2", "molecules/dft/1000", "h2o/dft/138"])
def test_neighbour_search_finds_every_pair_of_the_matrix_files(deeph_dock, folder):
    structure = load_structure(deeph_dock / folder, quantities=("S",))
    # 7.5 Angstrom: the neighbour cutoff of the default gaussian_basis_rmax
    src, dst, shift = neighbour_edges(structure.poscar, 7.5)
    found = {(int(i), int(j), *map(int, r)) for i, j, r in zip(src, dst, shift, strict=True)}
    stored = {
        (int(i), int(j), r1, r2, r3) for r1, r2, r3, i, j in structure.matrices["S"].atom_pairs.tolist()
    }
    assert stored <= found
    assert len(found) == len(src)  # no duplicates
    assert {(i, i, 0, 0, 0) for i in range(structure.poscar.num_atoms)} <= found
