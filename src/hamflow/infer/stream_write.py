"""Write one structure's prediction file chunk by chunk: its padded blocks never sit in memory at once.

The file is the one :func:`hamflow.infer.predict.write_prediction` writes after
:func:`hamflow.infer.predict.graph_prediction` (same datasets, order, dtypes and values): atom pairs
in the graph's edge order, each block cut to its atoms' orbitals, Hermitian when ``symmetrize``
(block and the conjugate transpose of its mirror (-R, j, i) averaged; a pair without a mirror keeps
its block and the mirror is appended after all edges, in edge order). The pair table, shapes and
boundaries are known from the edges alone, so they are written first and the entries then in
consecutive slices (with ``symmetrize``, gathered in memory, the file's size, and written once: the
two blocks of a mirror pair are computed together); the file is written to a temporary name beside
the target and renamed at the end.
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
    (b = 2B when ``spin``). With ``symmetrize`` each call asks for the lower edges of mirror pairs
    and their partners (every block computed once, :func:`_symmetric_entries`); without, for
    consecutive edges written slice by slice.
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
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("atom_pairs", data=pairs)
        handle.create_dataset("chunk_boundaries", data=boundaries)
        handle.create_dataset("chunk_shapes", data=shapes)
        entries = handle.create_dataset("entries", shape=(int(boundaries[-1]),), dtype=dtype)
        if symmetrize:
            entries[...] = _symmetric_entries(
                graph, blocks_of, chunk_edges, basis, elements_orbital_map, mirror, boundaries, dtype
            )
        else:
            for start in range(0, num_edges, chunk_edges):
                rows = np.arange(start, min(start + chunk_edges, num_edges))
                part = unpad_edges(
                    blocks_of(rows),
                    _subgraph(graph, src[rows], dst[rows], shift[rows]),
                    basis,
                    elements_orbital_map,
                )
                entries[boundaries[start] : boundaries[rows[-1] + 1]] = part.entries.astype(dtype)
    if extras.shape[0]:
        LOG.info("%s: %d pair(s) without a mirror; their mirrors were appended", graph.sid, extras.shape[0])


def _symmetric_entries(
    graph: StructureGraph,
    blocks_of: BlockFn,
    chunk_edges: int,
    basis: CommonBasis,
    elements_orbital_map: Mapping[str, Sequence[int]],
    mirror: np.ndarray,
    boundaries: np.ndarray,
    dtype: np.dtype,
) -> np.ndarray:
    """(boundaries[-1],) the file's entries with every block Hermitian-averaged with its mirror.

    Each edge's block is computed once: the chunks hold the lower edge of each mirror pair and its
    partner; H_e = (B_e + B_m^H) / 2 goes to e and H_e^H to m. An edge without a mirror keeps B_e and
    the appended mirror (after all edges, in edge order) gets B_e^H. The entries (the file's size)
    are gathered here and written once; padded blocks never exceed one chunk.
    """
    src, dst, shift = graph.edge_src, graph.edge_dst, graph.edge_shift
    num_edges = graph.num_edges
    edge = np.arange(num_edges)
    appended = np.full(num_edges, -1, np.int64)
    lonely = np.nonzero(mirror < 0)[0]
    appended[lonely] = num_edges + np.arange(lonely.shape[0])
    lower = np.nonzero((mirror < 0) | (edge <= mirror))[0]
    out = np.empty(int(boundaries[-1]), dtype)
    step = max(1, chunk_edges // 2)
    for start in range(0, lower.shape[0], step):
        rows = lower[start : start + step]
        partner = mirror[rows]
        other = (partner >= 0) & (partner != rows)  # a pair of two edges (not on-site R = 0, i = i)
        computed = blocks_of(np.concatenate([rows, partner[other]]))
        block = computed[: rows.shape[0]].copy()
        paired = partner >= 0
        mirrored = block.copy()
        mirrored[other] = computed[rows.shape[0] :]
        block[paired] = 0.5 * (block[paired] + np.conj(mirrored[paired]).transpose(0, 2, 1))
        adjoint = np.conj(block).transpose(0, 2, 1)
        alone = ~paired
        # (file position, block, src, dst, shift) of: the rows, their partners, the appended mirrors
        where = np.concatenate([rows, partner[other], appended[rows[alone]]])
        blocks = np.concatenate([block, adjoint[other], adjoint[alone]])
        first = np.concatenate([src[rows], src[partner[other]], dst[rows[alone]]])
        second = np.concatenate([dst[rows], dst[partner[other]], src[rows[alone]]])
        cells = np.concatenate([shift[rows], shift[partner[other]], -shift[rows[alone]]])
        part = unpad_edges(blocks, _subgraph(graph, first, second, cells), basis, elements_orbital_map)
        sizes = np.diff(part.chunk_boundaries)
        target = np.repeat(boundaries[where] - part.chunk_boundaries[:-1], sizes) + np.arange(sizes.sum())
        out[target] = part.entries.astype(dtype)
    return out
