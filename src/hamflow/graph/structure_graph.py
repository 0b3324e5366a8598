"""One structure -> one graph: atoms as nodes, the matrix files' atom pairs as edges, padded labels.

Edges are the atom pairs (R, i, j) of the matrix file that defines the graph (hamiltonian.h5 for
H / HS, density_matrix.h5 for Rho, overlap.h5 for S / Sap), in file order, on-site pairs included;
a Sap graph of a structure without overlap.h5 takes its edges from the neighbour search
(:mod:`hamflow.graph.neighbours`). Each block is placed into the common orbital basis
(:mod:`hamflow.graph.basis`): B x B (2B x 2B for spinful H / Rho, spin blocks [[uu, ud], [du, dd]]).

What a graph carries per ``graph_type``:
  H   labels = H (eV)            Rho  labels = density matrix (electrons)
  S   overlap = S                HS   labels = H and overlap = S
  Sap neither: edges and shape mask only (inference on structures with overlap.h5 or POSCAR only)

``label_mask`` is True on the real orbital slots of both atoms, minus the shell-pair sub-blocks whose
largest |S| is below ``overlap_threshold`` (on-site blocks always kept); without overlap values
(orthogonal basis without overlap.h5, Sap, neighbour-search edges) it is the shape mask alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix
from hamflow.data.orbitals import atomic_number, element_symbol
from hamflow.errors import ConfigError, DataError
from hamflow.graph.basis import CommonBasis, element_slots, spin_slots
from hamflow.graph.neighbours import neighbour_edges

GRAPH_TYPES: tuple[str, ...] = ("H", "S", "HS", "Rho", "Sap")

#: The matrix file whose atom pairs are a graph's edges, and the one giving its labels (or None).
EDGE_SOURCE: dict[str, str] = {"H": "H", "HS": "H", "Rho": "Rho", "S": "S", "Sap": "S"}
LABEL_SOURCE: dict[str, str | None] = {"H": "H", "HS": "H", "Rho": "Rho", "S": None, "Sap": None}
CARRIES_OVERLAP: dict[str, bool] = {"H": False, "HS": True, "Rho": False, "S": True, "Sap": False}

DEFAULT_OVERLAP_THRESHOLD = 1e-10


@dataclass
class StructureGraph:
    """One structure as unpadded numpy arrays (E edges, B orbitals of the common basis).

    sid:            structure id.
    atomic_numbers: (n,) int32.
    positions:      (n, 3) float64 Cartesian, Angstrom.
    lattice:        (3, 3) float64, rows are lattice vectors, Angstrom.
    edge_src:       (E,) int32 atom i of the pair (R, i, j).
    edge_dst:       (E,) int32 atom j, in the cell shifted by R.
    edge_shift:     (E, 3) int32 R, in lattice vectors.
    edge_vec:       (E, 3) float r_ij = pos_j + R.lattice - pos_i, Angstrom.
    labels:         (E, B, B) float (eV for H, electrons for Rho), (E, 2B, 2B) complex for spinful
                    data, or None (S, Sap graphs); zeros outside ``label_mask``.
    label_mask:     (E, B, B) or (E, 2B, 2B) bool.
    overlap:        like ``label_mask`` but float (S; spinful: [[S, 0], [0, S]]) or None.
    """

    sid: str
    atomic_numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_shift: np.ndarray
    edge_vec: np.ndarray
    labels: np.ndarray | None
    label_mask: np.ndarray
    overlap: np.ndarray | None

    @property
    def num_nodes(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])

    @property
    def edge_onsite(self) -> np.ndarray:
        """(E,) bool: i == j and R == 0."""
        return (self.edge_src == self.edge_dst) & ~self.edge_shift.any(axis=1)

    @property
    def atom_pairs(self) -> np.ndarray:
        """(E, 5) int64 rows [R1, R2, R3, i, j], as in the matrix files."""
        return np.column_stack([self.edge_shift, self.edge_src, self.edge_dst]).astype(np.int64)


def check_graph_type(graph_type: str) -> str:
    """Return ``graph_type`` if known; ConfigError (key data.graph.graph_type) otherwise."""
    if graph_type not in GRAPH_TYPES:
        raise ConfigError("data.graph.graph_type", f"= {graph_type!r} is not one of {', '.join(GRAPH_TYPES)}")
    return graph_type


def required_quantities(graph_type: str) -> tuple[str, ...]:
    """Matrix files (MATRIX_FILES keys) a structure must carry for this graph type.

    Sap needs none (the neighbour search stands in for a missing overlap.h5); H and Rho need S too
    unless the basis is orthogonal, which is checked per structure.
    """
    return {"H": ("H",), "HS": ("H", "S"), "Rho": ("Rho",), "S": ("S",), "Sap": ()}[
        check_graph_type(graph_type)
    ]


def wanted_quantities(graph_type: str) -> tuple[str, ...]:
    """Matrix files read for this graph type when present (labels, overlap values or the mask)."""
    return {"H": ("H", "S"), "HS": ("H", "S"), "Rho": ("Rho", "S"), "S": ("S",), "Sap": ("S",)}[
        check_graph_type(graph_type)
    ]


class _Layout:
    """Per-atom orbital slots of one structure in the common basis, grouped by element."""

    def __init__(
        self, elements: Sequence[str], orbital_map: Mapping[str, Sequence[int]], basis: CommonBasis, sid: str
    ) -> None:
        self.basis = basis
        self.symbols = sorted(set(elements))
        self.element_index = np.array([self.symbols.index(el) for el in elements], dtype=np.int64)
        self.slots: list[np.ndarray] = []
        for symbol in self.symbols:
            if symbol not in orbital_map:
                raise DataError(
                    f"element {symbol} of POSCAR has no entry in elements_orbital_map",
                    structure=sid,
                    key="elements_orbital_map",
                )
            shells = [int(l) for l in orbital_map[symbol]]
            if not basis.covers(shells):
                raise DataError(
                    f"element {symbol} has shells {shells}, "
                    f"not covered by the common basis {basis.to_string()}",
                    structure=sid,
                    key="elements_orbital_map",
                )
            self.slots.append(element_slots(basis, shells))

    def pair_slots(
        self, src: np.ndarray, dst: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]:
        """Element-pair type of each edge and, per type present, (element i, element j, edges)."""
        num = len(self.symbols)
        types = self.element_index[src] * num + self.element_index[dst]
        groups = []
        for t in np.unique(types):
            groups.append((int(t) // num, int(t) % num, np.nonzero(types == t)[0]))
        return types, groups

    def slots_of(self, element: int, spin: bool) -> np.ndarray:
        slots = self.slots[element]
        return spin_slots(slots, self.basis.size) if spin else slots


def _padded(
    matrix: BlockMatrix,
    rows: np.ndarray,
    layout: _Layout,
    groups: list[tuple[int, int, np.ndarray]],
    *,
    spin: bool,
    dtype: np.dtype,
    file: Path,
    sid: str,
) -> np.ndarray:
    """(E, b, b) blocks of ``matrix`` (pair ``rows[e]`` for edge e) placed into the common basis.

    b = B or 2B (``spin``); edges whose row is -1 (pair absent from the file) stay zero.
    """
    size = layout.basis.size * (2 if spin else 1)
    out = np.zeros((rows.shape[0], size * size), dtype=dtype)
    for element_i, element_j, edges in groups:
        si, sj = layout.slots_of(element_i, spin), layout.slots_of(element_j, spin)
        present = edges[rows[edges] >= 0]
        if present.size == 0:
            continue
        pair_rows = rows[present]
        shapes = matrix.chunk_shapes[pair_rows]
        bad = np.nonzero((shapes[:, 0] != si.size) | (shapes[:, 1] != sj.size))[0]
        if bad.size:
            row = int(pair_rows[bad[0]])
            raise DataError(
                f"block {row} (pair {matrix.atom_pairs[row].tolist()}) has shape {shapes[bad[0]].tolist()}, "
                f"expected [{si.size}, {sj.size}] from elements_orbital_map"
                + (" (spinful: twice the orbitals)" if spin else ""),
                file=file,
                structure=sid,
                key="chunk_shapes",
            )
        pattern = (si[:, None] * size + sj[None, :]).reshape(-1)
        starts = matrix.chunk_boundaries[pair_rows]
        values = matrix.entries[starts[:, None] + np.arange(pattern.size)[None, :]]
        out[present[:, None], pattern[None, :]] = values
    return out.reshape(rows.shape[0], size, size)


def _shape_mask(
    layout: _Layout, groups: list[tuple[int, int, np.ndarray]], num_edges: int, spin: bool
) -> np.ndarray:
    size = layout.basis.size * (2 if spin else 1)
    mask = np.zeros((num_edges, size, size), dtype=bool)
    for element_i, element_j, edges in groups:
        si, sj = layout.slots_of(element_i, spin), layout.slots_of(element_j, spin)
        mask[np.ix_(edges, si, sj)] = True
    return mask


def _shell_keep_mask(
    overlap: np.ndarray, basis: CommonBasis, onsite: np.ndarray, threshold: float
) -> np.ndarray:
    """(E, B, B) bool: True inside shell-pair sub-blocks with max |S| >= threshold, and on-site edges."""
    starts = basis.shell_offsets[:-1]
    sizes = np.diff(basis.shell_offsets)
    magnitude = np.abs(overlap)
    shell_max = np.maximum.reduceat(np.maximum.reduceat(magnitude, starts, axis=1), starts, axis=2)
    keep = shell_max >= threshold
    keep[onsite] = True
    return np.repeat(np.repeat(keep, sizes, axis=1), sizes, axis=2)


def _edge_rows(matrix: BlockMatrix, pairs: np.ndarray) -> np.ndarray:
    """Row of each (E, 5) pair in ``matrix`` (-1 where absent)."""
    if matrix.atom_pairs.shape == pairs.shape and np.array_equal(matrix.atom_pairs, pairs):
        return np.arange(pairs.shape[0], dtype=np.int64)
    index = matrix.pair_index()
    return np.array([index.get(tuple(int(v) for v in row), -1) for row in pairs], dtype=np.int64)


def _real_dtype(dtype: Any) -> np.dtype:
    real = np.dtype(dtype)
    if real not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"graph dtype must be float32 or float64, got {real}")
    return real


def build_structure_graph(
    structure: Any,
    basis: CommonBasis,
    *,
    graph_type: str,
    dtype: Any = np.float32,
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    neighbour_cutoff: float | None = None,
) -> StructureGraph:
    """Build the graph of one loaded structure (``hamflow.data.structure.Structure``).

    ``structure.matrices`` must hold the file named by the graph type (H for H / HS, Rho, S for
    S / HS); S is used for the mask when present. A Sap graph of a structure without overlap.h5
    takes its edges from :func:`neighbour_edges` with ``neighbour_cutoff`` (Angstrom).
    ``dtype`` (float32 / float64) is the dtype of edge vectors, overlap and real labels (complex64 /
    complex128 for spinful ones). Raises DataError naming the structure and file on inconsistent data.
    """
    check_graph_type(graph_type)
    real = _real_dtype(dtype)
    sid = str(structure.sid)
    poscar, info = structure.poscar, structure.info
    matrices: Mapping[str, BlockMatrix] = structure.matrices
    folder = Path(structure.path)
    layout = _Layout(poscar.elements, info.elements_orbital_map, basis, sid)
    num_atoms = poscar.num_atoms

    edge_key = EDGE_SOURCE[graph_type]
    if edge_key in matrices:
        pairs = matrices[edge_key].atom_pairs.astype(np.int64, copy=False)
    elif graph_type == "Sap":
        if neighbour_cutoff is None:
            raise DataError(
                "no overlap.h5 and no neighbour cutoff to find the edges", structure=sid, file=folder
            )
        src, dst, shift = neighbour_edges(poscar, neighbour_cutoff)
        pairs = np.column_stack([shift, src, dst]).astype(np.int64)
    else:
        raise DataError(
            f"{MATRIX_FILES[edge_key]} is needed for graph_type {graph_type}", structure=sid, file=folder
        )
    if pairs.shape[0] and (pairs[:, 3:].max() >= num_atoms):
        row = int(np.argmax(pairs[:, 3:].max(axis=1) >= num_atoms))
        raise DataError(
            f"atom pair {pairs[row].tolist()} names an atom beyond the {num_atoms} atoms of POSCAR",
            structure=sid,
            file=folder / MATRIX_FILES[edge_key],
            key="atom_pairs",
        )

    edge_shift = pairs[:, :3].astype(np.int32)
    edge_src = pairs[:, 3].astype(np.int32)
    edge_dst = pairs[:, 4].astype(np.int32)
    positions = np.asarray(poscar.positions, dtype=np.float64)
    lattice = np.asarray(poscar.lattice, dtype=np.float64)
    edge_vec = (positions[edge_dst] + edge_shift @ lattice - positions[edge_src]).astype(real)
    onsite = (edge_src == edge_dst) & ~edge_shift.any(axis=1)
    _, groups = layout.pair_slots(edge_src, edge_dst)
    spinful = bool(info.spinful)
    num_edges = pairs.shape[0]

    if LABEL_SOURCE[graph_type] is not None and "S" not in matrices and not info.orthogonal_basis:
        raise DataError(
            f"{MATRIX_FILES['S']} is missing: a non-orthogonal basis needs it for the label mask",
            structure=sid,
            file=folder / MATRIX_FILES["S"],
        )
    overlap_padded = None
    if "S" in matrices:
        overlap_matrix = matrices["S"]
        if np.iscomplexobj(overlap_matrix.entries):
            raise DataError(
                "overlap entries are complex; S must be real",
                structure=sid,
                file=folder / MATRIX_FILES["S"],
                key="entries",
            )
        rows = _edge_rows(overlap_matrix, pairs)
        overlap_padded = _padded(
            overlap_matrix,
            rows,
            layout,
            groups,
            spin=False,
            dtype=np.float64,
            file=folder / MATRIX_FILES["S"],
            sid=sid,
        )

    label_mask = _shape_mask(layout, groups, num_edges, spinful)
    if overlap_padded is not None and graph_type != "Sap":
        keep = _shell_keep_mask(overlap_padded, basis, onsite, overlap_threshold)
        label_mask &= np.tile(keep, (1, 2, 2)) if spinful else keep

    labels = None
    label_key = LABEL_SOURCE[graph_type]
    if label_key is not None:
        label_matrix = matrices[label_key]
        label_dtype = np.result_type(real, np.complex64) if spinful else real
        if not spinful and np.iscomplexobj(label_matrix.entries):
            raise DataError(
                "entries are complex but info.json says spinful = false",
                structure=sid,
                file=folder / MATRIX_FILES[label_key],
                key="entries",
            )
        rows = np.arange(num_edges, dtype=np.int64)
        labels = _padded(
            label_matrix,
            rows,
            layout,
            groups,
            spin=spinful,
            dtype=label_dtype,
            file=folder / MATRIX_FILES[label_key],
            sid=sid,
        )
        labels[~label_mask] = 0

    overlap = None
    if CARRIES_OVERLAP[graph_type]:
        if overlap_padded is None:
            raise DataError("overlap.h5 is needed for graph_type " + graph_type, structure=sid, file=folder)
        overlap = overlap_padded.astype(real)
        if spinful:
            spin_overlap = np.zeros((num_edges, 2 * basis.size, 2 * basis.size), dtype=real)
            spin_overlap[:, : basis.size, : basis.size] = overlap
            spin_overlap[:, basis.size :, basis.size :] = overlap
            overlap = spin_overlap

    return StructureGraph(
        sid=sid,
        atomic_numbers=np.array([atomic_number(el) for el in poscar.elements], dtype=np.int32),
        positions=positions,
        lattice=lattice,
        edge_src=edge_src,
        edge_dst=edge_dst,
        edge_shift=edge_shift,
        edge_vec=edge_vec,
        labels=labels,
        label_mask=label_mask,
        overlap=overlap,
    )


def unpad_block(
    label: np.ndarray, basis: CommonBasis, element_shells_i: Sequence[int], element_shells_j: Sequence[int]
) -> np.ndarray:
    """Inverse of the padding: the (ni, nj) block (spinful (2B, 2B) -> (2ni, 2nj)) of one edge."""
    spin = label.shape[0] == 2 * basis.size
    si = element_slots(basis, element_shells_i)
    sj = element_slots(basis, element_shells_j)
    if spin:
        si, sj = spin_slots(si, basis.size), spin_slots(sj, basis.size)
    return label[np.ix_(si, sj)]


def unpad_edges(
    padded: np.ndarray,
    graph: StructureGraph,
    basis: CommonBasis,
    elements_orbital_map: Mapping[str, Sequence[int]],
) -> BlockMatrix:
    """Inverse of the padding for a whole graph: (E, b, b) padded blocks -> a BlockMatrix.

    The atom pairs are the graph's edges in order; blocks are cut out of the common basis with each
    atom's orbital map (spinful when b = 2B). Used to write predictions (hamiltonian_pred.h5).
    """
    spin = padded.shape[1] == 2 * basis.size
    elements = [element_symbol(int(z)) for z in graph.atomic_numbers]
    layout = _Layout(elements, elements_orbital_map, basis, graph.sid)
    types, groups = layout.pair_slots(graph.edge_src, graph.edge_dst)
    sizes_i = np.array([layout.slots_of(i, spin).size for i in range(len(layout.symbols))], dtype=np.int64)
    rows = sizes_i[types // len(layout.symbols)]
    cols = sizes_i[types % len(layout.symbols)]
    boundaries = np.zeros(graph.num_edges + 1, dtype=np.int64)
    np.cumsum(rows * cols, out=boundaries[1:])
    entries = np.zeros(int(boundaries[-1]), dtype=padded.dtype)
    flat = padded.reshape(padded.shape[0], -1)
    size = padded.shape[1]
    for element_i, element_j, edges in groups:
        si, sj = layout.slots_of(element_i, spin), layout.slots_of(element_j, spin)
        pattern = (si[:, None] * size + sj[None, :]).reshape(-1)
        targets = boundaries[edges][:, None] + np.arange(pattern.size)[None, :]
        entries[targets] = flat[edges[:, None], pattern[None, :]]
    return BlockMatrix(
        atom_pairs=graph.atom_pairs,
        chunk_shapes=np.column_stack([rows, cols]).astype(np.int64),
        chunk_boundaries=boundaries,
        entries=entries,
    )
