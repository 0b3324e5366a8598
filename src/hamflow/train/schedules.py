"""Learning-rate schedules of ``[process.train.scheduler]``: DeepH-pack's and DeePMD-kit's.

Four types (``docs/schedules.md`` is the user's page):

* ``reduce_on_plateau`` (DeepH-pack): the learning rate is ``init_learning_rate x scale`` where the
  scale only changes on a loss plateau (:mod:`hamflow.train.plateau`); the step schedule itself is
  constant ``init_learning_rate``.
* ``warmup_cosine_decay`` (DeepH-pack): scale rises linearly ``init_scale -> 1`` over
  ``warmup_steps``, then follows a cosine ``1 -> end_scale`` over ``decay_steps`` and holds
  ``end_scale`` beyond; ``end_scale = -1`` means 0, ``decay_steps <= 0`` means "all steps left
  after the warmup".
* ``warmup_exponential_decay`` (DeepH-pack's newer template): optax's
  ``warmup_exponential_decay_schedule`` on the scale: linear warmup ``init_scale -> 1`` over
  ``warmup_steps``, held at 1 for ``transition_begin`` steps, then ``0.5 ** (s / transition_steps)``
  (``s`` the steps since; floored when ``staircase``), never below ``end_scale`` (``-1``: no floor).
  The template has no key for the rate: hamflow uses :data:`WARMUP_EXPONENTIAL_DECAY_RATE` = 0.5.
* ``exp`` and ``cosine`` (DeePMD-kit >= 3.1.3, ``deepmd/dpmodel/utils/learning_rate.py``) and
  ``wsd`` (DeePMD-kit 3.2, warmup-stable-decay: ``start_lr`` held, then a final decay phase of
  ``decay_phase_ratio`` x all steps, ``decay_type`` inverse_linear / cosine / linear): absolute
  learning rates from ``start_lr`` with an optional linear warmup from
  ``warmup_start_factor x start_lr``; ``init_learning_rate`` is not used by these types.

The total number of training steps is ``max_epoch x steps_per_epoch`` (DeePMD-kit's ``num_steps``).
Learning rates are in the optimiser's units (per step); steps are 0-based optimiser updates.

One formula implementation serves two array back-ends: ``numpy`` in float64 for tables (exact to
~1e-16 against the DeePMD-kit formulas) and ``jax.numpy`` for the jittable optax schedule (float32
unless x64 is enabled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamflow.atomic import atomic_path
from hamflow.config.scheduler_config import (
    DEEPH_TYPES,
    DEEPMD_TYPES,
    SCHEDULER_TYPES,
    WARMUP_EXPONENTIAL_DECAY_RATE,
    SchedulerConfig,
    effective_warmup_steps,
    scheduler_config_from_section,
    scheduler_config_to_section,
    validate_against_run,
)
from hamflow.errors import ConfigError
from hamflow.train.plateau import PlateauState, plateau_init, plateau_update, plateau_window

__all__ = [
    "DEEPH_TYPES",
    "DEEPMD_TYPES",
    "SCHEDULER_TYPES",
    "WARMUP_EXPONENTIAL_DECAY_RATE",
    "PlateauState",
    "SchedulerConfig",
    "effective_warmup_steps",
    "learning_rate_scale",
    "learning_rate_schedule",
    "plateau_init",
    "plateau_update",
    "plateau_window",
    "ScheduleReport",
    "format_schedule_csv",
    "plot_schedule",
    "schedule_ends_training",
    "schedule_report",
    "schedule_table",
    "scheduler_config_from_section",
    "scheduler_config_to_section",
    "validate_against_run",
]

# DeePMD-kit clamps stop_lr to this value inside log() when it computes the exp decay rate.
_DEEPMD_LOG_FLOOR = 1e-10


# --------------------------------------------------------------------------------------------------
# The formulas (one implementation; ``xp`` is numpy or jax.numpy)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """Scalars of one schedule once the run length is known (Python floats and ints)."""

    type: str
    reference_lr: float  # lr / scale: init_learning_rate (DeepH-pack types) or start_lr (DeePMD-kit)
    warmup_steps: int
    # warmup_cosine_decay
    init_scale: float = 1.0
    decay_steps: int = 0
    end_scale: float = 0.0
    # warmup_exponential_decay (end_scale is its floor, 0 for none)
    transition_begin: int = 0
    transition_steps: int = 1
    staircase: bool = True
    decay_rate: float = WARMUP_EXPONENTIAL_DECAY_RATE
    # DeePMD-kit
    warmup_start_lr: float = 0.0
    decay_num_steps: int = 0
    exp_decay_steps: int = 1
    exp_decay_rate: float = 1.0
    min_lr: float = 0.0
    smooth: bool = False
    lr_min_factor: float = 0.0
    # wsd: stable then decay phase lengths (steps after the warmup), the decay curve
    wsd_stable_steps: int = 0
    wsd_decay_steps: int = 1
    wsd_decay_type: str = "inverse_linear"


def _resolve(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> _Resolved:
    validate_against_run(cfg, total_steps=total_steps)
    warmup = effective_warmup_steps(cfg, total_steps=total_steps)
    if cfg.type == "reduce_on_plateau":
        return _Resolved(type=cfg.type, reference_lr=float(init_learning_rate), warmup_steps=0)
    if cfg.type == "warmup_cosine_decay":
        decay = cfg.decay_steps if cfg.decay_steps > 0 else total_steps - warmup
        return _Resolved(
            type=cfg.type,
            reference_lr=float(init_learning_rate),
            warmup_steps=warmup,
            init_scale=cfg.init_scale,
            decay_steps=decay,
            end_scale=0.0 if cfg.end_scale == -1.0 else cfg.end_scale,
        )
    if cfg.type == "warmup_exponential_decay":
        return _Resolved(
            type=cfg.type,
            reference_lr=float(init_learning_rate),
            warmup_steps=warmup,
            init_scale=cfg.init_scale,
            end_scale=0.0 if cfg.end_scale == -1.0 else cfg.end_scale,
            transition_begin=cfg.transition_begin,
            transition_steps=cfg.transition_steps,
            staircase=cfg.staircase,
        )
    start_lr = float(cfg.start_lr)
    stop_lr = start_lr * cfg.stop_lr_ratio if cfg.stop_lr_ratio is not None else float(cfg.stop_lr)
    decay_total = total_steps - warmup
    common = dict(
        type=cfg.type,
        reference_lr=start_lr,
        warmup_steps=warmup,
        warmup_start_lr=cfg.warmup_start_factor * start_lr,
        decay_num_steps=decay_total,
    )
    if cfg.type == "cosine":
        return _Resolved(**common, lr_min_factor=stop_lr / start_lr)
    if cfg.type == "wsd":
        decay_len = max(1, min(int(np.floor(cfg.decay_phase_ratio * total_steps)), decay_total))
        return _Resolved(
            **common,
            min_lr=stop_lr,
            wsd_stable_steps=decay_total - decay_len,
            wsd_decay_steps=decay_len,
            wsd_decay_type=str(cfg.decay_type),
        )
    # exp: DeePMD-kit's decay_steps adjustment and decay-rate interpolation.
    decay_steps = cfg.decay_steps
    if cfg.decay_rate is None and decay_steps >= decay_total:
        decay_steps = 100 if decay_total // 10 > 100 else decay_total // 100 + 1
    if cfg.decay_rate is not None:
        rate = float(cfg.decay_rate)
    else:
        clamped_stop = max(stop_lr, _DEEPMD_LOG_FLOOR)
        rate = float(np.exp(np.log(clamped_stop / start_lr) / (decay_total / decay_steps)))
    return _Resolved(
        **common, exp_decay_steps=decay_steps, exp_decay_rate=rate, min_lr=stop_lr, smooth=cfg.smooth
    )


def _deepmd_decay_lr(r: _Resolved, t: Any, xp: Any) -> Any:
    """Learning rate of the decay phase at decay-phase step ``t`` (float array, >= 0)."""
    if r.type == "exp":
        exponent = t / r.exp_decay_steps if r.smooth else xp.floor_divide(t, r.exp_decay_steps)
        lr = r.reference_lr * xp.power(xp.asarray(r.exp_decay_rate, dtype=t.dtype), exponent)
        return xp.maximum(lr, r.min_lr)
    if r.type == "wsd":
        return _wsd_decay_lr(r, t, xp)
    alpha = r.lr_min_factor
    lr = r.reference_lr * (alpha + 0.5 * (1 - alpha) * (1 + xp.cos(xp.pi * (t / r.decay_num_steps))))
    return xp.where(t >= r.decay_num_steps, r.reference_lr * alpha, lr)


def _wsd_decay_lr(r: _Resolved, t: Any, xp: Any) -> Any:
    """wsd after the warmup: ``start_lr`` for t < Ns, the decay curve over the Nd steps, ``stop_lr`` from D.

    u = clip((t - Ns) / Nd, 0, 1); inverse_linear 1 / (u / stop + (1 - u) / start), cosine
    stop + (start - stop) (1 + cos(pi u)) / 2, linear start + (stop - start) u.
    """
    start, stop = r.reference_lr, r.min_lr
    u = xp.clip((t - r.wsd_stable_steps) / r.wsd_decay_steps, 0.0, 1.0)
    if r.wsd_decay_type == "inverse_linear":
        decayed = 1.0 / (u / stop + (1.0 - u) / start)
    elif r.wsd_decay_type == "cosine":
        decayed = stop + (start - stop) * (1.0 + xp.cos(xp.pi * u)) / 2.0
    else:
        decayed = start + (stop - start) * u
    lr = xp.where(t < r.wsd_stable_steps, xp.asarray(start, dtype=t.dtype), decayed)
    return xp.where(t >= r.decay_num_steps, xp.asarray(stop, dtype=t.dtype), lr)


def _scale_and_lr(r: _Resolved, steps: Any, xp: Any, dtype: Any) -> tuple[Any, Any]:
    """(scale, learning rate) at ``steps`` (integer array); scale = lr / reference_lr."""
    t = xp.asarray(steps).astype(dtype)
    if r.type == "reduce_on_plateau":
        scale = xp.ones_like(t)
        return scale, r.reference_lr * scale
    if r.type == "warmup_exponential_decay":
        # optax.warmup_exponential_decay_schedule(init_scale, 1, W, transition_steps, rate,
        # transition_begin, staircase, end_value): 1 until transition_begin steps after the warmup.
        since = t - r.warmup_steps - r.transition_begin
        exponent = since / r.transition_steps
        if r.staircase:
            exponent = xp.floor(exponent)
        decayed = xp.power(xp.asarray(r.decay_rate, dtype=dtype), exponent)
        decayed = xp.where(since <= 0, xp.asarray(1.0, dtype=dtype), xp.maximum(decayed, r.end_scale))
        if r.warmup_steps > 0:
            warm = r.init_scale + (1 - r.init_scale) * (t / r.warmup_steps)
            scale = xp.where(t < r.warmup_steps, warm, decayed)
        else:
            scale = decayed
        return scale, r.reference_lr * scale
    if r.type == "warmup_cosine_decay":
        d = xp.clip(t - r.warmup_steps, 0, r.decay_steps)
        cosine = r.end_scale + (1 - r.end_scale) * 0.5 * (1 + xp.cos(xp.pi * (d / r.decay_steps)))
        decayed = xp.where(d >= r.decay_steps, xp.asarray(r.end_scale, dtype=dtype), cosine)
        if r.warmup_steps > 0:
            warm = r.init_scale + (1 - r.init_scale) * (t / r.warmup_steps)
            scale = xp.where(t < r.warmup_steps, warm, decayed)
        else:
            scale = decayed
        return scale, r.reference_lr * scale
    if r.warmup_steps == 0:
        lr = _deepmd_decay_lr(r, t, xp)
    else:
        warm = r.warmup_start_lr + (r.reference_lr - r.warmup_start_lr) * (t / r.warmup_steps)
        decay_step = xp.maximum(t - r.warmup_steps, xp.asarray(0.0, dtype=dtype))
        lr = xp.where(t < r.warmup_steps, warm, _deepmd_decay_lr(r, decay_step, xp))
    return lr / r.reference_lr, lr


# --------------------------------------------------------------------------------------------------
# Public schedules
# --------------------------------------------------------------------------------------------------


def learning_rate_schedule(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> Any:
    """The optax schedule ``step -> learning rate`` (jittable; step an int or a jnp integer array).

    ``reduce_on_plateau``: constant ``init_learning_rate`` (the training loop multiplies by the
    plateau scale). ``warmup_cosine_decay``: ``init_learning_rate x scale(step)``. ``exp`` /
    ``cosine``: DeePMD-kit's absolute learning rate from ``start_lr``; ``init_learning_rate`` is not
    used (wsd likewise). Computed in JAX's default float type (float32 unless x64 is enabled). Runs
    :func:`validate_against_run` first.
    """
    import jax.numpy as jnp

    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)

    def schedule(count: Any) -> Any:
        return _scale_and_lr(resolved, count, jnp, jnp.result_type(float))[1]

    return schedule


def learning_rate_scale(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> Any:
    """The optax schedule ``step -> lr / reference lr`` (what ``deepx.log`` prints as "lr scale").

    The reference is ``init_learning_rate`` for the DeepH-pack types (always 1 for
    ``reduce_on_plateau``, whose scale is :class:`PlateauState` ``.scale``) and ``start_lr`` for
    exp / cosine. Jittable, JAX's default float type.
    """
    import jax.numpy as jnp

    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)

    def scale(count: Any) -> Any:
        return _scale_and_lr(resolved, count, jnp, jnp.result_type(float))[0]

    return scale


def schedule_ends_training(cfg: SchedulerConfig, scale: float) -> bool:
    """DeepH-pack's rule: training stops once the lr scale is at or below ``min_learning_rate_scale``.

    Applies to ``reduce_on_plateau`` (``scale`` = the plateau scale) and ``warmup_cosine_decay``
    (``scale`` = :func:`learning_rate_scale` of the step). DeePMD-kit's exp / cosine run all
    ``max_epoch`` epochs (their end is ``stop_lr``), so they never end training early.
    """
    if cfg.type in DEEPMD_TYPES:
        return False
    return bool(scale <= cfg.min_learning_rate_scale)


def schedule_table(
    cfg: SchedulerConfig,
    *,
    init_learning_rate: float,
    total_steps: int,
    steps: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """``[(step, learning_rate), ...]`` in float64 for ``steps`` (default: every step ``0..total_steps-1``).

    Same formulas as :func:`learning_rate_schedule`, evaluated with numpy in float64 (agrees with
    DeePMD-kit's own float64 evaluation to ~1e-16 relative). ``reduce_on_plateau`` gives the
    constant ``init_learning_rate`` (no plateau assumed). Steps beyond the run are allowed (the
    schedule's "hold" value); a negative step raises ConfigError.
    """
    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)
    if steps is None:
        step_array = np.arange(total_steps, dtype=np.int64)
    else:
        step_array = np.asarray(list(steps), dtype=np.int64)
        if step_array.size and int(step_array.min()) < 0:
            raise ConfigError(
                "--steps", f"contains the negative step {int(step_array.min())}; steps are >= 0"
            )
    _, lr = _scale_and_lr(resolved, step_array, np, np.float64)
    lr = np.broadcast_to(lr, step_array.shape)
    return [(int(s), float(v)) for s, v in zip(step_array.tolist(), lr.tolist(), strict=True)]


def plot_schedule(rows: Sequence[tuple[int, float]], path: str | Path, *, title: str = "") -> None:
    """Plot learning rate against step as a PNG at ``path`` (written atomically, matplotlib Agg).

    The y axis is logarithmic when all rates are positive and span more than two decades.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [row[0] for row in rows]
    rates = [row[1] for row in rows]
    figure = Figure(figsize=(7.0, 4.0), dpi=120)
    axes = figure.add_subplot()
    axes.plot(steps, rates, marker="." if len(rows) <= 50 else None, linewidth=1.2)
    positive = [rate for rate in rates if rate > 0]
    if rates and len(positive) == len(rates) and max(positive) > 100.0 * min(positive):
        axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("learning rate")
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")


# --------------------------------------------------------------------------------------------------
# `hamflow schedule`: the schedule of a train.toml before any GPU hour is spent
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleReport:
    """What ``hamflow schedule`` shows: the schedule's rows and a note about what they assume."""

    type: str
    total_steps: int  # max_epoch x steps_per_epoch
    rows: list[tuple[int, float]]  # (step, learning rate) in float64
    note: str  # "" or the assumption behind the rows (reduce_on_plateau)


def schedule_report(
    train_toml: str | Path, *, steps_per_epoch: int, steps: Sequence[int] | None = None
) -> ScheduleReport:
    """Load ``train_toml`` and tabulate its learning rate (every step, or ``steps``).

    The run has ``max_epoch x steps_per_epoch`` steps; ``init_learning_rate`` comes from
    ``[process.train.optimizer]``. ConfigError for a bad file, a bad ``steps_per_epoch`` or a
    schedule that does not fit the run (:func:`validate_against_run`).
    """
    from hamflow.config.train_config import load_train_config

    if steps_per_epoch < 1:
        raise ConfigError("--steps-per-epoch", f"= {steps_per_epoch} must be an integer >= 1")
    cfg = load_train_config(train_toml)
    train = cfg.process.train
    scheduler = train.scheduler
    total_steps = train.max_epoch * steps_per_epoch
    init_lr = train.optimizer.init_learning_rate
    rows = schedule_table(scheduler, init_learning_rate=init_lr, total_steps=total_steps, steps=steps)
    note = ""
    if scheduler.type == "reduce_on_plateau":
        note = (
            f"reduce_on_plateau: the rows assume no plateau (constant init_learning_rate = {init_lr!r}); "
            f"each plateau of patience = {scheduler.patience} evaluations multiplies the rate by "
            f"factor = {scheduler.factor!r}, and training stops once the scale reaches "
            f"min_learning_rate_scale = {scheduler.min_learning_rate_scale!r}"
        )
    return ScheduleReport(type=scheduler.type, total_steps=total_steps, rows=rows, note=note)


def format_schedule_csv(rows: Sequence[tuple[int, float]]) -> str:
    """``step,learning_rate`` CSV text; rates written with ``repr`` (round-trips the float64 exactly)."""
    lines = ["step,learning_rate"]
    lines.extend(f"{step},{rate!r}" for step, rate in rows)
    return "\n".join(lines) + "\n"
