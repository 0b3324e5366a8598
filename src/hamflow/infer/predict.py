"""Prediction with a trained model: load it, predict every edge's block in batches, make the blocks
Hermitian, write DeepH-format prediction files.

The network predicts normalised blocks in the common orbital basis (E, B, B) (spinful: (E, 2B, 2B)
complex); the physical prediction is ``raw * scale + offset`` with the run's target normaliser (eV for
H, electrons for Rho). Entries outside ``label_mask`` (orbital slots an atom does not have; for S
graphs the shell pairs whose overlap is below the threshold) are zero. Each structure's blocks are cut
back to its atoms' orbitals (:func:`hamflow.graph.structure_graph.unpad_edges`).

Batches follow the same shape buckets as training (:mod:`hamflow.graph.buckets`: ``multi_way_jit_num``
compiled shapes, each batch split over the selected devices along a leading device axis).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hamflow.data.matrix_h5 import BlockMatrix, write_matrix_h5
from hamflow.errors import DataError
from hamflow.graph.basis import CommonBasis
from hamflow.graph.batch import GraphBatch
from hamflow.graph.buckets import epoch_batches, plan_buckets
from hamflow.graph.collate import collate
from hamflow.graph.structure_graph import StructureGraph, unpad_edges
from hamflow.train.checkpoint import CheckpointInfo, RunLayout
from hamflow.train.normaliser import Normaliser
from hamflow.train.saved_model import (
    ModelSpec,
    find_params,
    load_normaliser,
    load_params,
    resolve_model_dir,
)

LOG = logging.getLogger(__name__)

ApplyFn = Callable[[Any, GraphBatch], jnp.ndarray]


class GraphSource(Protocol):
    """What prediction reads graphs from (a :class:`hamflow.graph.store.GraphStore` or a list wrapper)."""

    @property
    def num_nodes(self) -> np.ndarray: ...

    @property
    def num_edges(self) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def get(self, index: int) -> StructureGraph: ...


@dataclass
class TrainedModel:
    """A trained network ready to predict.

    apply_fn(params, batch) -> raw (E, B, B) blocks (normalised units); ``normaliser`` turns them
    into eV (H) or electrons (Rho). ``checkpoint`` is the parameter folder that was loaded; ``module``
    the flax module itself (for the chunked prediction of large structures, hamflow.infer.chunked).
    """

    layout: RunLayout
    spec: ModelSpec
    basis: CommonBasis
    normaliser: Normaliser
    params: Any
    apply_fn: ApplyFn
    checkpoint: CheckpointInfo
    module: Any = None


def load_model_spec(model_dir: str | Path) -> tuple[RunLayout, ModelSpec]:
    """The run layout and model description of a run directory or its ``model/`` folder."""
    layout = resolve_model_dir(model_dir)
    return layout, ModelSpec.load(layout.model_json)


def _check_shapes(params: Any, template: Any, folder: Path) -> None:
    loaded = jax.tree_util.tree_leaves_with_path(params)
    expected = jax.tree_util.tree_leaves_with_path(template)
    if len(loaded) != len(expected):
        raise DataError(
            f"checkpoint holds {len(loaded)} arrays but model.json describes {len(expected)}", file=folder
        )
    for (path, array), (_, want) in zip(loaded, expected, strict=True):
        if tuple(np.shape(array)) != tuple(want.shape):
            name = jax.tree_util.keystr(path)
            raise DataError(
                f"parameter {name} has shape {np.shape(array)}, model.json gives {tuple(want.shape)}",
                file=folder,
            )


def load_trained_model(
    model_dir: str | Path,
    example_batch: GraphBatch,
    *,
    load_model_type: str = "best",
    load_model_epoch: int = -1,
    compute_dtype: Any = jnp.float32,
) -> TrainedModel:
    """Rebuild the network of ``model_dir`` (a run directory or its model/ folder) and load its weights.

    ``example_batch`` (one unstacked GraphBatch of the data to predict) gives the parameter shapes;
    DataError when the run has no such checkpoint or its arrays do not fit model.json.
    """
    from hamflow.train.saved_model import build_network

    layout, spec = load_model_spec(model_dir)
    module = build_network(spec, compute_dtype)
    template = jax.eval_shape(module.init, jax.random.PRNGKey(0), example_batch)["params"]
    info = find_params(layout, load_model_type, load_model_epoch)
    params = load_params(info, template)
    _check_shapes(params, template, info.path)
    params = jax.tree_util.tree_map(jnp.asarray, params)

    def apply_fn(p: Any, batch: GraphBatch) -> jnp.ndarray:
        return module.apply({"params": p}, batch)

    LOG.info("loaded %s model from %s (epoch %s)", spec.net_type, info.path, info.epoch)
    return TrainedModel(
        layout=layout,
        spec=spec,
        basis=CommonBasis(tuple(spec.shell_ls)),
        normaliser=load_normaliser(layout),
        params=params,
        apply_fn=apply_fn,
        checkpoint=info,
        module=module,
    )


def make_predict_fn(
    apply_fn: ApplyFn, normaliser: Normaliser, *, spinful: bool, out_dtype: Any
) -> Callable[[Any, GraphBatch], jnp.ndarray]:
    """Jitted ``(params, stacked batch) -> (D, E, b, b)`` physical blocks (eV for H), zero outside
    ``label_mask``. ``out_dtype``: float32/float64 (complex64/complex128 when spinful)."""

    def one(params: Any, batch: GraphBatch) -> jnp.ndarray:
        raw = apply_fn(params, batch)
        prediction, _ = normaliser.physical(raw, batch, spinful=spinful, dtype=out_dtype)
        return jnp.where(batch.label_mask, prediction.astype(out_dtype), 0)

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def example_batch(graph: StructureGraph) -> GraphBatch:
    """One graph as an unpadded GraphBatch (for shapes, e.g. the parameter template)."""
    return collate([graph], num_nodes=graph.num_nodes, num_edges=graph.num_edges, num_graphs=1)


def predict_graphs(
    source: GraphSource,
    predict_fn: Callable[[Any, GraphBatch], jnp.ndarray],
    params: Any,
    *,
    batch_size: int = 1,
    multi_way_jit_num: int = 1,
    devices: Sequence[Any] | None = None,
) -> Iterator[tuple[StructureGraph, np.ndarray]]:
    """Yield (graph, blocks (E, b, b) numpy) for every graph of ``source``, batch by batch.

    A batch of ``batch_size`` graphs (at most all of them) is split over ``devices`` (default: JAX's
    first device) and padded to its bucket's shape; padding edges and filler graphs are dropped from
    the output.
    """
    if len(source) == 0:
        return
    devices = list(devices) if devices else [jax.devices()[0]]
    plan = plan_buckets(
        np.asarray(source.num_nodes),
        np.asarray(source.num_edges),
        batch_size=min(batch_size, len(source)),
        max_buckets=multi_way_jit_num,
        num_devices=len(devices),
    )
    mesh = Mesh(np.asarray(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    LOG.info(
        "prediction buckets: %s (nodes, edges, graphs per device)",
        [(s.num_nodes, s.num_edges, s.num_graphs) for s in plan.shapes],
    )
    for bucket, members in epoch_batches(plan, seed=0, epoch=0, shuffle=False):
        shape = plan.shapes[bucket]
        graphs = [source.get(int(m)) for m in members]
        per = shape.num_graphs
        shares = [graphs[d * per : (d + 1) * per] for d in range(len(devices))]
        batches = [
            collate(
                share or graphs[:1],
                num_nodes=shape.num_nodes,
                num_edges=shape.num_edges,
                num_graphs=shape.num_graphs,
            )
            for share in shares
        ]
        stacked = GraphBatch(*(np.stack(field) for field in zip(*batches, strict=True)))
        blocks = np.asarray(jax.device_get(predict_fn(params, jax.device_put(stacked, batch_sharding))))
        for device, share in enumerate(shares):
            start = 0
            for graph in share:
                yield graph, blocks[device, start : start + graph.num_edges]
                start += graph.num_edges


def symmetrize_hermitian(matrix: BlockMatrix) -> BlockMatrix:
    """Make M(R)_ij = M(-R)_ji^H: each block becomes the mean of itself and its mirror's conjugate
    transpose; a pair whose mirror is missing gets it appended. Pair order is kept (mirrors last)."""
    pairs = np.asarray(matrix.atom_pairs, dtype=np.int64)
    index = matrix.pair_index()
    blocks = [matrix.block(n) for n in range(matrix.num_pairs)]
    new_blocks: list[np.ndarray] = []
    extra_pairs: list[list[int]] = []
    extra_blocks: list[np.ndarray] = []
    for n, block in enumerate(blocks):
        r1, r2, r3, i, j = (int(v) for v in pairs[n])
        mirror = index.get((-r1, -r2, -r3, j, i))
        if mirror is None:
            new_blocks.append(block)
            extra_pairs.append([-r1, -r2, -r3, j, i])
            extra_blocks.append(block.conj().T)
            continue
        partner = blocks[mirror]
        if partner.shape != block.shape[::-1]:
            raise DataError(
                f"pair {pairs[n].tolist()} has block shape {block.shape} but its mirror {partner.shape}",
                key="chunk_shapes",
            )
        new_blocks.append(0.5 * (block + partner.conj().T))
    all_pairs = [row.tolist() for row in pairs] + extra_pairs
    return BlockMatrix.from_blocks(all_pairs, new_blocks + extra_blocks)


def graph_prediction(
    graph: StructureGraph,
    blocks: np.ndarray,
    basis: CommonBasis,
    elements_orbital_map: dict[str, Sequence[int]],
    *,
    symmetrize: bool = True,
) -> BlockMatrix:
    """The padded (E, b, b) blocks of one graph as a DeepH BlockMatrix of its atoms' real orbitals."""
    matrix = unpad_edges(np.asarray(blocks), graph, basis, elements_orbital_map)
    return symmetrize_hermitian(matrix) if symmetrize else matrix


def output_dtype(float_type: str, spinful: bool) -> np.dtype:
    """Entries' dtype of a prediction file: float64 (complex128) for fp64, float32 (complex64) else."""
    real = np.float64 if float_type == "fp64" else np.float32
    return np.dtype(np.result_type(real, np.complex64) if spinful else real)


def write_prediction(path: str | Path, matrix: BlockMatrix, dtype: Any) -> None:
    """Write one prediction file (DeepH format) atomically with entries of ``dtype``."""
    write_matrix_h5(path, matrix, dtype=np.dtype(dtype))
