"""Write one structure's prediction file chunk by chunk, so that its blocks never sit in memory at once.

The file is the one :func:`hamflow.infer.predict.write_prediction` writes after
:func:`hamflow.infer.predict.graph_prediction` (same datasets, order, dtypes and values): atom pairs
in the graph's edge order, each block cut to its atoms' orbitals, Hermitian when ``symmetrize``
(block and the conjugate transpose of its mirror (-R, j, i) averaged; a pair without a mirror keeps
its block and the mirror is appended after all edges, in edge order). The pair table, shapes and
boundaries are known from the edges alone, so they are written first and the entries then in
consecutive slices; the file is written to a temporary name beside the target and renamed at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hamflow.atomic import atomic_path
from hamflow.data.orbitals import element_symbol
from hamflow.errors import DataError
from hamflow.graph.basis import CommonBasis, element_slots
from hamflow.graph.structure_graph import StructureGraph, unpad_edges

LOG = logging.getLogger(__name__)

#: (rows (n,) int64 edge indices) -> (n, b, b) padded physical blocks of those edges.
BlockFn = Callable[[np.ndarray], np.ndarray]


def mirror_index(src: np.ndarray, dst: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(E,) int64 row of the mirror pair (-R, j, i) of every edge (R, i, j), -1 where it is absent.

    Vectorised (sort and binary search over one int64 key per pair): O(E log E) time, O(E) memory.
    """
    src = np.asarray(src, np.int64)
    dst = np.asarray(dst, np.int64)
    shift = np.asarray(shift, np.int64).reshape(-1, 3)
    if src.shape[0] == 0:
        return np.zeros(0, np.int64)
    low = int(min(shift.min(), -shift.max()))
    span = 2 * abs(low) + 1
    atoms = int(max(src.max(), dst.max())) + 1
    if span**3 * atoms * atoms >= 2**62:
        raise DataError(f"{atoms} atoms with lattice shifts up to {abs(low)} do not fit the pair key")

    def key(r: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        cell = ((r[:, 0] - low) * span + (r[:, 1] - low)) * span + (r[:, 2] - low)
        return (cell * atoms + i) * atoms + j

    keys = key(shift, src, dst)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    wanted = key(-shift, dst, src)
    position = np.searchsorted(sorted_keys, wanted)
    position = np.minimum(position, keys.shape[0] - 1)
    found = sorted_keys[position] == wanted
    return np.where(found, order[position], -1).astype(np.int64)


def _atom_sizes(
    graph: StructureGraph, basis: CommonBasis, orbital_map: Mapping[str, Sequence[int]], spin: bool
) -> np.ndarray:
    """(N,) orbitals of each atom (twice that when ``spin``)."""
    sizes: dict[int, int] = {}
    for z in np.unique(graph.atomic_numbers):
        symbol = element_symbol(int(z))
        if symbol not in orbital_map:
            raise DataError(f"element {symbol} has no entry in elements_orbital_map", structure=graph.sid)
        sizes[int(z)] = element_slots(basis, [int(l) for l in orbital_map[symbol]]).size * (2 if spin else 1)
    lookup = np.zeros(int(graph.atomic_numbers.max()) + 1, np.int64)
    for z, size in sizes.items():
        lookup[z] = size
    return lookup[graph.atomic_numbers]


def _subgraph(graph: StructureGraph, src: np.ndarray, dst: np.ndarray, shift: np.ndarray) -> StructureGraph:
    """The edges (shift, src, dst) of ``graph``'s atoms, with what unpad_edges reads."""
    empty = np.zeros((0, 1, 1), bool)
    return StructureGraph(
        sid=graph.sid,
        atomic_numbers=graph.atomic_numbers,
        positions=graph.positions,
        lattice=graph.lattice,
        edge_src=np.asarray(src, np.int32),
        edge_dst=np.asarray(dst, np.int32),
        edge_shift=np.asarray(shift, np.int32),
        edge_vec=np.zeros((src.shape[0], 3), np.float32),
        labels=None,
        label_mask=empty,
        overlap=None,
    )


def write_streamed_prediction(
    path: str | Path,
    graph: StructureGraph,
    blocks_of: BlockFn,
    chunk_edges: int,
    basis: CommonBasis,
    elements_orbital_map: Mapping[str, Sequence[int]],
    *,
    spin: bool,
    symmetrize: bool,
    dtype: Any,
) -> None:
    """Write the prediction of ``graph`` to ``path`` (DeepH format, entries of ``dtype``) atomically.

    ``blocks_of(rows)`` gives the padded (n, b, b) physical blocks of at most ``chunk_edges`` edges
    (b = 2B when ``spin``). With ``symmetrize`` each call asks for a slice of consecutive edges and
    their mirrors (so every edge's block is computed twice: once for itself, once as a mirror).
    """
    if chunk_edges < 2:
        raise ValueError(f"chunk_edges must be >= 2, got {chunk_edges}")
    num_edges = graph.num_edges
    src, dst, shift = graph.edge_src, graph.edge_dst, graph.edge_shift
    mirror = mirror_index(src, dst, shift) if symmetrize else np.full(num_edges, -1, np.int64)
    extras = np.nonzero(mirror < 0)[0] if symmetrize else np.zeros(0, np.int64)
    sizes = _atom_sizes(graph, basis, elements_orbital_map, spin)
    all_src = np.concatenate([src, dst[extras]]).astype(np.int64)
    all_dst = np.concatenate([dst, src[extras]]).astype(np.int64)
    pairs = np.column_stack(
        [np.concatenate([shift, -shift[extras]]).astype(np.int64), all_src, all_dst]
    ).astype(np.int64)
    shapes = np.column_stack([sizes[all_src], sizes[all_dst]]).astype(np.int64)
    boundaries = np.zeros(pairs.shape[0] + 1, np.int64)
    np.cumsum(shapes[:, 0] * shapes[:, 1], out=boundaries[1:])
    dtype = np.dtype(dtype)
    step = max(1, chunk_edges // 2) if symmetrize else chunk_edges
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("atom_pairs", data=pairs)
        handle.create_dataset("chunk_boundaries", data=boundaries)
        handle.create_dataset("chunk_shapes", data=shapes)
        entries = handle.create_dataset("entries", shape=(int(boundaries[-1]),), dtype=dtype)
        for start in range(0, num_edges, step):
            rows = np.arange(start, min(start + step, num_edges))
            if symmetrize:
                partners = mirror[rows]
                has = partners >= 0
                computed = blocks_of(np.concatenate([rows, partners[has]]))
                block = computed[: rows.shape[0]].copy()
                mirrored = computed[rows.shape[0] :]
                block[has] = 0.5 * (block[has] + np.conj(mirrored).transpose(0, 2, 1))
            else:
                block = blocks_of(rows)
            part = unpad_edges(
                block, _subgraph(graph, src[rows], dst[rows], shift[rows]), basis, elements_orbital_map
            )
            entries[boundaries[start] : boundaries[rows[-1] + 1]] = part.entries.astype(dtype)
        for first in range(0, extras.shape[0], chunk_edges):
            rows = extras[first : first + chunk_edges]
            block = np.conj(blocks_of(rows)).transpose(0, 2, 1)
            part = unpad_edges(
                block, _subgraph(graph, dst[rows], src[rows], -shift[rows]), basis, elements_orbital_map
            )
            at = num_edges + first
            entries[boundaries[at] : boundaries[at + rows.shape[0]]] = part.entries.astype(dtype)
    if extras.shape[0]:
        LOG.info("%s: %d pair(s) without a mirror; their mirrors were appended", graph.sid, extras.shape[0])
