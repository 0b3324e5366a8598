"""The training loop: epochs of compiled steps, validation, metrics, checkpoints and the stop rules.

:func:`fit` runs epochs until ``max_epoch`` or the schedule's end (``min_learning_rate_scale``); each
epoch is the batches of the bucket plan, one compiled train step each, then a validation pass, one
``metrics.csv`` row and one ``deepx.log`` line, the best and latest checkpoints. A signal
(SIGTERM/SIGINT, :class:`SignalFlag`) is honoured at the next batch: a checkpoint at that very batch,
then :class:`TrainingInterrupted` (several processes agree on the batch first: :class:`StopVote`).
A non-finite loss stops with :class:`NonFiniteLoss`, keeping the last good checkpoint.
:func:`compile_buckets` prepares one program per bucket.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from hamflow.errors import HamflowError, Interrupted
from hamflow.graph.batch import GraphBatch
from hamflow.graph.buckets import epoch_batches
from hamflow.train import checkpoint as ckpt
from hamflow.train.background import BackgroundBuild, parallel_compiles
from hamflow.train.data import Batcher, Batches
from hamflow.train.plateau import plateau_update
from hamflow.train.program_cache import ProgramCache, signature
from hamflow.train.run_dir import write_metrics
from hamflow.train.schedules import schedule_ends_training, schedule_table
from hamflow.train.state import EpochAccumulator, TrainProgress, save_latest
from hamflow.train.step import StepMetrics

if TYPE_CHECKING:
    from hamflow.config.train_config import TrainConfig, TrainProcessConfig

LOG = logging.getLogger(__name__)


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
class SignalFlag:
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


class StopVote:
    """Whether the loop stops at this batch for a signal: the same answer in every process.

    One process: :class:`SignalFlag`'s signal itself. Several (a multi-node run): each batch, every
    process contributes its signal number (0: none) to a maximum over all devices, dispatched
    asynchronously; :meth:`poll` answers with the previous batch's vote. So all processes stop after
    the same batch, one batch after a signal reached any of them, and save the same checkpoint,
    without a host sync per step (reading the previous vote waits only for the previous step).
    """

    def __init__(self, flag: SignalFlag, sharding: Any) -> None:
        self.flag = flag
        self.pending: Any = None
        self.joined = jax.process_count() > 1
        if self.joined:
            from jax.sharding import NamedSharding, PartitionSpec

            self.sharding = sharding
            self.local_count = len(sharding.addressable_devices)
            self._max = jax.jit(jnp.max, out_shardings=NamedSharding(sharding.mesh, PartitionSpec()))

    def poll(self) -> int | None:
        """The signal to stop for now, or None to go on."""
        if not self.joined:
            return self.flag.signum
        previous = self.pending
        local = np.full((self.local_count,), self.flag.signum or 0, np.int32)
        self.pending = self._max(jax.make_array_from_process_local_data(self.sharding, local))
        if previous is None:
            return None
        return int(jax.device_get(previous)) or None


@dataclass
class Compiled:
    """The per-bucket programs: ``train[b](state, batch, rate)`` and ``evaluate[b](params, batch)``;
    ``eval_step(params, batch)``: the jitted eval step for any shape; ``evaluate_by_shape``: the
    ahead-of-time eval programs by bucket shape (the final test pass uses them where it can)."""

    train: dict
    evaluate: dict
    eval_step: Any = None
    evaluate_by_shape: dict = field(default_factory=dict)
    build: BackgroundBuild | None = None

    def stop(self) -> None:
        """Build no further program (the run is ending): those not started are dropped."""
        if self.build is not None:
            self.build.stop()


def fit(
    cfg: TrainConfig,
    layout: ckpt.RunLayout,
    progress: TrainProgress,
    compiled: Compiled,
    batches: Batches,
    flag: SignalFlag,
    *,
    scale_fn: Any,
    total_steps: int,
    target_type: str,
    writer: bool,
    phases: dict[str, float] | None = None,
) -> str:
    """Train ``progress`` in place until the run ends; return why it stopped ("max_epoch" or
    "min_learning_rate_scale"). Raises :class:`TrainingInterrupted` (checkpoint saved) on a signal and
    :class:`NonFiniteLoss` (nothing saved) on a NaN/Inf loss."""
    from hamflow.config.train_config import latest_save_interval

    tcfg = cfg.process.train
    sched = tcfg.scheduler
    keep = cfg.data.model_save.latest_num
    mid_interval = cfg.data.model_save.latest_cache_mid_step_interval
    # the schedule runs on the host, beside the compiled step: its rate is a runtime argument, so
    # a changed schedule, learning rate or max_epoch reuses the compiled programs
    host_step = int(progress.state.step)
    started = time.perf_counter() - progress.wall_offset
    monitor_train_only = tcfg.dataloader.only_use_train_loss or batches.validate is None
    vote = StopVote(flag, batches.train.sharding)
    while progress.epoch < tcfg.max_epoch:
        epoch_index = progress.epoch + 1
        plan = epoch_batches(batches.plan, seed=cfg.system.random_seed, epoch=epoch_index, shuffle=True)
        step_metrics: list[StepMetrics] = []
        first = progress.partial.batches_done
        rates = epoch_rates(tcfg, host_step, len(plan) - first, total_steps)
        bar = progress_bar(cfg, len(plan), epoch_index, first)
        for position in range(first, len(plan)):
            bucket, members = plan[position]
            progress.state, metrics = compiled.train[bucket](
                progress.state, batches.train.device_batch(bucket, members), rates[position - first]
            )
            host_step += 1
            step_metrics.append(metrics)
            if phases is not None and len(step_metrics) == 1 and epoch_index == progress.epoch + 1:
                log_start_up(phases, metrics.loss)
                phases = None
            if bar is not None:
                bar.update(1)
            if sched.type == "reduce_on_plateau" and sched.accum_size > 0:
                progress.state, progress.plateau = _plateau_steps(
                    progress.state, progress.plateau, step_metrics, sched, batches.steps_per_epoch
                )
            if ckpt.mid_step_save_due(mid_interval, host_step, position + 1, len(plan)):
                # the SIGTERM checkpoint, without stopping: the epoch's metrics so far go into it
                # and the loop keeps accumulating from the epoch's start as before
                before = progress.partial
                progress.partial = before.merge(step_metrics, position + 1)
                save_latest(layout, progress, keep=keep)
                progress.partial = before
            signum = vote.poll()
            if signum is not None:
                progress.partial = progress.partial.merge(step_metrics, position + 1)
                save_latest(layout, progress, keep=keep)
                raise TrainingInterrupted(signum, layout.latest / f"epoch_{progress.epoch}")
        if bar is not None:
            bar.close()
        progress.partial = progress.partial.merge(step_metrics, len(plan))
        train_loss = progress.partial.mean_loss()
        lr_now = float(jax.device_get(step_metrics[-1].learning_rate)) if step_metrics else math.nan
        val_loss, val_mae = (math.nan, math.nan)
        if batches.validate is not None:
            val_loss, val_mae = evaluate(compiled.evaluate, batches.validate, progress.state.params)
        if not all(math.isfinite(x) for x in (train_loss,) + ((val_loss,) if batches.validate else ())):
            raise NonFiniteLoss(
                f"epoch {epoch_index}: loss is not finite (train {train_loss}, validate {val_loss}); "
                f"training stopped, the last good checkpoint in {layout.model} is kept"
            )
        monitored = train_loss if monitor_train_only else val_loss
        if sched.type == "reduce_on_plateau" and sched.accum_size <= 0:
            progress.plateau = plateau_update(
                progress.plateau, monitored, sched, steps_per_epoch=batches.steps_per_epoch
            )
            progress.state = progress.state._replace(
                plateau_scale=jnp.asarray(progress.plateau.scale, jnp.float32)
            )
        progress.epoch = epoch_index
        lr_scale = (
            float(progress.plateau.scale)
            if sched.type == "reduce_on_plateau"
            else float(scale_fn(int(progress.state.step)))
        )
        _record_epoch(
            layout, progress, started, (train_loss, val_loss, val_mae, lr_now, lr_scale), target_type
        )
        progress.partial = EpochAccumulator()
        if monitored < progress.best_loss:
            progress.best_loss = monitored
            if cfg.data.model_save.best and writer:
                meta = {"epoch": progress.epoch, "loss": progress.best_loss, "step": int(progress.state.step)}
                ckpt.save_best(layout, progress.state.params, meta)
        if cfg.data.model_save.latest and progress.epoch % latest_save_interval(cfg) == 0:
            save_latest(layout, progress, keep=keep)
        if schedule_ends_training(sched, lr_scale):
            LOG.info("learning-rate scale %.3g fell below min_learning_rate_scale: stopping", lr_scale)
            return "min_learning_rate_scale"
    return "max_epoch"


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def log_start_up(phases: dict[str, float], first_loss: Any) -> None:
    """The start-up line: each phase's seconds (``phases``: name -> perf_counter at its end, in
    order, ``"start"`` first) and the time from the process start to the first finished step."""
    jax.block_until_ready(first_loss)
    now = time.perf_counter()
    marks = list(phases.items())
    parts = [f"{name} {end - begin:.1f} s" for (_, begin), (name, end) in zip(marks, marks[1:], strict=False)]
    parts.append(f"first step {now - marks[-1][1]:.1f} s")
    age = process_age_seconds()
    since = f"{age:.1f} s after the process started" if age is not None else "process start unknown"
    LOG.info("start-up: first training step done %s (%s)", since, ", ".join(parts))


def _record_epoch(
    layout: ckpt.RunLayout,
    progress: TrainProgress,
    started: float,
    figures: tuple[float, float, float, float, float],
    target_type: str,
) -> None:
    """One ``metrics.csv`` row and one ``deepx.log`` line for the epoch just completed."""
    train_loss, val_loss, val_mae, lr_now, lr_scale = figures
    row = {
        "epoch": progress.epoch,
        "step": int(progress.state.step),
        "wall_time_s": f"{time.perf_counter() - started:.3f}",
        "train_loss": f"{train_loss:.8g}",
        "validate_loss": f"{val_loss:.8g}",
        "validate_mae": f"{val_mae:.8g}",
        "learning_rate": f"{lr_now:.8g}",
        "lr_scale": f"{lr_scale:.8g}",
    }
    progress.metrics_rows.append(row)
    write_metrics(layout.metrics, progress.metrics_rows)
    LOG.info(
        "epoch %d | time %.1f s | train loss %.6g | validate loss %.6g | validate MAE %.4g %s"
        " | lr scale %.4g",
        progress.epoch,
        time.perf_counter() - started,
        train_loss,
        val_loss,
        val_mae * 1000.0 if target_type == "H" else val_mae,
        "meV" if target_type == "H" else "",
        lr_scale,
    )


def epoch_rates(tcfg: TrainProcessConfig, first_step: int, count: int, total_steps: int) -> np.ndarray:
    """The schedule's learning rate (float32, (count,)) for optimizer steps first_step, ...: numpy,
    the formulas of ``hamflow schedule`` (the plateau scale is applied inside the step)."""
    table = schedule_table(
        tcfg.scheduler,
        init_learning_rate=tcfg.optimizer.init_learning_rate,
        total_steps=total_steps,
        steps=range(first_step, first_step + count),
    )
    return np.asarray([rate for _, rate in table], dtype=np.float32)


def progress_bar(cfg: TrainConfig, total: int, epoch: int, initial: int, stream: TextIO | None = None) -> Any:
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


def _plateau_steps(state, plateau, step_metrics, sched, steps_per_epoch):
    """accum_size > 0: feed the plateau once every accum_size steps (one host sync per group)."""
    if len(step_metrics) % sched.accum_size:
        return state, plateau
    values = jax.device_get([m.loss for m in step_metrics[-sched.accum_size :]])
    for value in values:
        plateau = plateau_update(plateau, float(value), sched, steps_per_epoch=steps_per_epoch)
    return state._replace(plateau_scale=jnp.asarray(plateau.scale, jnp.float32)), plateau


def evaluate(compiled_eval: dict, batcher: Batcher, params: Any) -> tuple[float, float]:
    """(mean batch loss, MAE in target units) over a whole split."""
    results = []
    for bucket, members in epoch_batches(batcher.plan, seed=0, epoch=0, shuffle=False):
        results.append(compiled_eval[bucket](params, batcher.device_batch(bucket, members)))
    fetched = jax.device_get([(m.loss, m.abs_err, m.entries) for m in results])
    loss = float(np.mean([float(f[0]) for f in fetched]))
    mae = float(sum(float(f[1]) for f in fetched)) / max(sum(int(f[2]) for f in fetched), 1)
    return loss, mae


def compile_buckets(
    jit_train,
    jit_eval,
    state,
    train_batcher,
    val_batcher,
    *,
    aot: bool,
    cache: ProgramCache | None = None,
    identity: Any = None,
    extra_eval_shapes: Sequence[Any] = (),
    first_use: Sequence[int] = (),
) -> Compiled:
    """Per-bucket callables. With ``aot`` every bucket's step is lowered and compiled at start-up, in
    background threads (:mod:`hamflow.train.background`; as many as cores and memory allow,
    ``parallel_compiles``), the train buckets in the order of ``first_use`` (the buckets of the
    first batches), then the eval programs: training starts when its first program is ready, and a
    call waits only for its own program. Otherwise jit compiles lazily.

    cache: the program cache (:mod:`hamflow.train.program_cache`); with ``identity`` (what the step
    functions close over: model, normaliser, step options) a program found there is loaded instead
    of traced and compiled, and a compiled one is stored. extra_eval_shapes: bucket shapes of the
    final test pass that validation does not use, each with a structure (a store graph) that fits
    it, compiled too (on one device) so that the pass compiles nothing.
    Eval programs are keyed by bucket shape (``Compiled.evaluate_by_shape``).
    """
    if not aot:
        train = dict.fromkeys(range(len(train_batcher.plan.shapes)), jit_train)
        evals = dict.fromkeys(range(len(val_batcher.plan.shapes)) if val_batcher else [], jit_eval)
        return Compiled(train, evals, jit_eval)

    def example(batcher: Batcher, bucket: int) -> GraphBatch:
        members = batcher.plan.groups[bucket][: batcher.plan.batch_size]
        return batcher.device_batch(bucket, members)

    abstract_state = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    rate = jax.ShapeDtypeStruct((), jnp.float32, sharding=state.step.sharding)

    def job(kind: str, inputs: tuple, lower: Callable) -> Callable[[], tuple[Any, bool]]:
        def run() -> tuple[Any, bool]:
            if cache is None or identity is None:
                return lower(*inputs).compile(), False
            parts = {"identity": identity, "signature": signature(*inputs)}
            return cache.compiled(kind, parts, lambda: lower(*inputs).compile())

        return run

    jobs: list[tuple[str, Any, Callable]] = []
    buckets = list(range(len(train_batcher.plan.shapes)))
    first = [b for b in dict.fromkeys(first_use) if b in buckets]
    for bucket in first + [b for b in buckets if b not in first]:
        inputs = (abstract_state, _abstract(example(train_batcher, bucket)), rate)
        jobs.append(("train", bucket, job("train", inputs, jit_train.lower)))
    eval_shapes: list[Any] = []
    if val_batcher is not None:
        eval_shapes = [val_batcher.plan.shapes[b] for b in range(len(val_batcher.plan.shapes))]
    for bucket, shape in enumerate(eval_shapes):
        inputs = (abstract_state.params, _abstract(example(val_batcher, bucket)))
        jobs.append(("eval", shape, job("eval", inputs, jit_eval.lower)))
    if train_batcher.num_devices == 1:  # the test pass batches one structure on one device
        for shape, graph in extra_eval_shapes:
            if shape not in eval_shapes:
                inputs = (abstract_state.params, _abstract_single(train_batcher, graph, shape))
                jobs.append(("eval", shape, job("eval", inputs, jit_eval.lower)))

    def report(seconds: float, built: int, loaded: int) -> None:
        LOG.info(
            "ahead-of-time compiled %d program(s) in %.1f s (%d loaded from the program cache)",
            built,
            seconds,
            loaded,
        )

    build = BackgroundBuild(jobs, parallel_compiles(len(jobs)), report)
    programs = [(kind, key, program) for (kind, key, _), program in zip(jobs, build.programs, strict=True)]
    train = {key: program for kind, key, program in programs if kind == "train"}
    by_shape = {key: program for kind, key, program in programs if kind == "eval"}
    evals = {}
    if val_batcher is not None:
        evals = {b: by_shape[val_batcher.plan.shapes[b]] for b in range(len(val_batcher.plan.shapes))}
    return Compiled(train, evals, jit_eval, by_shape, build)


def _abstract(batch: GraphBatch) -> GraphBatch:
    """Shapes, dtypes and shardings of a device batch (what lowering needs)."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch
    )


def _abstract_single(batcher: Batcher, graph: Any, shape: Any) -> GraphBatch:
    """The abstract one-device batch of ``graph`` padded to bucket ``shape`` (the final test pass's
    batches, :func:`hamflow.train.test_pass.evaluate_structures`), placed like ``batcher``'s batches."""
    example = _abstract(batcher.device_batch(0, batcher.plan.groups[0][: batcher.plan.batch_size]))
    host = batcher._collate(
        [graph], num_nodes=shape.num_nodes, num_edges=shape.num_edges, num_graphs=shape.num_graphs
    )
    return jax.tree_util.tree_map(
        lambda ex, h: jax.ShapeDtypeStruct((1, *np.shape(h)), ex.dtype, sharding=ex.sharding), example, host
    )
