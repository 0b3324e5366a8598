"""The reduce-on-plateau scales of hamflow and of optax.contrib on the same loss values, for the
agreement tests (test_plateau.py: accumulation over calls; test_optax_agreement.py: per epoch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hamflow.train.plateau import plateau_init, plateau_update


def plateau_scales_with_optax(
    cfg: Any, values: np.ndarray, *, accumulation: int, steps_per_epoch: int
) -> tuple[Sequence[float], Sequence[float]]:
    """(hamflow's scale after each value, optax's): ``cfg`` a reduce_on_plateau SchedulerConfig whose
    factor, patience, rtol and cooldown optax gets too, with ``accumulation`` values per evaluation."""
    import jax
    import jax.numpy as jnp
    import optax

    transform = optax.contrib.reduce_on_plateau(
        factor=cfg.factor,
        patience=cfg.patience,
        rtol=cfg.rtol,
        cooldown=cfg.cooldown,
        accumulation_size=accumulation,
    )
    params = {"w": jnp.zeros(())}
    update = jax.jit(lambda state, value: transform.update(params, state, params, value=value)[1])
    theirs_state = transform.init(params)
    ours_state = plateau_init()
    ours, theirs = [], []
    for value in np.asarray(values).tolist():
        ours_state = plateau_update(ours_state, value, cfg, steps_per_epoch=steps_per_epoch)
        theirs_state = update(theirs_state, value)
        ours.append(ours_state.scale)
        theirs.append(float(theirs_state.scale))
    return ours, theirs
