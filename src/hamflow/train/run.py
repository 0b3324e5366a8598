"""``hamflow train``: one training run from a resolved train.toml to a DeepH-pack run directory.

The shape follows the flax examples: :func:`train` reads top to bottom as its steps - open the run
folder, set up the runtime, choose between resuming and starting fresh, open the data, build the
model, plan the buckets, restore or initialise the state, compile, fit, test, finish. The steps live
in their modules: :mod:`hamflow.train.run_dir` (folder, lock, metrics), :mod:`hamflow.train.data`
(store, split, buckets, batches), :mod:`hamflow.train.state` (fresh / resume / continue /
fine-tune, checkpoints), :mod:`hamflow.train.loop` (epochs, stop rules, signals),
:mod:`hamflow.train.test_pass` (the final per-structure test pass) and the pure step functions of
:mod:`hamflow.train.step`. See ``docs/training.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hamflow.atomic import atomic_write_text
from hamflow.config.logging_setup import LOGGER_NAME, configure_logging
from hamflow.errors import HamflowError, os_errors
from hamflow.graph.batch import GraphBatch
from hamflow.train import checkpoint as ckpt
from hamflow.train.data import Batches, TrainData, open_data, plan_batches
from hamflow.train.loop import (
    Compiled,
    InterruptedBeforeTraining,
    NonFiniteLoss,
    SignalFlag,
    TrainingInterrupted,
    compile_buckets,
    fit,
)
from hamflow.train.program_cache import run_program_cache
from hamflow.train.run_dir import METRICS_COLUMNS, make_run_dir, new_run_dir
from hamflow.train.saved_model import ModelSpec, build_network
from hamflow.train.state import (
    RunState,
    choose_resume,
    finetune_source,
    resolve_spec,
    restore_or_initialize,
    save_latest,
)
from hamflow.train.step import dropout_steps, make_steps

if TYPE_CHECKING:
    import flax.linen as nn

    from hamflow.config.train_config import TrainConfig

LOG = logging.getLogger(__name__)

__all__ = [
    "METRICS_COLUMNS",
    "InterruptedBeforeTraining",
    "NonFiniteLoss",
    "TrainResult",
    "TrainingInterrupted",
    "build_network",
    "join_slurm_processes",
    "new_run_dir",
    "train",
]


@dataclass
class TrainResult:
    """Where the run is and how it ended."""

    run_dir: Path
    epochs_done: int
    best_loss: float
    stopped_because: str


def train(
    cfg: TrainConfig,
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
    if cfg.data.graph.only_save_graph:
        return _only_save_graph(cfg)
    joined = join_slurm_processes()
    # with several processes (nodes) all compute alike; only process 0 writes the run directory
    writer = jax.process_index() == 0
    layout = ckpt.RunLayout(Path(run_dir) if run_dir else new_run_dir(cfg.data.outputs_dir))
    # one trainer per run folder: the lock is held until train() returns or the process ends
    lock = make_run_dir(layout) if writer else None
    # joined: a process must not leave before the loop while the others wait for it in a collective;
    # the loop's first batches see the signal and all processes stop together (StopVote)
    flag = SignalFlag(raise_in=None if joined else layout.root)
    handler = _setup_logging(layout, cfg.system.log_level, writer=writer)
    phases = {"start": time.perf_counter()}  # the start-up line (log_start_up) at the first step
    compiled = None
    try:
        flag.install()
        policy, devices = _runtime(cfg, layout, joined=joined)
        phases["runtime"] = time.perf_counter()
        resuming = choose_resume(cfg, layout, writer=writer)
        data = open_data(cfg, graph_store, split_path, layout.split, resuming=resuming is not None)
        phases["data"] = time.perf_counter()
        _record_split(layout, data, graph_store, writer=writer)
        source = finetune_source(cfg, resuming)
        spec = resolve_spec(cfg, data, source, layout, writer=writer)
        model = build_network(spec, policy.compute_dtype, cfg.process.train.drop.dropout_rate)
        batches = plan_batches(cfg, data, devices, policy.label_dtype)
        total_steps, scale_fn = _schedule(cfg, batches)
        phases["buckets"] = time.perf_counter()
        run = restore_or_initialize(
            cfg,
            layout,
            model,
            spec,
            data,
            batches.train.example(),
            resuming=resuming,
            source=source,
            writer=writer,
        )
        phases["state"] = time.perf_counter()
        compiled = _compile(cfg, model, spec, run, data, batches, devices)
        phases["compile jobs"] = time.perf_counter()  # the programs build in the background
        first_epoch = run.progress.epoch
        # from here a signal is only recorded, and the loop saves a checkpoint and stops
        flag.raise_in = None
        try:
            stopped = fit(
                cfg,
                layout,
                run.progress,
                compiled,
                batches,
                flag,
                scale_fn=scale_fn,
                total_steps=total_steps,
                target_type=spec.target_type,
                writer=writer,
                phases=phases,
            )
        finally:
            flag.restore()
        save_latest(layout, run.progress, keep=cfg.data.model_save.latest_num)
        # a signal during the test pass stops it (nothing written) and the run, as in the loop
        flag.signum = None
        flag.install()
        trained = run.progress.epoch > first_epoch
        _test_pass(cfg, layout, run, compiled, data, batches, trained=trained, writer=writer, flag=flag)
        if flag.signum is not None:
            raise TrainingInterrupted(flag.signum, layout.root)
        return _finish(layout, run, stopped, writer=writer)
    finally:
        if compiled is not None:
            compiled.stop()
        flag.restore()
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        handler.close()
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------ the steps of train()


def _only_save_graph(cfg: TrainConfig) -> TrainResult:
    """``only_save_graph = true``: build the graph store and stop."""
    from hamflow.graph.stage import build_graph_store

    store = build_graph_store(cfg)
    LOG.info("only_save_graph = true: graph store %s written, no training", store)
    return TrainResult(Path(store), 0, math.nan, "only_save_graph")


def _setup_logging(layout: ckpt.RunLayout, level: str, *, writer: bool) -> logging.Handler:
    return configure_logging(layout.log if writer else None, level)


#: The environment of a multi-process run started by hand (outside SLURM), one process per command.
COORDINATOR_VARIABLE = "HAMFLOW_COORDINATOR_ADDRESS"
NUM_PROCESSES_VARIABLE = "HAMFLOW_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "HAMFLOW_PROCESS_ID"


def join_slurm_processes() -> bool:
    """Join the processes of a multi-process run into one JAX runtime; True when joined.

    Two ways to start one: inside a SLURM job step of more than one task (``srun -N 4
    --ntasks-per-node=1 hamflow train ...``), each task calls ``jax.distributed.initialize()``, which
    reads the coordinator address and ranks from SLURM's environment; or by hand, one ``hamflow
    train`` per process with ``HAMFLOW_NUM_PROCESSES`` (> 1), ``HAMFLOW_PROCESS_ID`` (0-based) and
    ``HAMFLOW_COORDINATOR_ADDRESS`` (``host:port`` of process 0, the same for all) set. On CPU the
    processes exchange gradients through JAX's gloo collectives.
    """
    manual = os.environ.get(NUM_PROCESSES_VARIABLE, "").strip()
    if manual:
        return _join_by_hand(manual)
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if tasks <= 1 or "SLURM_STEP_ID" not in os.environ:
        return False
    jax.distributed.initialize()
    return True


def _join_by_hand(count_text: str) -> bool:
    """``jax.distributed.initialize`` from the HAMFLOW_* variables (see :func:`join_slurm_processes`)."""

    def number(name: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise HamflowError(f"{name}={text!r} is not an integer") from None

    count = number(NUM_PROCESSES_VARIABLE, count_text)
    if count <= 1:
        return False
    rank_text = os.environ.get(PROCESS_ID_VARIABLE, "").strip()
    address = os.environ.get(COORDINATOR_VARIABLE, "").strip()
    if not rank_text or not address:
        raise HamflowError(
            f"{NUM_PROCESSES_VARIABLE}={count} asks for a multi-process run: set {PROCESS_ID_VARIABLE} "
            f"(0..{count - 1}) and {COORDINATOR_VARIABLE} (host:port of process 0) as well"
        )
    rank = number(PROCESS_ID_VARIABLE, rank_text)
    if not 0 <= rank < count:
        raise HamflowError(f"{PROCESS_ID_VARIABLE}={rank} is outside 0..{count - 1}")
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=rank)
    return True


def _runtime(cfg: TrainConfig, layout: ckpt.RunLayout, *, joined: bool) -> tuple[Any, list]:
    """Float policy, devices (all processes' when joined) and the compilation cache; logged."""
    from hamflow.config.device import parse_device, select_jax_devices
    from hamflow.config.precision import apply_float_type

    policy = apply_float_type(cfg.system.float_type)
    devices = select_jax_devices(parse_device(cfg.system.device))
    if joined:
        devices = global_devices(devices)
        LOG.info(
            "joined %d processes (this one: %d): %d devices in all",
            jax.process_count(),
            jax.process_index(),
            len(devices),
        )
    cache = _enable_compilation_cache(cfg)
    LOG.info("hamflow train: run directory %s", layout.root)
    LOG.info("devices: %s; float_type %s; compilation cache %s", devices, cfg.system.float_type, cache)
    return policy, devices


def global_devices(local: list) -> list:
    """The devices of every joined process that sit where ``local`` (this process's selection) sits
    in its process's device list: process by process, in JAX's device order."""
    platform = local[0].platform
    mine = [device for device in jax.devices(platform) if device.process_index == jax.process_index()]
    positions = [mine.index(device) for device in local]
    by_process: dict[int, list] = {}
    for device in jax.devices(platform):
        by_process.setdefault(device.process_index, []).append(device)
    return [by_process[process][i] for process in sorted(by_process) for i in positions]


def _enable_compilation_cache(cfg: TrainConfig) -> Path | None:
    """Create the run's cache folder and, unless the program cache keeps the programs
    (``ahead_of_time_compile``), point JAX's persistent compilation cache at it.

    With ahead-of-time programs the program cache replaces the persistent cache: an executable read
    from the persistent cache cannot be stored in the program cache (hamflow.train.program_cache), so
    with both on, a program-cache miss that the persistent cache serves (e.g. after a hamflow update
    that left the program alone) would never be stored, and every later run would trace and lower it
    again."""
    from hamflow.config.compilation_cache import use_persistent_cache
    from hamflow.config.train_config import compilation_cache_path

    path = compilation_cache_path(cfg)
    if path is not None:  # the program cache's folder too
        with os_errors("create the compilation cache folder", path):
            path.mkdir(parents=True, exist_ok=True)
    use_persistent_cache(None if cfg.process.train.ahead_of_time_compile else path)
    return path


def _record_split(layout: ckpt.RunLayout, data: TrainData, graph_store: Any, *, writer: bool) -> None:
    """Write the run's ``dataset_split.json`` and log the split's sizes."""
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


def _schedule(cfg: TrainConfig, batches: Batches) -> tuple[int, Any]:
    """The run's step count (``max_epoch`` x steps per epoch), checked against the schedule, and its
    lr-scale function."""
    from hamflow.train.schedules import learning_rate_scale, validate_against_run

    tcfg = cfg.process.train
    total_steps = tcfg.max_epoch * batches.steps_per_epoch
    validate_against_run(tcfg.scheduler, total_steps=total_steps)
    scale_fn = learning_rate_scale(
        tcfg.scheduler, init_learning_rate=tcfg.optimizer.init_learning_rate, total_steps=total_steps
    )
    return total_steps, scale_fn


def _compile(
    cfg: TrainConfig,
    model: nn.Module,
    spec: ModelSpec,
    run: RunState,
    data: TrainData,
    batches: Batches,
    devices: list,
) -> Compiled:
    """Jit the pure train and eval steps, replicate the state over the devices, compile per bucket."""

    def apply_fn(params: Any, batch: GraphBatch) -> jnp.ndarray:
        return model.apply({"params": params}, batch)

    tcfg = cfg.process.train
    train_step, eval_step = make_steps(
        apply_fn,
        run.optimizer,
        run.normaliser,
        loss_type=cfg.model.loss_type,
        standardize_gauge=cfg.model.advanced.standardize_gauge,
        spinful=spec.spinful,
        ema_decay=tcfg.ema_decay,
        **dropout_steps(model, tcfg.drop.dropout_rate, cfg.system.random_seed),
    )
    replicated = NamedSharding(Mesh(np.asarray(devices), ("data",)), PartitionSpec())
    run.progress.state = jax.device_put(run.progress.state, replicated)
    jit_train = jax.jit(train_step, donate_argnums=0)
    jit_eval = jax.jit(eval_step)
    # what the step functions close over: a program cache entry is reused only when all of it matches
    identity = {
        "model": model,
        "normaliser": run.normaliser,
        "optimizer": tcfg.optimizer.type,
        "loss_type": cfg.model.loss_type,
        "standardize_gauge": cfg.model.advanced.standardize_gauge,
        "spinful": spec.spinful,
        "ema_decay": tcfg.ema_decay,
        "dropout": [tcfg.drop.dropout_rate, cfg.system.random_seed],
    }
    return compile_buckets(
        jit_train,
        jit_eval,
        run.progress.state,
        batches.train,
        batches.validate,
        aot=tcfg.ahead_of_time_compile,
        cache=run_program_cache(cfg, devices),
        identity=identity,
        extra_eval_shapes=_test_shapes(data, batches),
        first_use=_first_buckets(cfg, run, batches),
    )


def _first_buckets(cfg: TrainConfig, run: RunState, batches: Batches) -> list[int]:
    """The train buckets in the order this run's first (or resumed) epoch uses them."""
    from hamflow.graph.buckets import epoch_batches

    epoch = run.progress.epoch + 1
    planned = epoch_batches(batches.plan, seed=cfg.system.random_seed, epoch=epoch, shuffle=True)
    return list(dict.fromkeys(bucket for bucket, _ in planned[run.progress.partial.batches_done :]))


def _test_shapes(data: TrainData, batches: Batches) -> list[tuple[Any, Any]]:
    """(bucket shape, a test structure's graph of that bucket) for each bucket the final test pass uses."""
    from hamflow.graph.buckets import assign_to_plan
    from hamflow.train.data import split_sizes

    test = data.index["test"]
    if not len(test):
        return []
    placed = assign_to_plan(batches.plan, *split_sizes(data.store, test))
    return [
        (shape, data.store.get(int(test[group[0]])))
        for shape, group in zip(placed.shapes, placed.groups, strict=True)
        if len(group)
    ]


def _test_pass(
    cfg: TrainConfig,
    layout: ckpt.RunLayout,
    run: RunState,
    compiled: Compiled,
    data: TrainData,
    batches: Batches,
    *,
    trained: bool,
    writer: bool,
    flag: SignalFlag,
) -> None:
    """The final test pass (:mod:`hamflow.train.test_pass`): DeepH-pack's ``test-step`` lines in
    ``deepx.log`` and ``test_metrics.csv``, after every run that trained an epoch, or when the run
    has no ``test_metrics.csv`` yet (a rerun of a finished run writes no second pass, one whose pass
    a signal stopped does it). Stops before the next structure once ``flag`` records a signal."""
    if not writer or not (trained or not layout.test_metrics.is_file()):
        return
    from hamflow.train.test_pass import final_test_pass

    final_test_pass(
        layout,
        compiled.eval_step,
        run.progress.state.params,
        data.store,
        data.index["test"],
        batches.plan,
        loss_type=cfg.model.loss_type,
        stop=lambda: flag.signum is not None,
        programs=compiled.evaluate_by_shape,
    )


def _finish(layout: ckpt.RunLayout, run: RunState, stopped: str, *, writer: bool) -> TrainResult:
    """``TRAINING_DONE`` (the workflow's sign that training completed), written after the final
    checkpoint and the test pass."""
    progress = run.progress
    if writer:
        summary = {"epochs": progress.epoch, "best_loss": progress.best_loss, "stopped_because": stopped}
        atomic_write_text(layout.done, json.dumps(summary, indent=1) + "\n")
    LOG.info(
        "training finished after %d epochs (%s); best loss %.6g", progress.epoch, stopped, progress.best_loss
    )
    return TrainResult(layout.root, progress.epoch, progress.best_loss, stopped)
