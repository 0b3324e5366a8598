"""``clip_norm_factor`` as a runtime value of the optimizer state, and older optimizer states upgraded.

- The threshold lives in the state (``optax.inject_hyperparams``): clipping on, off or at another
  value keeps one state structure (so one compiled program), and the update follows the value.
- Checkpoints written before (bare optimizer state, or ``(EmptyState, state)`` with clipping in the
  program) restore into this layout with their moments kept.
"""

from __future__ import annotations

import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

from hamflow.train import checkpoint as ckpt
from hamflow.train.step import clip_threshold, init_opt_state, make_optimizer, upgrade_opt_state_dict


def _opt_cfg(clip: float, kind: str = "adamw") -> types.SimpleNamespace:
    return types.SimpleNamespace(
        type=kind,
        init_learning_rate=0.1,
        clip_norm_factor=clip,
        momentum=0.8,
        betas=(0.9, 0.999),
        weight=0.0,
        eps=1e-8,
    )


PARAMS = {"w": jnp.ones((3,), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
GRADS = {"w": jnp.full((3,), 30.0, jnp.float32), "b": jnp.full((2,), 40.0, jnp.float32)}  # norm 67.8


def test_clip_threshold_is_the_factor_or_infinity() -> None:
    assert clip_threshold(2.5) == 2.5
    assert clip_threshold(-1.0) == float("inf")


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_clipping_on_off_or_changed_keeps_one_state_structure(kind: str) -> None:
    structures = {
        jax.tree_util.tree_structure(make_optimizer(_opt_cfg(clip, kind)).init(PARAMS))
        for clip in (-1.0, 0.5, 3.0)
    }
    assert len(structures) == 1


def test_one_compiled_update_follows_the_threshold_in_the_state() -> None:
    optimizer = make_optimizer(_opt_cfg(-1.0, "sgd"))
    update = jax.jit(lambda grads, state: optimizer.update(grads, state, PARAMS))
    off, _ = update(GRADS, optimizer.init(PARAMS))
    on_state = make_optimizer(_opt_cfg(1.0, "sgd")).init(PARAMS)
    on, _ = update(GRADS, on_state)
    assert update._cache_size() == 1  # the same program ran both
    norm = float(optax.tree.norm(GRADS))
    np.testing.assert_allclose(float(optax.tree.norm(off)), 0.1 * norm, rtol=1e-6)
    np.testing.assert_allclose(float(optax.tree.norm(on)), 0.1 * 1.0, rtol=1e-6)  # clipped to 1, times lr


def test_one_compiled_update_follows_the_momentum_in_the_state() -> None:
    optimizer = make_optimizer(_opt_cfg(-1.0, "sgd"))
    update = jax.jit(lambda grads, state: optimizer.update(grads, state, PARAMS))
    _, state = update(GRADS, optimizer.init(PARAMS))
    _, slow_state = update(GRADS, make_optimizer(_opt_cfg(-1.0, "sgd")).init(PARAMS))
    high = optax.tree_utils.tree_set(state, momentum=jnp.float32(0.8))
    low = optax.tree_utils.tree_set(slow_state, momentum=jnp.float32(0.1))
    second_high, _ = update(GRADS, high)
    second_low, _ = update(GRADS, low)
    assert update._cache_size() == 1
    # second step's update: -lr (g + momentum g) per entry
    np.testing.assert_allclose(np.asarray(second_high["w"]), -0.1 * 30.0 * 1.8, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(second_low["w"]), -0.1 * 30.0 * 1.1, rtol=1e-6)


def _advanced_state(optimizer: optax.GradientTransformation) -> object:
    state = optimizer.init(PARAMS)
    _, state = optimizer.update(GRADS, state, PARAMS)
    return state


@pytest.mark.parametrize("ema", [0.0, 0.99])
@pytest.mark.parametrize("old_clip", [None, 1.0])
def test_checkpoints_written_before_runtime_clipping_restore_with_their_moments(
    tmp_path: Path, ema: float, old_clip: float | None
) -> None:
    base = optax.inject_hyperparams(optax.adamw)(
        learning_rate=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0
    )
    old_optimizer = base if old_clip is None else optax.chain(optax.clip_by_global_norm(old_clip), base)
    old_state = init_opt_state(old_optimizer, PARAMS, ema_decay=ema)
    inner = _advanced_state(old_optimizer)  # moments that are not zero, so their loss would show
    old_state = old_state._replace(inner=inner) if ema else inner
    ckpt.write_payload(tmp_path / "epoch_1", "state", {"opt_state": old_state, "step": np.asarray(1)}, {})

    new_optimizer = make_optimizer(_opt_cfg(2.0 if old_clip else -1.0))
    template = {"opt_state": init_opt_state(new_optimizer, PARAMS, ema_decay=ema), "step": np.asarray(0)}
    with pytest.raises(Exception):  # noqa: B017 - without the upgrade the layouts differ
        ckpt.read_payload(tmp_path / "epoch_1", template)

    def upgrade(saved: dict, fresh: dict) -> dict:
        return {**saved, "opt_state": upgrade_opt_state_dict(saved["opt_state"], fresh["opt_state"])}

    restored = ckpt.read_payload(tmp_path / "epoch_1", template, upgrade)
    new_inner = restored["opt_state"].inner if ema else restored["opt_state"]
    old_base = inner if old_clip is None else inner[1]
    clip_state, base_state = new_inner
    assert float(clip_state.hyperparams["max_norm"]) == (2.0 if old_clip else float("inf"))
    _assert_same_moments(serialization.to_state_dict(old_base), serialization.to_state_dict(base_state))
    # and the restored state runs in this version's optimizer
    new_optimizer.update(GRADS, new_inner, PARAMS)


def _assert_same_moments(saved: dict, restored: dict) -> None:
    """Every value of ``restored`` (this version's state dict) equals the saved one at its place; a
    moment saved as a tree of the parameters' shapes equals its leaves raveled and concatenated."""
    assert set(saved) == set(restored)
    for key, got in restored.items():
        if isinstance(got, dict):
            _assert_same_moments(saved[key], got)
            continue
        leaves = [np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(saved[key])]
        flat = isinstance(saved[key], dict)
        expected = np.concatenate(leaves) if flat else leaves[0].reshape(np.shape(got))
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(got))


def test_a_state_in_this_layout_is_left_as_it_is() -> None:
    state = serialization.to_state_dict(make_optimizer(_opt_cfg(1.0)).init(PARAMS))
    assert upgrade_opt_state_dict(state, state) is state
