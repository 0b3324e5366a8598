"""Prediction for one large structure with its edges fed through the network in chunks.

A whole-graph forward pass keeps every per-edge intermediate of a block alive at once (tensor
products, radial MLPs): about 90 kB per edge for a 127k-parameter sparrow, so a few thousand atoms
exhaust the memory. Here the network runs step by step (:data:`hamflow.nn.model.PHASE_METHODS`):

- node features (N, irreps) of the whole graph are kept, and the edge features (E, irreps): the state
  between blocks, a few hundred floats per edge;
- every per-edge step (initial edge features, the messages of a block, summed by atom into (N, ...),
  the edge update of a block, the readout and the target normaliser) runs on ``chunk_edges`` edges
  at a time, padded to that size so one compilation serves every chunk;
- per-atom sums over all edges (the message normalisation, the normaliser's neighbour sums) are the
  sums over the chunks.

So the result equals the whole-graph pass to float32 rounding (only the order of the sums differs),
and memory is the state plus one chunk's intermediates. :func:`chunk_edges_for_memory` picks the
chunk from the memory available; :func:`predict_chunked` yields the physical blocks (eV for H) of
consecutive edge ranges so the caller can write them out as they come (hamflow.infer.stream_write).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from hamflow.graph.batch import GraphBatch
from hamflow.graph.structure_graph import StructureGraph
from hamflow.memory import available_memory_bytes
from hamflow.nn.radial import EdgeChunk, inverse_sqrt_degree
from hamflow.train.normaliser import Normaliser

LOG = logging.getLogger(__name__)

#: Peak bytes per edge of one chunk's step: ~90 kB measured for the 127k-parameter sparrow of
#: config/train.toml (float32, benchmarks/infer_large.py); the chunk is sized so that this times the
#: chunk fits the memory share given to it. Wider networks need more per edge: set chunk_edges.
CHUNK_BYTES_PER_EDGE = 96 * 1024
#: The share of the available memory one chunk's intermediates may take (the rest: the state,
#: the graph, JAX's own buffers).
CHUNK_MEMORY_SHARE = 0.125
MIN_CHUNK_EDGES = 1024
MAX_CHUNK_EDGES = 16384


#: Memory assumed where neither /proc/meminfo nor a cgroup limit can be read (bytes).
FALLBACK_MEMORY_BYTES = 4 << 30


def chunk_edges_for_memory(
    available_bytes: int,
    *,
    bytes_per_edge: int = CHUNK_BYTES_PER_EDGE,
    share: float = CHUNK_MEMORY_SHARE,
    minimum: int = MIN_CHUNK_EDGES,
    maximum: int = MAX_CHUNK_EDGES,
) -> int:
    """Edges per chunk: ``share`` of ``available_bytes`` over ``bytes_per_edge``, clipped to
    [``minimum``, ``maximum``] and rounded down to a multiple of 256 (at least ``minimum``)."""
    if available_bytes < 0 or bytes_per_edge <= 0 or not 0 < share <= 1:
        raise ValueError(
            f"need available_bytes >= 0, bytes_per_edge > 0, 0 < share <= 1; got {available_bytes}, "
            f"{bytes_per_edge}, {share}"
        )
    edges = int(available_bytes * share) // int(bytes_per_edge)
    edges = min(max(edges, minimum), maximum)
    return max(minimum, edges // 256 * 256)


def resolve_chunk_edges(setting: int) -> int:
    """The chunk of ``process.infer.chunk_edges``: the value when > 0, else chosen from the memory
    available now (:func:`chunk_edges_for_memory`). ``HAMFLOW_CHUNK_EDGES`` overrides both."""
    override = os.environ.get("HAMFLOW_CHUNK_EDGES", "").strip()
    if override:
        return max(1, int(override))
    if setting > 0:
        return int(setting)
    return chunk_edges_for_memory(available_memory_bytes() or FALLBACK_MEMORY_BYTES)


@dataclass(frozen=True)
class _Edges:
    """Host arrays of a graph's edges (E of them)."""

    vec: np.ndarray
    onsite: np.ndarray
    src: np.ndarray
    dst: np.ndarray

    def chunk(self, rows: np.ndarray, size: int) -> EdgeChunk:
        """The edges ``rows`` padded to ``size`` (padding: node 0 to itself, zero vector, masked)."""
        count = rows.shape[0]
        vec = np.zeros((size, 3), self.vec.dtype)
        vec[:count] = self.vec[rows]
        onsite = np.zeros(size, bool)
        onsite[:count] = self.onsite[rows]
        mask = np.zeros(size, bool)
        mask[:count] = True
        src = np.zeros(size, np.int32)
        src[:count] = self.src[rows]
        dst = np.zeros(size, np.int32)
        dst[:count] = self.dst[rows]
        return EdgeChunk(vec, onsite, mask, src, dst)


class ChunkedNetwork:
    """A HamiltonianNetwork module (from hamflow.nn.model.build_model) and its params, applied step by
    step over edge chunks of ``chunk_edges`` edges; physical blocks through ``normaliser``.

    ``out_dtype``: dtype of the blocks (float32/float64, complex for ``spinful``).
    """

    def __init__(
        self,
        module: Any,
        params: Any,
        normaliser: Normaliser,
        *,
        spinful: bool,
        out_dtype: Any,
        chunk_edges: int,
    ) -> None:
        if chunk_edges < 1:
            raise ValueError(f"chunk_edges must be >= 1, got {chunk_edges}")
        self.module = module
        self.params = params
        self.normaliser = normaliser
        self.spinful = bool(spinful)
        self.out_dtype = out_dtype
        self.chunk_edges = int(chunk_edges)
        backbone = module.backbone
        self.irreps = e3nn.Irreps(backbone.irreps)
        self.num_blocks = int(backbone.num_blocks)
        self.compute_dtype = backbone.dtype
        self._jitted: dict[Any, Callable[..., Any]] = {}
        #: (num_nodes, step, *static) -> a program built ahead (:meth:`build_ahead`)
        self._ahead: dict[tuple, Callable[..., Any]] = {}
        self._onsite: tuple[np.ndarray, jnp.ndarray] | None = None

    # ------------------------------------------------------------------ jitted steps
    def _step(self, step: str, *static: Any) -> Callable[..., Any]:
        key = (step, *static)
        if key not in self._jitted:
            self._jitted[key] = jax.jit(self._make(step, *static))
        return self._jitted[key]

    def _program(self, num_nodes: int, step: str, *static: Any) -> Callable[..., Any]:
        """The step's program for a graph of ``num_nodes`` atoms: the one built ahead if any, else
        the jitted step (compiled at first use)."""
        ahead = self._ahead.get((num_nodes, step, *static))
        return ahead if ahead is not None else self._step(step, *static)

    def build_ahead(self, graph: StructureGraph, workers: int | None = None) -> Any:
        """Start building every step program for ``graph``'s shapes in background threads, in the
        order :meth:`features` and :meth:`blocks` first need them, so that XLA compiles the later
        steps while the first ones run (hamflow.train.background.BackgroundBuild; ``workers``
        threads, default one per core that the available memory allows). Returns the build, or
        None when the programs for this many atoms are built already."""
        from concurrent.futures import Future

        from hamflow.train.background import BackgroundBuild, parallel_compiles

        spec = jax.ShapeDtypeStruct
        num_nodes, size = graph.num_nodes, self.chunk_edges
        if (num_nodes, "blocks") in self._ahead:
            return None
        params = jax.tree.map(lambda x: spec(np.shape(x), x.dtype), self.params)
        chunk = EdgeChunk(
            spec((size, 3), np.asarray(graph.edge_vec).dtype),
            spec((size,), np.bool_),
            spec((size,), np.bool_),
            spec((size,), np.int32),
            spec((size,), np.int32),
        )
        z = spec((num_nodes,), jnp.int32)
        mask = spec((size, *graph.label_mask.shape[1:]), np.bool_)
        outputs: dict[tuple, Future] = {}

        def out(*key: Any) -> Any:  # the output shapes of an earlier step (waits for its lowering)
            return outputs[key].result()

        def edges() -> Any:
            nodes = out("initial_nodes")
            return spec((size, nodes.shape[-1]), nodes.dtype)

        plan: list[tuple[tuple, Callable[[], tuple]]] = [
            (("degree", num_nodes), lambda: (params, chunk)),
            (("node_terms",), lambda: (z, chunk)),
            (("initial_nodes",), lambda: (params, z)),
            (("initial_edges",), lambda: (params, chunk)),
        ]
        for index in range(self.num_blocks):
            plan += [
                (("messages", index), lambda: (params, out("initial_nodes"), edges(), chunk)),
                (
                    ("nodes", index),
                    lambda i=index: (
                        params,
                        out("initial_nodes"),
                        out("messages", i),
                        jax.eval_shape(inverse_sqrt_degree, out("degree", num_nodes)),
                    ),
                ),
                (("edges", index), lambda: (params, out("initial_nodes"), edges(), chunk)),
            ]
        plan += [
            (("onsite",), lambda: (params, out("initial_nodes"))),
            (
                ("blocks",),
                lambda: (params, out("onsite"), edges(), chunk, z, mask, out("node_terms")),
            ),
        ]

        def job(key: tuple, arguments: Callable[[], tuple]) -> Callable[[], tuple[Any, bool]]:
            def build() -> tuple[Any, bool]:
                try:
                    lowered = jax.jit(self._make(*key)).lower(*arguments())
                except BaseException as why:
                    outputs[key].set_exception(why)
                    raise
                outputs[key].set_result(lowered.out_info)
                return lowered.compile(), False

            return build

        for key, _ in plan:
            outputs[key] = Future()

        def report(seconds: float, built: int, loaded: int) -> None:
            LOG.info("built the %d step programs for %d atoms in %.1f s", built, num_nodes, seconds)

        jobs = [("step", key, job(key, arguments)) for key, arguments in plan]
        build = BackgroundBuild(jobs, workers or parallel_compiles(len(jobs)), report)
        for (key, _), program in zip(plan, build.programs, strict=True):
            self._ahead[(num_nodes, *key)] = program
        return build

    def _apply(self, params: Any, method: str, *args: Any) -> Any:
        return self.module.apply({"params": params}, *args, method=method)

    def _features(self, array: jnp.ndarray) -> e3nn.IrrepsArray:
        return e3nn.IrrepsArray(self.irreps, array)

    def _make(self, step: str, *static: Any) -> Callable[..., Any]:
        apply, wrap = self._apply, self._features
        if step == "degree":
            (num_nodes,) = static
            return lambda p, chunk: apply(p, "backbone_step", "degree", chunk, num_nodes)
        if step == "initial_nodes":
            return lambda p, z: apply(p, "backbone_step", "initial_nodes", z).array
        if step == "initial_edges":
            return lambda p, chunk: apply(p, "backbone_step", "initial_edges", chunk).array
        if step == "messages":
            (index,) = static
            return lambda p, nodes, edges, chunk: apply(
                p, "backbone_step", "block_messages", index, wrap(nodes), wrap(edges), chunk
            )
        if step == "nodes":
            (index,) = static
            return lambda p, nodes, summed, inv: (
                apply(p, "backbone_step", "block_nodes", index, wrap(nodes), summed, inv).array
            )
        if step == "edges":
            (index,) = static
            return lambda p, nodes, edges, chunk: (
                apply(p, "backbone_step", "block_edges", index, wrap(nodes), wrap(edges), chunk).array
            )
        if step == "onsite":

            def onsite(p: Any, nodes: jnp.ndarray) -> jnp.ndarray:
                final = apply(p, "backbone_step", "final_nodes", wrap(nodes))
                return apply(p, "onsite_blocks", final)

            return onsite
        if step == "node_terms":
            normaliser = self.normaliser

            def node_terms(z: jnp.ndarray, chunk: EdgeChunk) -> Any:
                offsite = jnp.logical_and(chunk.edge_mask, jnp.logical_not(chunk.edge_onsite))
                return normaliser.baseline_node_terms(
                    z, chunk.edge_src, chunk.edge_dst, offsite, chunk.edge_vec
                )

            return node_terms
        if step == "blocks":
            normaliser, spinful, out_dtype = self.normaliser, self.spinful, self.out_dtype

            def blocks(
                p: Any,
                onsite: jnp.ndarray,
                edges: jnp.ndarray,
                chunk: EdgeChunk,
                z: jnp.ndarray,
                mask: Any,
                terms: Any,
            ) -> jnp.ndarray:
                final = apply(p, "backbone_step", "final_edges", wrap(edges))
                raw = apply(p, "edge_blocks", onsite, final, chunk)
                batch = _normaliser_batch(z, chunk, mask)
                prediction, _ = normaliser.physical(
                    raw, batch, spinful=spinful, dtype=out_dtype, node_terms=terms
                )
                return jnp.where(mask, prediction.astype(out_dtype), 0)

            return blocks
        raise ValueError(f"unknown step {step!r}")

    # ------------------------------------------------------------------ the passes
    def _ranges(self, count: int) -> Iterator[np.ndarray]:
        for start in range(0, count, self.chunk_edges):
            yield np.arange(start, min(start + self.chunk_edges, count))

    def features(self, graph: StructureGraph) -> tuple[np.ndarray, np.ndarray, Any]:
        """The backbone on all edges of ``graph``: (node features (N, D), edge features (E, D)) after
        the last block (before the output norms), and the normaliser's per-atom sums."""
        edges_host = _Edges(
            np.asarray(graph.edge_vec), np.asarray(graph.edge_onsite), graph.edge_src, graph.edge_dst
        )
        num_nodes = graph.num_nodes
        size = self.chunk_edges
        z = jnp.asarray(graph.atomic_numbers, jnp.int32)
        p = self.params
        ranges = list(self._ranges(graph.num_edges))
        chunks = [edges_host.chunk(rows, size) for rows in ranges]
        degree = sum(self._program(num_nodes, "degree", num_nodes)(p, chunk) for chunk in chunks)
        inv = inverse_sqrt_degree(degree)
        terms = None
        for chunk in chunks:
            part = self._program(num_nodes, "node_terms")(z, chunk)
            terms = part if terms is None else jax.tree.map(jnp.add, terms, part)
        nodes = self._program(num_nodes, "initial_nodes")(p, z)
        edges = np.empty((graph.num_edges, self.irreps.dim), dtype=np.dtype(nodes.dtype))
        for rows, chunk in zip(ranges, chunks, strict=True):
            edges[rows] = np.asarray(self._program(num_nodes, "initial_edges")(p, chunk))[: rows.shape[0]]
        for index in range(self.num_blocks):
            summed = None
            for rows, chunk in zip(ranges, chunks, strict=True):
                part = self._program(num_nodes, "messages", index)(
                    p, nodes, _padded(edges, rows, size), chunk
                )
                summed = part if summed is None else summed + part
            nodes = self._program(num_nodes, "nodes", index)(p, nodes, summed, inv)
            for rows, chunk in zip(ranges, chunks, strict=True):
                updated = self._program(num_nodes, "edges", index)(
                    p, nodes, _padded(edges, rows, size), chunk
                )
                edges[rows] = np.asarray(updated)[: rows.shape[0]]
        return np.asarray(nodes), edges, terms

    def blocks(
        self,
        graph: StructureGraph,
        nodes: np.ndarray,
        edges: np.ndarray,
        terms: Any,
        rows: np.ndarray,
    ) -> np.ndarray:
        """Physical (len(rows), b, b) blocks (eV for H, zero outside label_mask) of the edges ``rows``
        (at most ``chunk_edges``), from :meth:`features`."""
        size = self.chunk_edges
        if rows.shape[0] > size:
            raise ValueError(f"{rows.shape[0]} rows do not fit a chunk of {size} edges")
        onsite = self._onsite_cache(nodes)
        edges_host = _Edges(
            np.asarray(graph.edge_vec), np.asarray(graph.edge_onsite), graph.edge_src, graph.edge_dst
        )
        chunk = edges_host.chunk(rows, size)
        mask = np.zeros((size, *graph.label_mask.shape[1:]), bool)
        mask[: rows.shape[0]] = graph.label_mask[rows]
        z = jnp.asarray(graph.atomic_numbers, jnp.int32)
        out = self._program(graph.num_nodes, "blocks")(
            self.params, onsite, _padded(edges, rows, size), chunk, z, mask, terms
        )
        return np.asarray(out)[: rows.shape[0]]

    def _onsite_cache(self, nodes: np.ndarray) -> jnp.ndarray:
        if self._onsite is None or self._onsite[0] is not nodes:
            self._onsite = (nodes, self._program(nodes.shape[0], "onsite")(self.params, nodes))
        return self._onsite[1]


def _padded(array: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """array[rows] padded with zero rows to ``size``."""
    out = np.zeros((size, *array.shape[1:]), array.dtype)
    out[: rows.shape[0]] = array[rows]
    return out


def _normaliser_batch(z: jnp.ndarray, chunk: EdgeChunk, mask: jnp.ndarray) -> GraphBatch:
    """A GraphBatch of one chunk with what Normaliser.physical reads (the rest empty)."""
    num_nodes = z.shape[0]
    empty = jnp.zeros((chunk.edge_src.shape[0], 1, 1), jnp.float32)
    return GraphBatch(
        atomic_numbers=z,
        node_graph=jnp.zeros(num_nodes, jnp.int32),
        node_mask=jnp.ones(num_nodes, bool),
        edge_src=chunk.edge_src,
        edge_dst=chunk.edge_dst,
        edge_vec=chunk.edge_vec,
        edge_onsite=chunk.edge_onsite,
        edge_graph=jnp.zeros(chunk.edge_src.shape[0], jnp.int32),
        edge_mask=chunk.edge_mask,
        graph_mask=jnp.ones(1, bool),
        labels=empty,
        label_mask=mask,
        overlap=empty,
    )


def predict_large_graph(
    path: Any,
    graph: StructureGraph,
    network: ChunkedNetwork,
    basis: Any,
    elements_orbital_map: Any,
    *,
    symmetrize: bool,
    dtype: Any,
    timings: dict[str, float] | None = None,
) -> None:
    """Predict ``graph`` chunk by chunk and write its prediction file ``path`` slice by slice
    (hamflow.infer.stream_write). ``timings`` (if given) gets the seconds of the "network" (backbone)
    and "write" (readout, normaliser and writing) phases added."""
    import time

    from hamflow.infer.stream_write import write_streamed_prediction

    started = time.perf_counter()
    network.build_ahead(graph)
    nodes, edges, terms = network.features(graph)
    backbone = time.perf_counter()

    def blocks_of(rows: np.ndarray) -> np.ndarray:
        return network.blocks(graph, nodes, edges, terms, rows)

    write_streamed_prediction(
        path,
        graph,
        blocks_of,
        network.chunk_edges,
        basis,
        elements_orbital_map,
        spin=network.spinful,
        symmetrize=symmetrize,
        dtype=dtype,
    )
    done = time.perf_counter()
    LOG.info(
        "%s: %d atoms, %d edges in chunks of %d: backbone %.1f s, readout + writing %.1f s",
        graph.sid,
        graph.num_nodes,
        graph.num_edges,
        network.chunk_edges,
        backbone - started,
        done - backbone,
    )
    if timings is not None:
        timings["network"] = timings.get("network", 0.0) + backbone - started
        timings["write"] = timings.get("write", 0.0) + done - backbone
