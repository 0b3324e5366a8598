"""``hamflow train``: one training run from a resolved train.toml to a DeepH-pack run directory.

The shape follows the flax examples: build a train state, jit one step, run a plain loop. Around
it: the run directory (log, metrics, split, resolved config, checkpoints), resumption, fine-tuning,
signals and numerical faults. See ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hamflow.atomic import atomic_write_text
from hamflow.errors import ConfigError, DataError, FileSystemError, HamflowError, Interrupted, os_errors
from hamflow.graph.batch import GraphBatch
from hamflow.train import checkpoint as ckpt
from hamflow.train.buckets import BucketPlan, assign_to_plan, epoch_batches, padding_waste, plan_buckets
from hamflow.train.normaliser import fit_normaliser
from hamflow.train.saved_model import (
    ModelSpec,
    find_params,
    load_normaliser,
    load_params,
    resolve_model_dir,
)
from hamflow.train.step import (
    StepMetrics,
    TrainState,
    dropout_steps,
    init_opt_state,
    make_optimizer,
    make_steps,
)

LOG = logging.getLogger("hamflow")

METRICS_COLUMNS = (
    "epoch",
    "step",
    "wall_time_s",
    "train_loss",
    "validate_loss",
    "validate_mae",
    "learning_rate",
    "lr_scale",
)
#: keys whose change does not invalidate checkpoints of a run being resumed
RESUME_MUTABLE_KEYS = (
    "process.train.max_epoch",
    "data.model_save",
    "system.show_train_process_bar",
    "system.log_level",
    "system.note",
    "system.device",
    "system.jax_memory_preallocate",
    "process.train.compilation_cache_dir",
    "process.train.ahead_of_time_compile",
    "process.train.multi_way_jit_num",
    "data.graph.parallel_num",
    "data.graph.storage_type",
    "data.graph.only_save_graph",
)


class TrainingInterrupted(HamflowError):
    """SIGTERM/SIGINT arrived: the latest checkpoint was saved, rerun to continue."""

    def __init__(self, signum: int, where: Path) -> None:
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received: latest checkpoint saved in {where}; rerun the same command to resume"
        )


class InterruptedBeforeTraining(Interrupted):
    """SIGTERM/SIGINT arrived before the training loop began: nothing new to save, rerun to start."""

    def __init__(self, signum: int, where: Path) -> None:
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} received before the training loop began (no new checkpoint in {where}); rerun the "
            "same command to start or resume"
        )


class NonFiniteLoss(HamflowError):
    """The loss became NaN or Inf; the last good checkpoint is kept untouched."""

    exit_code = 3


@dataclass
class _SignalFlag:
    """SIGTERM/SIGINT handler: before the loop (``raise_in``: the run folder) it raises
    :class:`InterruptedBeforeTraining` at once; in the loop it only records the signal."""

    signum: int | None = None
    previous: dict = field(default_factory=dict)
    raise_in: Path | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            # outside the main thread (e.g. a test runner's worker) no handler can be installed
            with contextlib.suppress(ValueError):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.raise_in is not None:
            raise InterruptedBeforeTraining(signum, self.raise_in)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------- run dir


def new_run_dir(outputs_dir: str | Path) -> Path:
    """``outputs_dir/<%Y-%m-%d_%H-%M-%S>`` (DeepH-pack's naming), made unique if it exists."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(outputs_dir) / stamp
    suffix = 1
    while path.exists():
        path = Path(outputs_dir) / f"{stamp}_{suffix}"
        suffix += 1
    return path


def _make_run_dir(layout: ckpt.RunLayout) -> ckpt.RunLock:
    """Create the run folder (one-line errors for a file in the way, no permission, a full disk) and
    take its lock; :class:`~hamflow.train.checkpoint.RunFolderLocked` when another trainer holds it."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise FileSystemError("create the run folder", root, "a file of that name is in the way")
    with os_errors("create the run folder", root):
        root.mkdir(parents=True, exist_ok=True)
    lock = ckpt.RunLock.acquire(root)
    try:
        with os_errors("create the model folder", layout.model):
            layout.model.mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


def _setup_logging(layout: ckpt.RunLayout, level: str, *, writer: bool) -> logging.Handler:
    from hamflow.config.logging_setup import configure_logging

    return configure_logging(layout.log if writer else None, level)


def join_slurm_processes() -> bool:
    """Join the processes of a multi-task SLURM job step into one JAX runtime.

    ``srun -N 4 --ntasks-per-node=1 hamflow train ...`` starts one hamflow per node; each calls
    ``jax.distributed.initialize()``, which reads the coordinator address and ranks from SLURM's
    environment. Returns True when joined (more than one task in the step).
    """
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if tasks <= 1 or "SLURM_STEP_ID" not in os.environ:
        return False
    jax.distributed.initialize()
    return True


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _config_changes(old: dict, new: dict) -> list[str]:
    flat_old, flat_new = _flatten(old), _flatten(new)
    changed = []
    for key in sorted(set(flat_old) | set(flat_new)):
        if any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE_KEYS):
            continue
        if flat_old.get(key) != flat_new.get(key):
            changed.append(key)
    return changed


# --------------------------------------------------------------------------------------- data


@dataclass
class _Data:
    store: Any
    basis: Any
    split: dict[str, list[str]]
    index: dict[str, list[int]]


def _has_results(layout: ckpt.RunLayout) -> bool:
    """Whether the run folder holds results worth keeping: a best model, metrics or checkpoints."""
    if layout.best.exists() or layout.metrics.exists():
        return True
    return any(parent.is_dir() and any(parent.iterdir()) for parent in (layout.latest, layout.states))


def _set_aside(layout: ckpt.RunLayout) -> Path:
    """Move ``model/``, ``dataset_split.json``, ``metrics.csv``, ``test_metrics.csv`` and ``TRAINING_DONE``
    into a new ``model.replaced-<time>`` folder of the run (nothing is overwritten); recreate ``model/``."""
    stamp = f"model.replaced-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    aside = layout.root / stamp
    suffix = 1
    while aside.exists():
        aside, suffix = layout.root / f"{stamp}_{suffix}", suffix + 1
    with os_errors("move the previous results aside into", aside):
        layout.model.rename(aside)
        layout.model.mkdir(parents=True)
        for stale in (layout.split, layout.metrics, layout.test_metrics, layout.done):
            if stale.exists():
                stale.rename(aside / stale.name)
    return aside


def _requested_split(cfg: Any, ids: list[str], split_path: Path | None) -> tuple[dict[str, list[str]], str]:
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


def _check_resumed_split(requested: dict[str, list[str]], key: str, run_split: Path, ids: list[str]) -> None:
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


def _open_data(
    cfg: Any, graph_store: Path | None, split_path: Path | None, run_split: Path, *, resuming: bool
) -> _Data:
    """Open (or build) the graph store and choose the split: always the one ``cfg`` and ``--split``
    ask for; when ``resuming``, it must equal the run folder's ``dataset_split.json``."""
    from hamflow.graph.stage import build_graph_store, open_graph_store

    path = Path(graph_store) if graph_store else build_graph_store(cfg)
    store = open_graph_store(cfg, path)
    ids = list(store.ids)
    split, key = _requested_split(cfg, ids, split_path)
    if resuming:
        _check_resumed_split(split, key, run_split, ids)
    position = {sid: n for n, sid in enumerate(ids)}
    missing = [sid for part in split.values() for sid in part if sid not in position]
    if missing:
        raise DataError(
            f"{len(missing)} structure(s) of the split are not in the graph store (first: {missing[0]})",
            file=path,
        )
    if not split.get("train"):
        raise ConfigError("process.train.dataloader.train_size", "the training split is empty")
    index = {part: [position[sid] for sid in split.get(part, [])] for part in ("train", "validate", "test")}
    return _Data(store=store, basis=store.meta.basis, split=split, index=index)


class _Batcher:
    """Collates batches of a bucket plan into stacked, device-placed GraphBatches."""

    def __init__(
        self, store: Any, indices: Sequence[int], plan: BucketPlan, devices: list, dtype: Any
    ) -> None:
        from hamflow.graph.collate import collate

        self._collate = collate
        self.store = store
        self.indices = np.asarray(indices)
        self.plan = plan
        self.num_devices = len(devices)
        self.dtype = dtype
        mesh = Mesh(np.asarray(devices), ("data",))
        self.sharding = NamedSharding(mesh, PartitionSpec("data"))

    def host_batch(self, bucket: int, members: np.ndarray) -> GraphBatch:
        shape = self.plan.shapes[bucket]
        graphs = [self.store.get(int(self.indices[m])) for m in members]
        per = shape.num_graphs
        shares = [graphs[d * per : (d + 1) * per] for d in range(self.num_devices)]
        batches = [
            self._collate(
                s, num_nodes=shape.num_nodes, num_edges=shape.num_edges, num_graphs=shape.num_graphs
            )
            for s in shares
        ]
        return GraphBatch(*(np.stack(field) for field in zip(*batches, strict=True)))

    def device_batch(self, bucket: int, members: np.ndarray) -> GraphBatch:
        """The batch as global arrays sharded over the devices' axis; every process holds the whole
        host batch (same seed, same order) and places the shares of its own devices."""
        host = self.host_batch(bucket, members)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_callback(x.shape, self.sharding, lambda index: x[index]), host
        )


def _sizes(store: Any, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(indices, dtype=np.int64)
    return np.asarray(store.num_nodes)[idx], np.asarray(store.num_edges)[idx]


# --------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """Where the run is and how it ended."""

    run_dir: Path
    epochs_done: int
    best_loss: float
    stopped_because: str


def _enable_compilation_cache(cfg: Any) -> Path | None:
    """Point JAX's persistent compilation cache at the run's cache folder (every program cached)."""
    from hamflow.config.train_config import compilation_cache_path

    path = compilation_cache_path(cfg)
    if path is None:
        return None
    with os_errors("create the compilation cache folder", path):
        path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path.resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _model_spec(cfg: Any, data: _Data, store_meta: Any) -> ModelSpec:
    from hamflow.graph.irreps import check_net_irreps, default_net_irreps

    adv = cfg.model.advanced
    irreps = adv.net_irreps or default_net_irreps(
        data.basis, consider_parity=adv.consider_parity, net_type=cfg.model.net_type
    )
    check_net_irreps(irreps, data.basis, consider_parity=adv.consider_parity, net_type=cfg.model.net_type)
    return ModelSpec(
        net_type=cfg.model.net_type,
        shell_ls=tuple(int(l) for l in data.basis.shell_ls),
        net_irreps=str(irreps),
        num_blocks=int(adv.num_blocks),
        gaussian_basis_rmax=float(adv.gaussian_basis_rmax),
        consider_parity=bool(adv.consider_parity),
        spinful=bool(store_meta.spinful),
        target_type=cfg.model.target_type,
        elements_orbital_map={k: tuple(v) for k, v in store_meta.elements_orbital_map.items()},
        float_type=cfg.system.float_type,
    )


def build_network(spec: ModelSpec, compute_dtype: Any, dropout_rate: float = 0.0) -> Any:
    """The flax module described by ``spec`` (dropout: ``[process.train.drop]``, training only)."""
    from hamflow.nn.model import build_model

    return build_model(
        spec.net_type,
        spec.shell_ls,
        net_irreps=spec.net_irreps,
        num_blocks=spec.num_blocks,
        gaussian_basis_rmax=spec.gaussian_basis_rmax,
        consider_parity=spec.consider_parity,
        spinful=spec.spinful,
        dtype=compute_dtype,
        dropout_rate=dropout_rate,
    )


def _write_metrics(path: Path, rows: list[dict]) -> None:
    if jax.process_index() != 0:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train(
    cfg: Any,
    *,
    run_dir: str | Path | None = None,
    graph_store: str | Path | None = None,
    split_path: str | Path | None = None,
) -> TrainResult:
    """Train (or resume, or fine-tune) per ``cfg`` (a resolved TrainConfig); return where it ended.

    run_dir: the run directory to use; if it holds checkpoints of the same configuration, training
    resumes from its newest complete one. None: a new ``<outputs_dir>/<timestamp>/``.
    graph_store: a built graph store (else the graph stage runs first); split_path: a
    dataset_split.json (else the TOML's dataset_split_json, else sizes + random_seed).
    """
    from hamflow.config.device import parse_device, select_jax_devices
    from hamflow.config.precision import apply_float_type
    from hamflow.config.train_config import (
        dump_train_config,
        latest_save_interval,
        load_train_config,
        train_config_to_dict,
    )
    from hamflow.train.schedules import (
        learning_rate_scale,
        plateau_init,
        plateau_update,
        schedule_ends_training,
        validate_against_run,
    )

    tcfg = cfg.process.train
    if cfg.data.graph.only_save_graph:
        from hamflow.graph.stage import build_graph_store

        store = build_graph_store(cfg)
        LOG.info("only_save_graph = true: graph store %s written, no training", store)
        return TrainResult(Path(store), 0, math.nan, "only_save_graph")
    joined = join_slurm_processes()
    # with several processes (nodes) all compute alike; only process 0 writes the run directory
    writer = jax.process_index() == 0
    layout = ckpt.RunLayout(Path(run_dir) if run_dir else new_run_dir(cfg.data.outputs_dir))
    # one trainer per run folder: the lock is held until train() returns or the process ends
    lock = _make_run_dir(layout) if writer else None
    flag = _SignalFlag(raise_in=layout.root)
    handler = _setup_logging(layout, cfg.system.log_level, writer=writer)
    try:
        flag.install()
        policy = apply_float_type(cfg.system.float_type)
        devices = select_jax_devices(parse_device(cfg.system.device))
        if joined:
            kinds = {device.platform for device in devices}
            devices = [device for device in jax.devices() if device.platform in kinds]
            LOG.info("joined %d processes: %d devices in all", jax.process_count(), len(devices))
        cache = _enable_compilation_cache(cfg)
        LOG.info("hamflow train: run directory %s", layout.root)
        LOG.info("devices: %s; float_type %s; compilation cache %s", devices, cfg.system.float_type, cache)

        # ---- resume or start fresh in this run directory
        resolved = train_config_to_dict(cfg)
        resuming = ckpt.newest_resumable(layout)
        if resuming is not None and layout.train_toml.is_file():
            previous = train_config_to_dict(load_train_config(layout.train_toml))
            changes = _config_changes(previous, resolved)
            if changes:
                aside = _set_aside(layout) if writer else None
                LOG.warning(
                    "configuration changed since the checkpoints were written (%s): starting from "
                    "scratch; the old model folder was moved to %s",
                    ", ".join(changes[:5]),
                    aside,
                )
                resuming = None
        elif resuming is None and writer and _has_results(layout):
            # no resumable checkpoint (none yet, or every one torn/corrupt): keep what is still there
            aside = _set_aside(layout)
            LOG.warning(
                "no resumable checkpoint in %s: starting from scratch; the previous best model, "
                "metrics and checkpoints were moved to %s",
                layout.model,
                aside,
            )
        if writer:
            atomic_write_text(layout.train_toml, dump_train_config(cfg))

        data = _open_data(cfg, graph_store, split_path, layout.split, resuming=resuming is not None)
        from hamflow.data.split import write_split

        if writer:
            write_split(layout.split, data.split)
        LOG.info(
            "structures: %d train, %d validate, %d test (graph store %s)",
            len(data.index["train"]),
            len(data.index["validate"]),
            len(data.index["test"]),
            data.store.path if hasattr(data.store, "path") else graph_store,
        )

        # ---- continued training / fine-tuning source
        cont = tcfg.continued
        source_layout = (
            resolve_model_dir(cont.previous_output_dir) if cont.enable and resuming is None else None
        )
        spec = _model_spec(cfg, data, data.store.meta)
        if source_layout is not None:
            source_spec = ModelSpec.load(source_layout.model_json)
            if source_spec.shell_ls != spec.shell_ls or source_spec.spinful != spec.spinful:
                raise ConfigError(
                    "process.train.continued.previous_output_dir",
                    f"= {cont.previous_output_dir!r}: its orbital basis {source_spec.shell_ls} "
                    f"(spinful={source_spec.spinful}) differs from this data's {spec.shell_ls} "
                    f"(spinful={spec.spinful}); set data.graph.common_orbital_types to match",
                )
            spec = source_spec
        if writer:
            spec.save(layout.model_json)

        model = build_network(spec, policy.compute_dtype, tcfg.drop.dropout_rate)

        def apply_fn(params: Any, batch: GraphBatch) -> jnp.ndarray:
            return model.apply({"params": params}, batch)

        # ---- buckets and batches
        bs = tcfg.dataloader.batch_size
        n_dev = len(devices)
        tr_nodes, tr_edges = _sizes(data.store, data.index["train"])
        plan = plan_buckets(
            tr_nodes, tr_edges, batch_size=bs, max_buckets=tcfg.multi_way_jit_num, num_devices=n_dev
        )
        LOG.info(
            "buckets: %d shape(s) %s; padding waste %.1f%%",
            len(plan.shapes),
            [(s.num_nodes, s.num_edges, s.num_graphs) for s in plan.shapes],
            100 * padding_waste(plan, tr_edges),
        )
        train_batcher = _Batcher(data.store, data.index["train"], plan, devices, policy.label_dtype)
        val_batcher = None
        if data.index["validate"]:
            v_nodes, v_edges = _sizes(data.store, data.index["validate"])
            val_plan = assign_to_plan(plan, v_nodes, v_edges)
            val_batcher = _Batcher(data.store, data.index["validate"], val_plan, devices, policy.label_dtype)
        steps_per_epoch = len(epoch_batches(plan, seed=0, epoch=0, shuffle=False))
        total_steps = tcfg.max_epoch * steps_per_epoch
        sched = tcfg.scheduler
        validate_against_run(sched, total_steps=total_steps)
        scale_fn = learning_rate_scale(
            sched, init_learning_rate=tcfg.optimizer.init_learning_rate, total_steps=total_steps
        )

        # ---- parameters, normaliser, optimizer state
        from hamflow.nn.model import init_params

        example = train_batcher.host_batch(0, plan.groups[0][: min(bs, len(plan.groups[0]))])
        one_share = jax.tree_util.tree_map(lambda x: x[0], example)
        t0 = time.perf_counter()
        params = init_params(model, one_share, cfg.system.random_seed)["params"]
        LOG.info(
            "model %s: %d parameters (init %.1f s)", spec.net_type, _count(params), time.perf_counter() - t0
        )

        if source_layout is not None:
            info = find_params(source_layout, cont.load_model_type, cont.load_model_epoch)
            params = load_params(info, params)
            normaliser = load_normaliser(source_layout)
            LOG.info("loaded parameters from %s (epoch %s)", info.path, info.epoch)
        elif resuming is not None and layout.normaliser.is_file():
            normaliser = load_normaliser(layout)
        else:
            rng_np = np.random.default_rng(cfg.system.random_seed)
            order = rng_np.permutation(data.index["train"])
            normaliser = fit_normaliser((data.store.get(int(i)) for i in order), spec.shell_ls)
        if writer:
            normaliser.save(layout.normaliser)

        optimizer = make_optimizer(tcfg.optimizer)
        state = TrainState(
            params,
            init_opt_state(optimizer, params, ema_decay=tcfg.ema_decay),
            jnp.zeros((), jnp.int32),
            jnp.ones((), jnp.float32),
        )
        plateau = plateau_init()
        epoch = 0
        best_loss = math.inf
        partial: dict = {"batches_done": 0, "losses": [], "abs_err": 0.0, "entries": 0}
        metrics_rows: list[dict] = []
        wall_offset = 0.0

        state_template = _state_tree(state, plateau, best_loss, partial)
        if resuming is not None:
            restored = ckpt.read_payload(layout.states / f"epoch_{resuming.epoch}", state_template)
            params = ckpt.read_payload(resuming.path, params)
            state, plateau, best_loss, partial = _from_state_tree(restored, params)
            epoch = resuming.epoch
            metrics_rows = [r for r in _read_metrics(layout.metrics) if int(r["epoch"]) <= epoch]
            wall_offset = float(metrics_rows[-1]["wall_time_s"]) if metrics_rows else 0.0
            LOG.info("resuming from %s (epoch %d, step %d)", resuming.path, epoch, int(state.step))
        elif source_layout is not None and not cont.new_optimizer:
            src_info = ckpt.newest_resumable(
                source_layout, info.epoch if cont.load_model_type == "latest" else -1
            )
            if src_info is None:
                raise DataError(
                    "no optimizer state saved to continue from (set new_optimizer = true)",
                    file=source_layout.states,
                )
            restored = ckpt.read_payload(source_layout.states / f"epoch_{src_info.epoch}", state_template)
            _, plateau, best_loss, partial = _from_state_tree(restored, params)
            state = TrainState(
                params,
                restored["opt_state"],
                jnp.asarray(restored["step"], jnp.int32),
                jnp.asarray(restored["plateau_scale"], jnp.float32),
            )
            if not cont.new_training_data:
                epoch = src_info.epoch
                metrics_rows = [r for r in _read_metrics(source_layout.metrics) if int(r["epoch"]) <= epoch]
                wall_offset = float(metrics_rows[-1]["wall_time_s"]) if metrics_rows else 0.0
            else:
                state = state._replace(step=jnp.zeros((), jnp.int32))
                partial = {"batches_done": 0, "losses": [], "abs_err": 0.0, "entries": 0}
            LOG.info("continuing from %s epoch %d (optimizer state kept)", source_layout.root, src_info.epoch)

        # ---- compile
        train_step, eval_step = make_steps(
            apply_fn,
            optimizer,
            normaliser,
            loss_type=cfg.model.loss_type,
            standardize_gauge=cfg.model.advanced.standardize_gauge,
            spinful=spec.spinful,
            ema_decay=tcfg.ema_decay,
            **dropout_steps(model, tcfg.drop.dropout_rate, cfg.system.random_seed),
        )
        replicated = NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec())
        state = jax.device_put(state, replicated)
        jit_train = jax.jit(train_step, donate_argnums=0)
        jit_eval = jax.jit(eval_step)
        compiled_train, compiled_eval = _compile_buckets(
            jit_train, jit_eval, state, train_batcher, val_batcher, aot=tcfg.ahead_of_time_compile
        )

        # the schedule runs on the host, beside the compiled step: its rate is a runtime argument, so
        # a changed schedule, learning rate or max_epoch reuses the compiled programs
        host_step = int(state.step)

        # ---- loop: from here a signal is only recorded, and the loop saves a checkpoint and stops
        flag.raise_in = None
        started = time.perf_counter() - wall_offset
        first_epoch = epoch
        stopped = "max_epoch"
        monitor_train_only = tcfg.dataloader.only_use_train_loss or val_batcher is None
        try:
            while epoch < tcfg.max_epoch:
                epoch_index = epoch + 1
                batches = epoch_batches(plan, seed=cfg.system.random_seed, epoch=epoch_index, shuffle=True)
                step_metrics: list[StepMetrics] = []
                rates = _epoch_rates(tcfg, host_step, len(batches) - partial["batches_done"], total_steps)
                bar = _progress(cfg, len(batches), epoch_index, partial["batches_done"])
                for position in range(partial["batches_done"], len(batches)):
                    bucket, members = batches[position]
                    rate = rates[position - partial["batches_done"]]
                    state, metrics = compiled_train[bucket](
                        state, train_batcher.device_batch(bucket, members), rate
                    )
                    host_step += 1
                    step_metrics.append(metrics)
                    if bar is not None:
                        bar.update(1)
                    if sched.type == "reduce_on_plateau" and sched.accum_size > 0:
                        state, plateau = _plateau_steps(
                            state, plateau, step_metrics, sched, steps_per_epoch, plateau_update
                        )
                    if flag.signum is not None:
                        partial = _merge_partial(partial, step_metrics, position + 1)
                        _save_latest(layout, epoch, state, plateau, best_loss, partial, cfg)
                        raise TrainingInterrupted(flag.signum, layout.latest / f"epoch_{epoch}")
                if bar is not None:
                    bar.close()
                partial = _merge_partial(partial, step_metrics, len(batches))
                train_loss = float(np.mean(partial["losses"])) if partial["losses"] else math.nan
                lr_now = float(jax.device_get(step_metrics[-1].learning_rate)) if step_metrics else math.nan
                val_loss, val_mae = (math.nan, math.nan)
                if val_batcher is not None:
                    val_loss, val_mae = _evaluate(compiled_eval, val_batcher, state.params)
                if not all(math.isfinite(x) for x in (train_loss,) + ((val_loss,) if val_batcher else ())):
                    raise NonFiniteLoss(
                        f"epoch {epoch_index}: loss is not finite (train {train_loss}, validate {val_loss}); "
                        f"training stopped, the last good checkpoint in {layout.model} is kept"
                    )
                monitored = train_loss if monitor_train_only else val_loss
                if sched.type == "reduce_on_plateau" and sched.accum_size <= 0:
                    plateau = plateau_update(plateau, monitored, sched, steps_per_epoch=steps_per_epoch)
                    state = state._replace(plateau_scale=jnp.asarray(plateau.scale, jnp.float32))
                epoch = epoch_index
                lr_scale = (
                    float(plateau.scale)
                    if sched.type == "reduce_on_plateau"
                    else float(scale_fn(int(state.step)))
                )
                row = {
                    "epoch": epoch,
                    "step": int(state.step),
                    "wall_time_s": f"{time.perf_counter() - started:.3f}",
                    "train_loss": f"{train_loss:.8g}",
                    "validate_loss": f"{val_loss:.8g}",
                    "validate_mae": f"{val_mae:.8g}",
                    "learning_rate": f"{lr_now:.8g}",
                    "lr_scale": f"{lr_scale:.8g}",
                }
                metrics_rows.append(row)
                _write_metrics(layout.metrics, metrics_rows)
                LOG.info(
                    "epoch %d | time %.1f s | train loss %.6g | validate loss %.6g | validate MAE %.4g %s"
                    " | lr scale %.4g",
                    epoch,
                    time.perf_counter() - started,
                    train_loss,
                    val_loss,
                    val_mae * 1000.0 if spec.target_type == "H" else val_mae,
                    "meV" if spec.target_type == "H" else "",
                    lr_scale,
                )
                partial = {"batches_done": 0, "losses": [], "abs_err": 0.0, "entries": 0}
                if monitored < best_loss:
                    best_loss = monitored
                    if cfg.data.model_save.best and writer:
                        ckpt.save_best(
                            layout, state.params, {"epoch": epoch, "loss": best_loss, "step": int(state.step)}
                        )
                if cfg.data.model_save.latest and epoch % latest_save_interval(cfg) == 0:
                    _save_latest(layout, epoch, state, plateau, best_loss, partial, cfg)
                if schedule_ends_training(sched, lr_scale):
                    stopped = "min_learning_rate_scale"
                    LOG.info(
                        "learning-rate scale %.3g fell below min_learning_rate_scale: stopping", lr_scale
                    )
                    break
        finally:
            flag.restore()
        _save_latest(layout, epoch, state, plateau, best_loss, partial, cfg)
        if writer and (epoch > first_epoch or not layout.test_metrics.is_file()):
            from hamflow.train.test_pass import final_test_pass

            final_test_pass(
                layout,
                jit_eval,
                state.params,
                data.store,
                data.index["test"],
                plan,
                loss_type=cfg.model.loss_type,
            )
        if writer:
            summary = {"epochs": epoch, "best_loss": best_loss, "stopped_because": stopped}
            atomic_write_text(layout.done, json.dumps(summary, indent=1) + "\n")
        LOG.info("training finished after %d epochs (%s); best loss %.6g", epoch, stopped, best_loss)
        return TrainResult(layout.root, epoch, best_loss, stopped)
    finally:
        flag.restore()
        logging.getLogger("hamflow").removeHandler(handler)
        handler.close()
        if lock is not None:
            lock.release()


def _epoch_rates(tcfg: Any, first_step: int, count: int, total_steps: int) -> np.ndarray:
    """The schedule's learning rate (float32, (count,)) for optimizer steps first_step, ...: numpy,
    the formulas of ``hamflow schedule`` (the plateau scale is applied inside the step)."""
    from hamflow.train.schedules import schedule_table

    table = schedule_table(
        tcfg.scheduler,
        init_learning_rate=tcfg.optimizer.init_learning_rate,
        total_steps=total_steps,
        steps=range(first_step, first_step + count),
    )
    return np.asarray([rate for _, rate in table], dtype=np.float32)


def _count(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def _progress(cfg: Any, total: int, epoch: int, initial: int, stream: Any = None) -> Any:
    """The per-batch bar of one epoch on ``stream`` (stderr), or None: with
    ``show_train_process_bar = false``, and when the stream is not a terminal (a SLURM log, a pipe),
    where a bar's carriage-return redraws would only fill the file. The epoch lines are logged either way.
    """
    if not cfg.system.show_train_process_bar:
        return None
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        terminal = bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        terminal = False
    if not terminal:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", leave=False, unit="batch", file=stream)


def _merge_partial(partial: dict, step_metrics: list[StepMetrics], batches_done: int) -> dict:
    fetched = jax.device_get([(m.loss, m.abs_err, m.entries) for m in step_metrics])
    return {
        "batches_done": batches_done,
        "losses": list(partial["losses"]) + [float(loss) for loss, _, _ in fetched],
        "abs_err": float(partial["abs_err"]) + float(sum(float(a) for _, a, _ in fetched)),
        "entries": int(partial["entries"]) + int(sum(int(n) for _, _, n in fetched)),
    }


def _plateau_steps(state, plateau, step_metrics, sched, steps_per_epoch, plateau_update):
    """accum_size > 0: feed the plateau once every accum_size steps (one host sync per group)."""
    if len(step_metrics) % sched.accum_size:
        return state, plateau
    values = jax.device_get([m.loss for m in step_metrics[-sched.accum_size :]])
    for value in values:
        plateau = plateau_update(plateau, float(value), sched, steps_per_epoch=steps_per_epoch)
    return state._replace(plateau_scale=jnp.asarray(plateau.scale, jnp.float32)), plateau


def _evaluate(compiled_eval: dict, batcher: _Batcher, params: Any) -> tuple[float, float]:
    """(mean batch loss, MAE in target units) over a whole split."""
    results = []
    for bucket, members in epoch_batches(batcher.plan, seed=0, epoch=0, shuffle=False):
        results.append(compiled_eval[bucket](params, batcher.device_batch(bucket, members)))
    fetched = jax.device_get([(m.loss, m.abs_err, m.entries) for m in results])
    loss = float(np.mean([float(f[0]) for f in fetched]))
    mae = float(sum(float(f[1]) for f in fetched)) / max(sum(int(f[2]) for f in fetched), 1)
    return loss, mae


def _state_tree(state: TrainState, plateau: Any, best_loss: float, partial: dict) -> dict:
    return {
        "opt_state": state.opt_state,
        "step": np.asarray(state.step),
        "plateau_scale": np.asarray(state.plateau_scale),
        "plateau": {name: np.asarray(value) for name, value in plateau._asdict().items()},
        "best_loss": np.asarray(best_loss, np.float64),
        "partial_losses": np.asarray(partial["losses"], np.float64),
        "partial_abs_err": np.asarray(partial["abs_err"], np.float64),
        "partial_entries": np.asarray(partial["entries"], np.int64),
        "partial_batches": np.asarray(partial["batches_done"], np.int64),
    }


def _from_state_tree(tree: dict, params: Any) -> tuple[TrainState, Any, float, dict]:
    from hamflow.train.schedules import PlateauState

    plateau_fields = {name: tree["plateau"][name] for name in PlateauState._fields}
    plateau = PlateauState(**{k: (v.item() if np.ndim(v) == 0 else v) for k, v in plateau_fields.items()})
    state = TrainState(
        params,
        tree["opt_state"],
        jnp.asarray(tree["step"], jnp.int32),
        jnp.asarray(tree["plateau_scale"], jnp.float32),
    )
    partial = {
        "batches_done": int(tree["partial_batches"]),
        "losses": [float(x) for x in np.atleast_1d(tree["partial_losses"])][: int(tree["partial_batches"])],
        "abs_err": float(tree["partial_abs_err"]),
        "entries": int(tree["partial_entries"]),
    }
    return state, plateau, float(tree["best_loss"]), partial


def _save_latest(layout, epoch, state, plateau, best_loss, partial, cfg) -> None:
    host_state = jax.device_get(state)
    if jax.process_index() != 0:
        return
    meta = {"epoch": epoch, "step": int(host_state.step), "batches_done": int(partial["batches_done"])}
    ckpt.save_latest(
        layout,
        epoch,
        host_state.params,
        _state_tree(host_state, plateau, best_loss, partial),
        meta,
        keep=max(cfg.data.model_save.latest_num, 1),
    )


def _compile_buckets(jit_train, jit_eval, state, train_batcher, val_batcher, *, aot: bool):
    """Per-bucket callables. With ``aot`` every bucket's step is lowered and compiled before the
    first epoch, in parallel threads (XLA compiles outside the GIL); otherwise jit compiles lazily."""
    if not aot:
        train = dict.fromkeys(range(len(train_batcher.plan.shapes)), jit_train)
        evals = dict.fromkeys(range(len(val_batcher.plan.shapes)) if val_batcher else [], jit_eval)
        return train, evals

    def example(batcher: _Batcher, bucket: int) -> GraphBatch:
        members = batcher.plan.groups[bucket][: batcher.plan.batch_size]
        return batcher.device_batch(bucket, members)

    abstract_state = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    rate = jax.ShapeDtypeStruct((), jnp.float32, sharding=state.step.sharding)
    jobs = []
    for bucket in range(len(train_batcher.plan.shapes)):
        jobs.append(
            (
                "train",
                bucket,
                lambda b=bucket: jit_train.lower(abstract_state, example(train_batcher, b), rate).compile(),
            )
        )
    if val_batcher is not None:
        for bucket in range(len(val_batcher.plan.shapes)):
            jobs.append(
                (
                    "eval",
                    bucket,
                    lambda b=bucket: jit_eval.lower(abstract_state.params, example(val_batcher, b)).compile(),
                )
            )
    t0 = time.perf_counter()
    # one compile per core: each XLA compile holds ~1-2 GiB, more threads only add memory
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        compiled = list(pool.map(lambda job: (job[0], job[1], job[2]()), jobs))
    LOG.info("ahead-of-time compiled %d program(s) in %.1f s", len(compiled), time.perf_counter() - t0)
    train = {b: fn for kind, b, fn in compiled if kind == "train"}
    evals = {b: fn for kind, b, fn in compiled if kind == "eval"}
    return train, evals
