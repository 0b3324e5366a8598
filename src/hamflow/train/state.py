"""The state of a training run: create it fresh, resume it, continue or fine-tune it, save it.

* :func:`choose_resume`: the newest resumable checkpoint of the run folder, if the configuration it
  was written under may be resumed (else the old results are moved aside, never overwritten).
* :func:`finetune_source` / :func:`resolve_spec`: the run to continue from, and the ModelSpec (the
  source's when continuing, checked against this data's basis).
* :func:`restore_or_initialize`: parameters, normaliser, optimizer and a :class:`TrainProgress` -
  fresh, resumed from this run folder, or continued from another run (with or without its optimizer
  state).
* :func:`save_latest`: the resumable checkpoint (parameters + :func:`state_tree`).

The loop's position inside an epoch is an :class:`EpochAccumulator`, saved with the checkpoint so a
run cut off mid-epoch resumes on the same loss curve.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from hamflow.errors import ConfigError, DataError, os_errors
from hamflow.train import checkpoint as ckpt
from hamflow.train.normaliser import Normaliser, fit_normaliser
from hamflow.train.plateau import PlateauState, plateau_init
from hamflow.train.run_dir import read_metrics
from hamflow.train.saved_model import (
    ModelSpec,
    find_params,
    load_normaliser,
    load_params,
    model_spec,
    resolve_model_dir,
)
from hamflow.train.step import StepMetrics, TrainState, init_opt_state, make_optimizer, upgrade_opt_state_dict

if TYPE_CHECKING:
    import flax.linen as nn

    from hamflow.config.train_config import TrainConfig
    from hamflow.graph.batch import GraphBatch
    from hamflow.train.data import TrainData

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- the epoch position


@dataclass(frozen=True)
class EpochAccumulator:
    """What the loop has gathered of the current epoch: the batches done and their metrics.

    ``losses``: the loss of each batch done (loss units); ``abs_err`` / ``entries``: summed absolute
    error (target units) and the number of entries it is over.
    """

    batches_done: int = 0
    losses: tuple[float, ...] = ()
    abs_err: float = 0.0
    entries: int = 0

    def merge(self, step_metrics: Sequence[StepMetrics], batches_done: int) -> EpochAccumulator:
        """This accumulator with ``step_metrics`` (fetched from the devices) added, at ``batches_done``."""
        fetched = jax.device_get([(m.loss, m.abs_err, m.entries) for m in step_metrics])
        return EpochAccumulator(
            batches_done=batches_done,
            losses=self.losses + tuple(float(loss) for loss, _, _ in fetched),
            abs_err=float(self.abs_err) + float(sum(float(a) for _, a, _ in fetched)),
            entries=int(self.entries) + int(sum(int(n) for _, _, n in fetched)),
        )

    def mean_loss(self) -> float:
        """Mean batch loss of the epoch so far (nan before the first batch)."""
        return float(np.mean(self.losses)) if self.losses else math.nan


@dataclass
class TrainProgress:
    """Everything the loop advances: the train state and the bookkeeping that is checkpointed with it.

    ``epoch``: epochs completed; ``best_loss``: best monitored loss so far; ``partial``: the current
    epoch's position; ``metrics_rows``: the rows of ``metrics.csv``; ``wall_offset``: seconds of
    training before this process (from the resumed run's metrics).
    """

    state: TrainState
    plateau: PlateauState = field(default_factory=plateau_init)
    epoch: int = 0
    best_loss: float = math.inf
    partial: EpochAccumulator = field(default_factory=EpochAccumulator)
    metrics_rows: list[dict] = field(default_factory=list)
    wall_offset: float = 0.0


def state_tree(state: TrainState, plateau: Any, best_loss: float, partial: EpochAccumulator) -> dict:
    """The checkpointed state besides the parameters (names are the saved arrays' names)."""
    return {
        "opt_state": state.opt_state,
        "step": np.asarray(state.step),
        "plateau_scale": np.asarray(state.plateau_scale),
        "plateau": {name: np.asarray(value) for name, value in plateau._asdict().items()},
        "best_loss": np.asarray(best_loss, np.float64),
        "partial_losses": np.asarray(partial.losses, np.float64),
        "partial_abs_err": np.asarray(partial.abs_err, np.float64),
        "partial_entries": np.asarray(partial.entries, np.int64),
        "partial_batches": np.asarray(partial.batches_done, np.int64),
    }


def from_state_tree(tree: dict, params: Any) -> tuple[TrainState, PlateauState, float, EpochAccumulator]:
    """The inverse of :func:`state_tree` with ``params``: (state, plateau, best loss, position)."""
    plateau_fields = {name: tree["plateau"][name] for name in PlateauState._fields}
    plateau = PlateauState(**{k: (v.item() if np.ndim(v) == 0 else v) for k, v in plateau_fields.items()})
    state = TrainState(
        params,
        tree["opt_state"],
        jnp.asarray(tree["step"], jnp.int32),
        jnp.asarray(tree["plateau_scale"], jnp.float32),
    )
    partial = EpochAccumulator(
        batches_done=int(tree["partial_batches"]),
        losses=tuple(float(x) for x in np.atleast_1d(tree["partial_losses"]))[: int(tree["partial_batches"])],
        abs_err=float(tree["partial_abs_err"]),
        entries=int(tree["partial_entries"]),
    )
    return state, plateau, float(tree["best_loss"]), partial


def _upgrade_state(saved: dict, fresh: dict) -> dict:
    """A saved :func:`state_tree` with its optimizer state in this version's layout (older runs)."""
    return {**saved, "opt_state": upgrade_opt_state_dict(saved.get("opt_state"), fresh["opt_state"])}


def save_latest(layout: ckpt.RunLayout, progress: TrainProgress, *, keep: int) -> None:
    """Save the resumable checkpoint of ``progress`` at its epoch (process 0 writes; keep ``keep``)."""
    host_state = jax.device_get(progress.state)
    if jax.process_index() != 0:
        return
    partial = progress.partial
    meta = {"epoch": progress.epoch, "step": int(host_state.step), "batches_done": int(partial.batches_done)}
    ckpt.save_latest(
        layout,
        progress.epoch,
        host_state.params,
        state_tree(host_state, progress.plateau, progress.best_loss, partial),
        meta,
        keep=max(keep, 1),
    )


# ------------------------------------------------------------------------------ resume or start


def has_results(layout: ckpt.RunLayout) -> bool:
    """Whether the run folder holds results worth keeping: a best model, metrics or checkpoints."""
    if layout.best.exists() or layout.metrics.exists():
        return True
    return any(parent.is_dir() and any(parent.iterdir()) for parent in (layout.latest, layout.states))


def set_aside(layout: ckpt.RunLayout) -> Path:
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


def choose_resume(cfg: TrainConfig, layout: ckpt.RunLayout, *, writer: bool) -> ckpt.CheckpointInfo | None:
    """The checkpoint to resume from in ``layout``, or None to start fresh; writes ``model/train.toml``.

    A checkpoint written under another configuration (a key not declared ``resume_ok`` differs) is
    not resumed: the old results are moved aside. So are the results of a folder with no resumable
    checkpoint (none yet, or every one torn or corrupt).
    """
    from hamflow.atomic import atomic_write_text
    from hamflow.config.train_config import (
        dump_train_config,
        load_train_config,
        resume_blocking_changes,
        train_config_to_dict,
    )

    resolved = train_config_to_dict(cfg)
    resuming = ckpt.newest_resumable(layout)
    if resuming is not None and layout.train_toml.is_file():
        previous = train_config_to_dict(load_train_config(layout.train_toml))
        changes = resume_blocking_changes(previous, resolved)
        if changes:
            aside = set_aside(layout) if writer else None
            LOG.warning(
                "configuration changed since the checkpoints were written (%s): starting from "
                "scratch; the old model folder was moved to %s",
                ", ".join(changes[:5]),
                aside,
            )
            resuming = None
    elif resuming is None and writer and has_results(layout):
        aside = set_aside(layout)
        LOG.warning(
            "no resumable checkpoint in %s: starting from scratch; the previous best model, "
            "metrics and checkpoints were moved to %s",
            layout.model,
            aside,
        )
    if writer:
        atomic_write_text(layout.train_toml, dump_train_config(cfg))
    return resuming


def finetune_source(cfg: TrainConfig, resuming: ckpt.CheckpointInfo | None) -> ckpt.RunLayout | None:
    """The run to continue or fine-tune from (``[process.train.continued]``), unless resuming."""
    cont = cfg.process.train.continued
    return resolve_model_dir(cont.previous_output_dir) if cont.enable and resuming is None else None


def resolve_spec(
    cfg: TrainConfig, data: TrainData, source: ckpt.RunLayout | None, layout: ckpt.RunLayout, *, writer: bool
) -> ModelSpec:
    """The run's ModelSpec (the source's when continuing: its basis must be this data's); saved."""
    spec = model_spec(cfg, data.basis, data.store.meta)
    if source is not None:
        source_spec = ModelSpec.load(source.model_json)
        if source_spec.shell_ls != spec.shell_ls or source_spec.spinful != spec.spinful:
            raise ConfigError(
                "process.train.continued.previous_output_dir",
                f"= {cfg.process.train.continued.previous_output_dir!r}: its orbital basis "
                f"{source_spec.shell_ls} (spinful={source_spec.spinful}) differs from this data's "
                f"{spec.shell_ls} (spinful={spec.spinful}); set data.graph.common_orbital_types to match",
            )
        spec = source_spec
    if writer:
        spec.save(layout.model_json)
    return spec


def _restored_metrics(metrics_path: Path, epoch: int) -> tuple[list[dict], float]:
    rows = [r for r in read_metrics(metrics_path) if int(r["epoch"]) <= epoch]
    return rows, float(rows[-1]["wall_time_s"]) if rows else 0.0


@dataclass
class RunState:
    """What :func:`restore_or_initialize` returns: the model's pieces and the loop's progress."""

    progress: TrainProgress
    optimizer: Any
    normaliser: Normaliser


def restore_or_initialize(
    cfg: TrainConfig,
    layout: ckpt.RunLayout,
    model: nn.Module,
    spec: ModelSpec,
    data: TrainData,
    example: GraphBatch,
    *,
    resuming: ckpt.CheckpointInfo | None,
    source: ckpt.RunLayout | None,
    writer: bool,
) -> RunState:
    """Parameters, normaliser, optimizer and progress: fresh, resumed, continued or fine-tuned.

    Fresh: parameters from ``system.random_seed``, the normaliser fitted on the training split.
    Resume (``resuming``: a checkpoint of this run folder): its parameters, optimizer state, plateau,
    best loss, position in the epoch and metrics. Continue / fine-tune (``source``): the source's
    parameters (``load_model_type`` / ``load_model_epoch``) and normaliser; with ``new_optimizer =
    false`` also its optimizer state, and unless ``new_training_data`` its epoch count and metrics.
    ``example``: one host batch (stacked over devices) for the parameter shapes.
    """
    from hamflow.nn.model import init_params
    from hamflow.train.program_cache import parameter_shapes, run_program_cache

    tcfg = cfg.process.train
    cont = tcfg.continued
    one_share = jax.tree_util.tree_map(lambda x: x[0], example)
    t0 = time.perf_counter()
    shapes = parameter_shapes(run_program_cache(cfg, []), model, one_share)
    params = init_params(model, one_share, cfg.system.random_seed, shapes)["params"]
    LOG.info("model %s: %d parameters (init %.1f s)", spec.net_type, _count(params), time.perf_counter() - t0)

    info = None
    if source is not None:
        info = find_params(source, cont.load_model_type, cont.load_model_epoch)
        params = load_params(info, params)
        normaliser = load_normaliser(source)
        LOG.info("loaded parameters from %s (epoch %s)", info.path, info.epoch)
    elif resuming is not None and layout.normaliser.is_file():
        normaliser = load_normaliser(layout)
    else:
        order = np.random.default_rng(cfg.system.random_seed).permutation(data.index["train"])
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
    progress = TrainProgress(state=state)
    template = state_tree(state, progress.plateau, progress.best_loss, progress.partial)
    if resuming is not None:
        params = ckpt.read_payload(resuming.path, params)
        restored = ckpt.read_payload(
            layout.states / f"epoch_{resuming.epoch}", template, _upgrade_state, check_shapes=False
        )
        state, plateau, best_loss, partial = from_state_tree(restored, params)
        rows, offset = _restored_metrics(layout.metrics, resuming.epoch)
        progress = TrainProgress(state, plateau, resuming.epoch, best_loss, partial, rows, offset)
        LOG.info("resuming from %s (epoch %d, step %d)", resuming.path, resuming.epoch, int(state.step))
    elif source is not None and not cont.new_optimizer:
        progress = _continued(cfg, source, info, template, params)
    return RunState(progress=progress, optimizer=optimizer, normaliser=normaliser)


def _continued(
    cfg: TrainConfig, source: ckpt.RunLayout, info: ckpt.CheckpointInfo, template: dict, params: Any
) -> TrainProgress:
    """Progress continued from ``source``'s optimizer state (``new_optimizer = false``)."""
    cont = cfg.process.train.continued
    src_info = ckpt.newest_resumable(source, info.epoch if cont.load_model_type == "latest" else -1)
    if src_info is None:
        raise DataError(
            "no optimizer state saved to continue from (set new_optimizer = true)", file=source.states
        )
    restored = ckpt.read_payload(
        source.states / f"epoch_{src_info.epoch}", template, _upgrade_state, check_shapes=False
    )
    _, plateau, best_loss, partial = from_state_tree(restored, params)
    state = TrainState(
        params,
        restored["opt_state"],
        jnp.asarray(restored["step"], jnp.int32),
        jnp.asarray(restored["plateau_scale"], jnp.float32),
    )
    progress = TrainProgress(state, plateau, 0, best_loss, partial)
    if not cont.new_training_data:
        progress.epoch = src_info.epoch
        progress.metrics_rows, progress.wall_offset = _restored_metrics(source.metrics, src_info.epoch)
    else:
        progress.state = state._replace(step=jnp.zeros((), jnp.int32))
        progress.partial = EpochAccumulator()
    LOG.info("continuing from %s epoch %d (optimizer state kept)", source.root, src_info.epoch)
    return progress


def _count(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


__all__ = [
    "EpochAccumulator",
    "RunState",
    "TrainProgress",
    "choose_resume",
    "finetune_source",
    "from_state_tree",
    "has_results",
    "resolve_spec",
    "restore_or_initialize",
    "save_latest",
    "set_aside",
    "state_tree",
]
