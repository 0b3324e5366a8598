"""Small synthetic GraphBatches for the network tests, built directly with numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hamflow.graph.batch import GraphBatch

# A bent 6-atom cluster (Angstrom): bonds of ~1-1.6 A, no two atoms closer than 0.9 A.
CLUSTER_POSITIONS = np.array(
    [
        [0.00, 0.00, 0.00],
        [0.96, 0.10, -0.05],
        [-0.30, 0.92, 0.12],
        [0.20, -0.40, 1.45],
        [1.35, -0.85, 0.95],
        [-1.10, -0.55, -0.70],
    ]
)
CLUSTER_NUMBERS = (8, 1, 1, 6, 7, 1)


def random_rotation(seed: int, *, improper: bool = False) -> np.ndarray:
    """A (3, 3) random rotation (times -1, an inversion, when ``improper``)."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=seed).as_matrix()
    return -rotation if improper else rotation


def molecule_batch(
    positions: np.ndarray,
    numbers: Sequence[int],
    basis_size: int,
    *,
    pairs: Sequence[tuple[int, int]] | None = None,
    pad_edges: int = 2,
    dtype: type = np.float32,
) -> GraphBatch:
    """A one-structure batch (R = 0 only) with one padding node and ``pad_edges`` padding edges.

    pairs: ordered atom pairs (i, j) to use as edges (default: all pairs, on-site included);
    edge_vec = positions[j] - positions[i]. Labels, masks and overlap are zeros (the networks do not
    read them).
    """
    positions = np.asarray(positions, dtype=np.float64)
    num_atoms = len(numbers)
    if pairs is None:
        pairs = [(i, j) for i in range(num_atoms) for j in range(num_atoms)]
    src = np.array([i for i, _ in pairs] + [0] * pad_edges, dtype=np.int32)
    dst = np.array([j for _, j in pairs] + [0] * pad_edges, dtype=np.int32)
    real = np.arange(len(src)) < len(pairs)
    vectors = np.where(real[:, None], positions[dst] - positions[src], 0.0)
    num_edges = len(src)
    blocks = (num_edges, basis_size, basis_size)
    return GraphBatch(
        atomic_numbers=np.array([*numbers, 0], dtype=np.int32),
        node_graph=np.zeros(num_atoms + 1, dtype=np.int32),
        node_mask=np.arange(num_atoms + 1) < num_atoms,
        edge_src=src,
        edge_dst=dst,
        edge_vec=vectors.astype(dtype),
        edge_onsite=np.logical_and(src == dst, real),
        edge_graph=np.zeros(num_edges, dtype=np.int32),
        edge_mask=real,
        graph_mask=np.ones(1, dtype=bool),
        labels=np.zeros(blocks, dtype=np.float32),
        label_mask=np.zeros(blocks, dtype=bool),
        overlap=np.zeros(blocks, dtype=np.float32),
    )


def rotate_blocks(blocks: np.ndarray, rotation_matrix: np.ndarray) -> np.ndarray:
    """D H D^T for every block (E, B, B) with one (B, B) basis rotation D (float64)."""
    return np.einsum("ij,ejk,lk->eil", rotation_matrix, np.asarray(blocks, np.float64), rotation_matrix)


def equivariance_error(
    original: np.ndarray, rotated: np.ndarray, rotation_matrix: np.ndarray, edge_mask: np.ndarray
) -> tuple[float, float]:
    """(max |D H D^T - H(R .)| over real edges, max |H| over real edges)."""
    expected = rotate_blocks(original[edge_mask], rotation_matrix)
    error = float(np.max(np.abs(expected - np.asarray(rotated[edge_mask], np.float64))))
    return error, float(np.max(np.abs(original[edge_mask])))
