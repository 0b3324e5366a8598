"""The data of a training run: the graph store, the split, the bucket plan and device batches.

:func:`open_data` opens (or builds) the graph store and chooses the split; :func:`plan_batches` plans
the shape buckets of the training structures (``multi_way_jit_num`` shapes) and fits the validation
structures into them; a :class:`Batcher` collates one bucket's members into a stacked GraphBatch
(one share per device) and places it on the devices. Training and the benchmarks use these alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hamflow.errors import ConfigError, DataError
from hamflow.graph.batch import GraphBatch
from hamflow.graph.buckets import BucketPlan, assign_to_plan, epoch_batches, padding_waste, plan_buckets

if TYPE_CHECKING:
    from hamflow.config.train_config import TrainConfig
    from hamflow.graph.basis import CommonBasis
    from hamflow.graph.store import GraphStore

LOG = logging.getLogger(__name__)

#: The parts of a split, in the order the index lists them.
PARTS = ("train", "validate", "test")


@dataclass
class TrainData:
    """An open graph store and the split of its structures.

    ``split``: {part: [structure id, ...]}; ``index``: {part: [position in the store, ...]} for
    ``train``, ``validate`` and ``test`` (empty lists for absent parts).
    """

    store: GraphStore
    basis: CommonBasis
    split: dict[str, list[str]]
    index: dict[str, list[int]]


def requested_split(
    cfg: TrainConfig, ids: list[str], split_path: Path | None
) -> tuple[dict[str, list[str]], str]:
    """The split the configuration and ``--split`` ask for, and the key that asks for it."""
    from hamflow.data.split import load_split, make_split

    dl = cfg.process.train.dataloader
    if split_path:
        return load_split(split_path, ids), "--split"
    if dl.dataset_split_json:
        return load_split(dl.dataset_split_json, ids), "process.train.dataloader.dataset_split_json"
    split = make_split(
        ids,
        train_size=dl.train_size,
        validate_size=dl.validate_size,
        test_size=dl.test_size,
        seed=cfg.system.random_seed,
    )
    return split, "process.train.dataloader.train_size/validate_size/test_size"


def check_resumed_split(requested: dict[str, list[str]], key: str, run_split: Path, ids: list[str]) -> None:
    """Refuse (one line) to resume checkpoints trained on another split than the one asked for."""
    from hamflow.data.split import SPLIT_PARTS, load_split

    if not run_split.is_file():
        return
    recorded = load_split(run_split, ids)
    differ = [part for part in SPLIT_PARTS if set(recorded.get(part, [])) != set(requested.get(part, []))]
    if differ:
        sizes = ", ".join(f"{part} {len(requested.get(part, []))}" for part in SPLIT_PARTS)
        raise ConfigError(
            key,
            f"asks for a split ({sizes}) whose {'/'.join(differ)} part differs from {run_split}, the split "
            "the checkpoints of this run folder were trained on: resume with that split, or give "
            "another --run-dir",
        )


def open_data(
    cfg: TrainConfig,
    graph_store: str | Path | None,
    split_path: str | Path | None,
    run_split: Path | None = None,
    *,
    resuming: bool = False,
) -> TrainData:
    """Open (or build) the graph store and choose the split: always the one ``cfg`` and ``--split``
    ask for; when ``resuming``, it must equal the run folder's ``dataset_split.json`` (``run_split``)."""
    from hamflow.graph.stage import build_graph_store, open_graph_store

    path = Path(graph_store) if graph_store else build_graph_store(cfg)
    store = open_graph_store(cfg, path)
    ids = list(store.ids)
    split, key = requested_split(cfg, ids, Path(split_path) if split_path else None)
    if resuming and run_split is not None:
        check_resumed_split(split, key, run_split, ids)
    position = {sid: n for n, sid in enumerate(ids)}
    missing = [sid for part in split.values() for sid in part if sid not in position]
    if missing:
        raise DataError(
            f"{len(missing)} structure(s) of the split are not in the graph store (first: {missing[0]})",
            file=path,
        )
    if not split.get("train"):
        raise ConfigError("process.train.dataloader.train_size", "the training split is empty")
    index = {part: [position[sid] for sid in split.get(part, [])] for part in PARTS}
    return TrainData(store=store, basis=store.meta.basis, split=split, index=index)


class Batcher:
    """Collates batches of a bucket plan into stacked, device-placed GraphBatches."""

    def __init__(
        self, store: GraphStore, indices: Sequence[int], plan: BucketPlan, devices: list, dtype: Any
    ) -> None:
        from hamflow.graph.collate import collate

        self._collate = collate
        self.store = store
        self.indices = np.asarray(indices)
        self.plan = plan
        self.num_devices = len(devices)
        # (position in the mesh, device) of this process's devices: the shares it feeds
        self._local = [
            (position, device)
            for position, device in enumerate(devices)
            if device.process_index == jax.process_index()
        ]
        self.dtype = dtype
        mesh = Mesh(np.asarray(devices), ("data",))
        self.sharding = NamedSharding(mesh, PartitionSpec("data"))

    def share(self, bucket: int, members: np.ndarray, position: int) -> GraphBatch:
        """Device ``position``'s share of the batch of plan members ``members`` of ``bucket``: the
        members ``position * g .. (position + 1) * g - 1`` (g graphs per device) collated, on the host."""
        shape = self.plan.shapes[bucket]
        per = shape.num_graphs
        mine = members[position * per : (position + 1) * per]
        graphs = [self.store.get(int(self.indices[m])) for m in mine]
        return self._collate(
            graphs, num_nodes=shape.num_nodes, num_edges=shape.num_edges, num_graphs=shape.num_graphs
        )

    def host_batch(self, bucket: int, members: np.ndarray) -> GraphBatch:
        """The batch of plan members ``members`` of ``bucket`` on the host: arrays (num_devices, ...)."""
        shares = [self.share(bucket, members, d) for d in range(self.num_devices)]
        return GraphBatch(*(np.stack(field) for field in zip(*shares, strict=True)))

    def device_batch(self, bucket: int, members: np.ndarray) -> GraphBatch:
        """The batch as global arrays sharded over the devices' axis (num_devices, ...). Every process
        plans the same batch (same seed, same order) and collates and places only the shares of its
        own devices; in a multi-process run the others' shares come from their processes."""
        local = self._local
        shares = [self.share(bucket, members, position) for position, _ in local]
        targets = [device for _, device in local]
        fields = []
        for values in zip(*shares, strict=True):
            pieces = jax.device_put([np.asarray(v)[None] for v in values], targets)
            shape = (self.num_devices, *np.shape(values[0]))
            fields.append(jax.make_array_from_single_device_arrays(shape, self.sharding, pieces))
        return GraphBatch(*fields)

    def example(self, bucket: int = 0) -> GraphBatch:
        """The host batch of the first members of ``bucket`` (at most one batch): shapes for init."""
        members = self.plan.groups[bucket][: min(self.plan.batch_size, len(self.plan.groups[bucket]))]
        return self.host_batch(bucket, members)


def split_sizes(store: GraphStore, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, edges) of the store's structures at ``indices``."""
    idx = np.asarray(indices, dtype=np.int64)
    return np.asarray(store.num_nodes)[idx], np.asarray(store.num_edges)[idx]


@dataclass
class Batches:
    """The bucket plan of a run and its batchers; ``validate`` is None without validation structures.

    ``steps_per_epoch``: optimizer steps of one epoch (batches of the plan).
    """

    plan: BucketPlan
    train: Batcher
    validate: Batcher | None
    steps_per_epoch: int


def plan_batches(cfg: TrainConfig, data: TrainData, devices: list, label_dtype: Any) -> Batches:
    """Plan the shape buckets of the training structures and the batchers of train and validate."""
    tcfg = cfg.process.train
    tr_nodes, tr_edges = split_sizes(data.store, data.index["train"])
    plan = plan_buckets(
        tr_nodes,
        tr_edges,
        batch_size=tcfg.dataloader.batch_size,
        max_buckets=tcfg.multi_way_jit_num,
        num_devices=len(devices),
    )
    LOG.info(
        "buckets: %d shape(s) %s; padding waste %.1f%%",
        len(plan.shapes),
        [(s.num_nodes, s.num_edges, s.num_graphs) for s in plan.shapes],
        100 * padding_waste(plan, tr_edges),
    )
    train_batcher = Batcher(data.store, data.index["train"], plan, devices, label_dtype)
    val_batcher = None
    if data.index["validate"]:
        v_nodes, v_edges = split_sizes(data.store, data.index["validate"])
        val_plan = assign_to_plan(plan, v_nodes, v_edges)
        val_batcher = Batcher(data.store, data.index["validate"], val_plan, devices, label_dtype)
    steps_per_epoch = len(epoch_batches(plan, seed=0, epoch=0, shuffle=False))
    return Batches(plan=plan, train=train_batcher, validate=val_batcher, steps_per_epoch=steps_per_epoch)
