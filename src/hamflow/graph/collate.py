"""Structure graphs -> one padded :class:`~hamflow.graph.batch.GraphBatch` of fixed (bucketed) sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hamflow.graph.batch import GraphBatch
from hamflow.graph.structure_graph import StructureGraph


def collate(
    graphs: Sequence[StructureGraph], *, num_nodes: int, num_edges: int, num_graphs: int
) -> GraphBatch:
    """Concatenate ``graphs`` and pad to ``num_nodes`` N, ``num_edges`` E and ``num_graphs`` G.

    Node indices of each graph's edges are offset by the nodes before it. Padding nodes have atomic
    number 0 and belong to graph 0; padding edges join node 0 to itself in graph 0 with a zero edge
    vector; every padding row is False in its mask and zero in labels / overlap. A graph without
    labels (S, Sap) or without overlap values contributes zeros there. Labels keep the graphs' dtype
    (float, or complex when spinful); edge vectors and overlap keep the edge vectors' float dtype.
    Raises ValueError if the graphs do not fit or disagree in their block size.
    """
    if not graphs:
        raise ValueError("collate needs at least one graph")
    total_nodes = sum(g.num_nodes for g in graphs)
    total_edges = sum(g.num_edges for g in graphs)
    if total_nodes > num_nodes or total_edges > num_edges or len(graphs) > num_graphs:
        raise ValueError(
            f"{len(graphs)} graphs with {total_nodes} nodes and {total_edges} edges do not fit a batch of "
            f"{num_graphs} graphs, {num_nodes} nodes, {num_edges} edges"
        )
    block = graphs[0].label_mask.shape[1:]
    for g in graphs:
        if g.label_mask.shape[1:] != block:
            raise ValueError(f"graph {g.sid} has blocks {g.label_mask.shape[1:]}, the batch {block}")
    real = graphs[0].edge_vec.dtype
    label_dtypes = [g.labels.dtype for g in graphs if g.labels is not None]
    label_dtype = np.result_type(*label_dtypes) if label_dtypes else real

    atomic_numbers = np.zeros(num_nodes, dtype=np.int32)
    node_graph = np.zeros(num_nodes, dtype=np.int32)
    node_mask = np.zeros(num_nodes, dtype=bool)
    edge_src = np.zeros(num_edges, dtype=np.int32)
    edge_dst = np.zeros(num_edges, dtype=np.int32)
    edge_vec = np.zeros((num_edges, 3), dtype=real)
    edge_onsite = np.zeros(num_edges, dtype=bool)
    edge_graph = np.zeros(num_edges, dtype=np.int32)
    edge_mask = np.zeros(num_edges, dtype=bool)
    graph_mask = np.zeros(num_graphs, dtype=bool)
    labels = np.zeros((num_edges, *block), dtype=label_dtype)
    label_mask = np.zeros((num_edges, *block), dtype=bool)
    overlap = np.zeros((num_edges, *block), dtype=real)

    node_start = edge_start = 0
    for index, g in enumerate(graphs):
        nodes = slice(node_start, node_start + g.num_nodes)
        edges = slice(edge_start, edge_start + g.num_edges)
        atomic_numbers[nodes] = g.atomic_numbers
        node_graph[nodes] = index
        node_mask[nodes] = True
        edge_src[edges] = g.edge_src + node_start
        edge_dst[edges] = g.edge_dst + node_start
        edge_vec[edges] = g.edge_vec
        edge_onsite[edges] = g.edge_onsite
        edge_graph[edges] = index
        edge_mask[edges] = True
        graph_mask[index] = True
        if g.labels is not None:
            labels[edges] = g.labels
        label_mask[edges] = g.label_mask
        if g.overlap is not None:
            overlap[edges] = g.overlap
        node_start, edge_start = nodes.stop, edges.stop

    return GraphBatch(
        atomic_numbers=atomic_numbers,
        node_graph=node_graph,
        node_mask=node_mask,
        edge_src=edge_src,
        edge_dst=edge_dst,
        edge_vec=edge_vec,
        edge_onsite=edge_onsite,
        edge_graph=edge_graph,
        edge_mask=edge_mask,
        graph_mask=graph_mask,
        labels=labels,
        label_mask=label_mask,
        overlap=overlap,
    )
