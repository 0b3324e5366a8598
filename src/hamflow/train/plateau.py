"""DeepH-pack's ``reduce_on_plateau`` rule as a pure function over a small state of Python scalars.

The rule is ``optax.contrib.reduce_on_plateau``'s (optax 0.2.8), with DeepH-pack's key names and
without a lower clamp on the scale (DeepH-pack ends training instead, see
:func:`hamflow.train.schedules.schedule_ends_training`):

* **Calling convention** (one *evaluation* = the mean of one window of calls):

  - ``accum_size == -1`` (DeepH-pack's default, "full-epoch monitoring cycles"): one call of
    :func:`plateau_update` per **epoch**, with the epoch loss (the train loss, or the validation
    loss unless ``only_use_train_loss``); every call is one evaluation, so ``patience`` and
    ``cooldown`` count epochs.
  - ``accum_size >= 1``: one call per **training step**, with that step's train loss; every
    ``accum_size`` calls are averaged into one evaluation, so ``patience`` and ``cooldown`` count
    windows of ``accum_size`` steps (steps when ``accum_size == 1``). With ``accum_size`` equal to
    the number of steps per epoch this is the per-epoch rule fed with the mean step loss.

* **Improvement**: the evaluation ``v`` improves when ``v < (1 - rtol) * best`` (``best`` starts at
  +inf, so the first evaluation always improves); ``best`` becomes ``v`` on every improvement, also
  during a cooldown.
* **Reduction**: outside a cooldown, the plateau count is reset to 0 on improvement and incremented
  otherwise; when it reaches ``patience`` the scale is multiplied by ``factor``, the plateau count
  is reset and a cooldown of ``cooldown`` evaluations starts. During a cooldown the plateau count is
  held at 0 and the cooldown counter decreases by one per evaluation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from hamflow.errors import ConfigError

if TYPE_CHECKING:
    from hamflow.config.scheduler_config import SchedulerConfig


class PlateauState(NamedTuple):
    """State of the plateau rule; every field is a Python scalar (checkpoint it as it is).

    ``scale``: current learning-rate scale (lr = init_learning_rate x scale), starts at 1.
    ``best``: best evaluation so far (loss units; +inf before the first evaluation).
    ``plateau_count``: evaluations without improvement since the last improvement or reduction.
    ``cooldown_count``: evaluations left in the cooldown after the last reduction.
    ``accum_sum`` / ``accum_count``: sum and number of the values of the current window.
    """

    scale: float
    best: float
    plateau_count: int
    cooldown_count: int
    accum_sum: float
    accum_count: int


def plateau_init() -> PlateauState:
    """The state before the first training step: scale 1, no best value, empty window."""
    return PlateauState(
        scale=1.0, best=math.inf, plateau_count=0, cooldown_count=0, accum_sum=0.0, accum_count=0
    )


def plateau_window(cfg: SchedulerConfig) -> int:
    """Number of :func:`plateau_update` calls averaged into one evaluation: ``accum_size``, or 1 for
    ``accum_size == -1`` (then each call already carries one epoch's loss)."""
    return cfg.accum_size if cfg.accum_size >= 1 else 1


def _evaluate(state: PlateauState, mean: float, cfg: SchedulerConfig) -> PlateauState:
    improved = mean < (1.0 - cfg.rtol) * state.best
    best = mean if improved else state.best
    if state.cooldown_count > 0:
        return PlateauState(state.scale, best, 0, state.cooldown_count - 1, 0.0, 0)
    plateau_count = 0 if improved else state.plateau_count + 1
    if plateau_count >= cfg.patience:
        return PlateauState(state.scale * cfg.factor, best, 0, cfg.cooldown, 0.0, 0)
    return PlateauState(state.scale, best, plateau_count, 0, 0.0, 0)


def plateau_update(
    state: PlateauState, value: float, cfg: SchedulerConfig, *, steps_per_epoch: int
) -> PlateauState:
    """Add one loss ``value`` and return the new state; pure.

    ``value`` is an epoch loss when ``accum_size == -1`` and a step loss otherwise (module doc).
    When the window (:func:`plateau_window` calls) is full, its mean is evaluated with the
    improvement / reduction rule of the module docstring. A non-finite value (nan, inf) counts as no
    improvement. ``steps_per_epoch`` (>= 1, else ConfigError) is the run's number of training steps
    per epoch: one call per epoch stands for that many steps when ``accum_size == -1``; it does not
    change the rule.
    """
    if steps_per_epoch < 1:
        raise ConfigError("steps_per_epoch", f"= {steps_per_epoch} must be >= 1")
    window = plateau_window(cfg)
    accum_sum = state.accum_sum + float(value)
    accum_count = state.accum_count + 1
    state = state._replace(accum_sum=accum_sum, accum_count=accum_count)
    if accum_count < window:
        return state
    return _evaluate(state, accum_sum / accum_count, cfg)
