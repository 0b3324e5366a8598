"""hamflow's schedules where its docs say they follow optax, against optax's own functions.

``warmup_cosine_decay`` is optax's ``warmup_cosine_decay_schedule(init_scale, 1, W, W + D, e)`` on the
scale (docs/schedules.md); ``warmup_exponential_decay`` and ``reduce_on_plateau`` are checked against
optax in test_schedules.py and test_plateau.py, whose per-epoch case (``accum_size = -1``, one
evaluation per call) is added here. optax evaluates in float32, hence rtol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from optax_reference import plateau_scales_with_optax

from hamflow.train.schedules import schedule_table, scheduler_config_from_section


@pytest.mark.parametrize(
    ("warmup", "decay", "init_scale", "end_scale"),
    [(10, 200, 0.1, 0.05), (0, 150, 0.0, -1.0), (25, -1, 0.3, 0.2), (5, 400, 0.01, 0.0)],
)
def test_warmup_cosine_decay_equals_optax(warmup, decay, init_scale, end_scale):
    import jax.numpy as jnp
    import optax

    total, init_lr = 300, 2e-3
    cfg = scheduler_config_from_section(
        {
            "type": "warmup_cosine_decay",
            "warmup_steps": warmup,
            "decay_steps": decay,
            "init_scale": init_scale,
            "end_scale": end_scale,
        }
    )
    steps = list(range(0, total, 1))
    ours = [lr for _, lr in schedule_table(cfg, init_learning_rate=init_lr, total_steps=total, steps=steps)]
    d = decay if decay > 0 else total - warmup
    e = 0.0 if end_scale == -1.0 else end_scale
    reference = optax.warmup_cosine_decay_schedule(init_scale, 1.0, warmup, warmup + d, e)
    expected = [init_lr * float(reference(jnp.asarray(step))) for step in steps]
    # float32 cancellation near the end of the cosine: an absolute tolerance of 1e-7 of the peak rate
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7 * init_lr)


def test_per_epoch_plateau_equals_optax_with_accumulation_one():
    """accum_size = -1 (DeepH-pack's default): one call per epoch, each call one evaluation."""
    cfg = scheduler_config_from_section(
        {
            "type": "reduce_on_plateau",
            "factor": 0.7,
            "patience": 3,
            "rtol": 0.01,
            "cooldown": 2,
            "accum_size": -1,
        }
    )
    values = (np.linspace(1.5, 1.0, 80) + np.random.default_rng(3).uniform(0.0, 0.3, 80)).astype(np.float32)
    ours, theirs = plateau_scales_with_optax(cfg, values, accumulation=1, steps_per_epoch=7)
    assert len(set(ours)) >= 3  # reductions happened
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
