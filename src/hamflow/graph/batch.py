"""The padded graph batch that flows from the graph store into the network and the losses.

Every array has a fixed, bucketed leading size so that one compiled step serves many batches.
Padding rows have ``*_mask == False``; padding edges point at node 0 and carry zero labels.
Sizes: N nodes, E edges (on-site pairs included), G graphs, B orbitals of the common basis
(2B for spinful data, the spin blocks laid out [[uu, ud], [du, dd]]).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GraphBatch(NamedTuple):
    """A batch of structures as padded arrays (a JAX pytree: a NamedTuple of arrays).

    atomic_numbers: (N,) int32, 0 for padding nodes.
    node_graph:     (N,) int32, index of the structure in the batch each node belongs to.
    node_mask:      (N,) bool.
    edge_src:       (E,) int32, atom i of the pair (R, i, j).
    edge_dst:       (E,) int32, atom j, sitting in the cell shifted by R.
    edge_vec:       (E, 3) float, r_ij = pos_j + R @ lattice - pos_i in Angstrom, Cartesian (x, y, z).
    edge_onsite:    (E,) bool, i == j and R == 0.
    edge_graph:     (E,) int32, structure index of each edge.
    edge_mask:      (E,) bool.
    graph_mask:     (G,) bool.
    labels:         (E, B, B) float (H or Rho in eV / electrons, common basis) or (E, 2B, 2B) complex
                    for spinful data; zeros where masked. Absent (zeros) for Sap/S inference graphs.
    label_mask:     same shape as labels, bool: real orbital slot of both atoms, the edge is real,
                    and the shell-pair block is kept by the overlap threshold.
    overlap:        same shape as labels (real), the overlap S in the common basis, or zeros when the
                    graph carries no overlap values.
    """

    atomic_numbers: np.ndarray
    node_graph: np.ndarray
    node_mask: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_vec: np.ndarray
    edge_onsite: np.ndarray
    edge_graph: np.ndarray
    edge_mask: np.ndarray
    graph_mask: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    overlap: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])

    @property
    def num_graphs(self) -> int:
        return int(self.graph_mask.shape[0])
