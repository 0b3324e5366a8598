"""hamflow's schedules where its docs say they follow optax, against optax's own functions.

``warmup_cosine_decay`` is optax's ``warmup_cosine_decay_schedule(init_scale, 1, W, W + D, e)`` on the
scale (docs/schedules.md); ``warmup_exponential_decay`` and ``reduce_on_plateau`` are checked against
optax in test_schedules.py and test_plateau.py, whose per-epoch case (``accum_size = -1``, one
evaluation per call) is added here. optax evaluates in float32, hence rtol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from hamflow.train.plateau import plateau_init, plateau_update
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
    import jax
    import jax.numpy as jnp
    import optax

    factor, patience, rtol, cooldown = 0.7, 3, 0.01, 2
    cfg = scheduler_config_from_section(
        {
            "type": "reduce_on_plateau",
            "factor": factor,
            "patience": patience,
            "rtol": rtol,
            "cooldown": cooldown,
            "accum_size": -1,
        }
    )
    transform = optax.contrib.reduce_on_plateau(
        factor=factor, patience=patience, rtol=rtol, cooldown=cooldown, accumulation_size=1
    )
    params = {"w": jnp.zeros(())}
    update = jax.jit(lambda state, value: transform.update(params, state, params, value=value)[1])
    theirs_state = transform.init(params)
    values = (np.linspace(1.5, 1.0, 80) + np.random.default_rng(3).uniform(0.0, 0.3, 80)).astype(np.float32)
    ours_state = plateau_init()
    ours, theirs = [], []
    for value in values.tolist():
        ours_state = plateau_update(ours_state, value, cfg, steps_per_epoch=7)
        theirs_state = update(theirs_state, value)
        ours.append(ours_state.scale)
        theirs.append(float(theirs_state.scale))
    assert len(set(ours)) >= 3  # reductions happened
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
