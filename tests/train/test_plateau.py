"""reduce_on_plateau: patience, rtol, cooldown, accum_size, min_learning_rate_scale, and agreement
with optax.contrib.reduce_on_plateau on a random loss sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from optax_reference import plateau_scales_with_optax

from hamflow.errors import ConfigError
from hamflow.train.schedules import (
    plateau_init,
    plateau_update,
    plateau_window,
    schedule_ends_training,
    scheduler_config_from_section,
)


def plateau_cfg(**keys):
    return scheduler_config_from_section({"type": "reduce_on_plateau", **keys})


def feed(cfg, values, *, steps_per_epoch=1, state=None):
    state = plateau_init() if state is None else state
    history = []
    for value in values:
        state = plateau_update(state, value, cfg, steps_per_epoch=steps_per_epoch)
        history.append(state)
    return state, history


def test_initial_state():
    state = plateau_init()
    assert state.scale == 1.0 and state.best == math.inf
    assert (state.plateau_count, state.cooldown_count, state.accum_sum, state.accum_count) == (0, 0, 0.0, 0)


def test_first_evaluation_improves_and_sets_best():
    state, _ = feed(plateau_cfg(accum_size=1), [3.0])
    assert state.best == 3.0 and state.plateau_count == 0 and state.scale == 1.0


def test_patience_counts_evaluations_without_improvement():
    cfg = plateau_cfg(accum_size=1, patience=3, cooldown=0, factor=0.5, rtol=0.05)
    _, history = feed(cfg, [1.0, 1.0, 1.0, 1.0])
    assert [s.plateau_count for s in history] == [0, 1, 2, 0]
    assert [s.scale for s in history] == [1.0, 1.0, 1.0, 0.5]  # reduced at the 3rd bad evaluation


def test_improvement_needs_relative_drop_of_rtol():
    cfg = plateau_cfg(accum_size=1, patience=10, rtol=0.1)
    state, _ = feed(cfg, [1.0, 0.95])  # 0.95 is not below (1 - 0.1) x 1.0
    assert state.best == 1.0 and state.plateau_count == 1
    state, _ = feed(cfg, [0.89], state=state)  # 0.89 < 0.9: improvement, count reset
    assert state.best == 0.89 and state.plateau_count == 0


def test_cooldown_holds_the_count_and_still_tracks_best():
    cfg = plateau_cfg(accum_size=1, patience=2, cooldown=2, factor=0.5, rtol=0.05)
    _, history = feed(cfg, [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0])
    # evaluation:   1    2    3 (reduce)  4 (cool 2->1) 5 (cool 1->0, best 0.5)  6    7 (reduce)  8
    assert [s.scale for s in history] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert [s.cooldown_count for s in history] == [0, 0, 2, 1, 0, 0, 2, 1]
    assert [s.plateau_count for s in history] == [0, 1, 0, 0, 0, 1, 0, 0]
    assert history[4].best == 0.5  # improvement recorded during the cooldown


def test_accum_size_averages_windows_of_steps():
    cfg = plateau_cfg(accum_size=3, patience=1, cooldown=0, factor=0.5)
    _, history = feed(cfg, [3.0, 2.0, 1.0], steps_per_epoch=100)
    assert [s.accum_count for s in history] == [1, 2, 0]  # evaluated and emptied at the 3rd call
    assert history[-1].best == 2.0  # mean of the window
    _, history = feed(cfg, [2.0, 2.0, 2.0], state=history[-1], steps_per_epoch=100)
    assert history[-1].scale == 0.5 and [s.scale for s in history[:2]] == [1.0, 1.0]


def test_accum_size_minus_one_is_one_evaluation_per_call_per_epoch():
    cfg = plateau_cfg(accum_size=-1, patience=2, cooldown=0)
    assert plateau_window(cfg) == 1
    _, history = feed(cfg, [1.0, 1.0, 1.0], steps_per_epoch=250)  # three epoch losses
    assert [s.scale for s in history] == [1.0, 1.0, 0.5]
    assert plateau_window(plateau_cfg(accum_size=7)) == 7


def test_steps_per_epoch_must_be_positive():
    with pytest.raises(ConfigError, match=r"\[steps_per_epoch\] = 0 must be >= 1"):
        plateau_update(plateau_init(), 1.0, plateau_cfg(), steps_per_epoch=0)


def test_non_finite_loss_is_no_improvement():
    cfg = plateau_cfg(accum_size=1, patience=5)
    state, _ = feed(cfg, [1.0, math.nan, math.inf])
    assert state.best == 1.0 and state.plateau_count == 2


def test_min_learning_rate_scale_ends_training_after_enough_reductions():
    cfg = plateau_cfg(accum_size=1, patience=1, cooldown=0, factor=0.5, min_learning_rate_scale=0.1)
    state, history = feed(cfg, [1.0] * 5)
    scales = [s.scale for s in history]
    assert scales == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert [schedule_ends_training(cfg, s) for s in scales] == [False, False, False, False, True]


def test_agrees_with_optax_reduce_on_plateau():
    cfg = plateau_cfg(factor=0.5, patience=2, rtol=0.05, cooldown=1, accum_size=4)
    # A slowly decreasing noisy loss: improvements, plateaus and reductions all happen.
    rng = np.random.default_rng(7)
    values = (np.linspace(2.0, 1.0, 160) + rng.uniform(0.0, 0.4, 160)).astype(np.float32)
    ours, theirs = plateau_scales_with_optax(cfg, values, accumulation=4, steps_per_epoch=1)
    assert len(set(ours)) >= 3  # at least two reductions happened
    assert ours == theirs
