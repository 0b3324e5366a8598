"""The jitted training and evaluation steps: model -> normalised prediction -> masked loss.

A step receives a *stacked* batch: every array of :class:`~hamflow.graph.batch.GraphBatch` carries a
leading device axis D (D = 1 on one device). The loss is the mean over the D shares; with several
devices the stacked batch is sharded along that axis (``jax.sharding``) and XLA splits the work,
the parameters being replicated, so the gradient is the all-device mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from hamflow.graph.batch import GraphBatch
from hamflow.train.losses import block_loss, gauge_shift, masked_abs_error_sum
from hamflow.train.normaliser import Normaliser

if TYPE_CHECKING:
    import flax.linen as nn

    from hamflow.config.train_config import OptimizerConfig


class TrainState(NamedTuple):
    """Everything a step updates. step: int32 scalar; plateau_scale: float32 scalar (the
    reduce-on-plateau factor, 1 for the other schedules)."""

    params: Any
    opt_state: Any
    step: jnp.ndarray
    plateau_scale: jnp.ndarray


class AveragedState(NamedTuple):
    """Optimizer state when the weights are averaged (``process.train.ema_decay`` > 0).

    inner: the optimizer's own state; raw_params: the weights the optimizer updates (gradients are
    taken there). ``TrainState.params`` then holds their exponential moving average, which is what
    validation, the saved models and inference use. Stored with the optimizer state, so a resumed
    run continues both exactly.
    """

    inner: Any
    raw_params: Any


def init_opt_state(optimizer: optax.GradientTransformation, params: Any, *, ema_decay: float) -> Any:
    """The optimizer state for ``params``: plain, or :class:`AveragedState` when ema_decay > 0."""
    if ema_decay > 0:
        return AveragedState(
            optimizer.init(params), jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), params)
        )
    return optimizer.init(params)


def ema_weight(decay: float, step: jnp.ndarray) -> jnp.ndarray:
    """Weight of the old average at optimizer step ``step`` (0-based): min(decay, (1 + t) / (10 + t)),
    the usual warm-up so that early averages are not dominated by the random initial weights."""
    t = step.astype(jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


class StepMetrics(NamedTuple):
    """Per-step sums (device arrays, fetched once per epoch).

    loss: the batch loss; abs_err: sum |pred - label| over masked entries (target units, eV for H);
    entries: number of masked entries; learning_rate: the rate used for this step (0 in evaluation).
    """

    loss: jnp.ndarray
    abs_err: jnp.ndarray
    entries: jnp.ndarray
    learning_rate: jnp.ndarray


def clip_threshold(clip_norm_factor: float) -> float:
    """The global-norm threshold of ``clip_norm_factor``: itself when > 0, +inf (no clipping) when < 0."""
    return float(clip_norm_factor) if clip_norm_factor > 0 else float("inf")


def make_optimizer(opt_cfg: OptimizerConfig) -> optax.GradientTransformation:
    """optax optimizer of ``[process.train.optimizer]``: every hyper-parameter a runtime value.

    sgd: momentum; adam: betas, eps; adamw: betas, eps, weight (decoupled weight decay). The chain
    always starts with global-norm clipping at :func:`clip_threshold` (+inf when clip_norm_factor < 0,
    which leaves the gradient unchanged), so switching clipping on or off, or changing any of these
    values, keeps the optimizer state's structure and the compiled programs: ``optax.inject_hyperparams``
    holds them in the state, not in the program.

    The chain works on the parameters raveled into one vector (``optax.flatten``): its moments are
    (P,) arrays, and the compiled step holds a few dozen optimizer operations instead of a few
    dozen per parameter leaf (sparrow has ~270 leaves, which made the optimizer half of the train
    program's operations and of its compile time). The update is the same per element.
    """
    kind = opt_cfg.type
    b1, b2 = (float(b) for b in opt_cfg.betas)
    if kind == "sgd":
        base = optax.inject_hyperparams(optax.sgd)(
            learning_rate=opt_cfg.init_learning_rate, momentum=opt_cfg.momentum
        )
    elif kind == "adam":
        base = optax.inject_hyperparams(optax.adam)(
            learning_rate=opt_cfg.init_learning_rate, b1=b1, b2=b2, eps=opt_cfg.eps
        )
    elif kind == "adamw":
        base = optax.inject_hyperparams(optax.adamw)(
            learning_rate=opt_cfg.init_learning_rate,
            b1=b1,
            b2=b2,
            eps=opt_cfg.eps,
            weight_decay=opt_cfg.weight,
        )
    else:  # the config schema admits only the three above
        raise ValueError(f"unknown optimizer type {kind!r}")
    clip = optax.inject_hyperparams(optax.clip_by_global_norm)(
        max_norm=clip_threshold(opt_cfg.clip_norm_factor)
    )
    return optax.flatten(optax.chain(clip, base))


def upgrade_opt_state_dict(saved: Any, fresh: Any) -> Any:
    """A saved optimizer state (flax state dict) in the layout of ``fresh``, this version's state dict.

    Checkpoints written before clipping became a runtime value hold either the bare optimizer state
    (clipping off) or ``(EmptyState, optimizer state)`` (clipping on, its threshold in the program).
    Both gain the fresh clipping state (the threshold of this run's TOML); the moments, counts and
    rates are kept as saved. Checkpoints written before the optimizer worked on raveled parameters
    hold each moment as a tree of the parameters' shapes: it is raveled in the order
    ``optax.flatten`` uses (the tree's leaves, dict keys sorted), so the moments are kept exactly.
    A state already in this layout is returned unchanged.
    """
    return _ravel_moments(_upgrade_chain_layout(saved, fresh), fresh)


def _ravel_moments(saved: Any, fresh: Any) -> Any:
    """``saved`` with every tree that ``fresh`` holds as one (P,) vector raveled to it (see
    :func:`upgrade_opt_state_dict`); the same object when nothing needed raveling."""
    if isinstance(saved, dict) and not isinstance(fresh, dict) and np.ndim(fresh) == 1:
        leaves = jax.tree_util.tree_leaves(saved)
        if leaves and sum(np.size(leaf) for leaf in leaves) == np.size(fresh):
            return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])
        return saved
    if not isinstance(saved, dict) or not isinstance(fresh, dict):
        return saved
    upgraded = {key: _ravel_moments(value, fresh[key]) for key, value in saved.items() if key in fresh}
    upgraded = {**saved, **upgraded}
    if all(upgraded[key] is saved[key] for key in saved):
        return saved
    return upgraded


def _upgrade_chain_layout(saved: Any, fresh: Any) -> Any:
    """The clipping part of :func:`upgrade_opt_state_dict`."""
    if not isinstance(saved, dict) or not isinstance(fresh, dict):
        return saved
    if set(fresh) == {"inner", "raw_params"} and "inner" in saved:  # AveragedState
        return {**saved, "inner": _upgrade_chain_layout(saved["inner"], fresh["inner"])}
    if set(fresh) != {"0", "1"}:
        return saved
    if "hyperparams" in saved:  # the bare optimizer state
        return {"0": fresh["0"], "1": saved}
    if set(saved) == {"0", "1"} and saved["0"] == {} and fresh["0"] != {}:  # (EmptyState, state)
        return {"0": fresh["0"], "1": saved["1"]}
    return saved


def _blend(average: Any, latest: Any, keep: jnp.ndarray) -> Any:
    """keep * average + (1 - keep) * latest on parameter trees, computed on their raveled vectors
    (one fused operation instead of one per leaf)."""
    flat_average, unravel = ravel_pytree(average)
    flat_latest, _ = ravel_pytree(latest)
    return unravel(keep * flat_average + (1.0 - keep) * flat_latest)


def _set_learning_rate(opt_state: Any, learning_rate: jnp.ndarray) -> Any:
    """Return opt_state with the injected learning rate replaced (in whichever part of the chain has one)."""
    if isinstance(opt_state, tuple) and not hasattr(opt_state, "hyperparams"):
        return tuple(_set_learning_rate(s, learning_rate) for s in opt_state)
    if hasattr(opt_state, "hyperparams") and "learning_rate" in opt_state.hyperparams:
        hyper = dict(opt_state.hyperparams)
        hyper["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
        return opt_state._replace(hyperparams=hyper)
    return opt_state


def _share_loss(
    apply_fn: Callable,
    params: Any,
    batch: GraphBatch,
    normaliser: Normaliser,
    *,
    loss_type: str,
    standardize_gauge: bool,
    spinful: bool,
) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """Loss of one device's share (an unstacked GraphBatch) and its (abs error sum, entry count)."""
    raw = apply_fn(params, batch)
    prediction, scale = normaliser.physical(raw, batch, spinful=spinful, dtype=batch.labels.dtype)
    mask = batch.label_mask
    residual = prediction - batch.labels
    if standardize_gauge:
        if spinful:
            # spinful S acts as kron(I2, S): shift every diagonal spin sub-block by mu S
            eye2 = jnp.eye(2, dtype=batch.overlap.dtype)
            overlap = jnp.einsum("ab,eij->eaibj", eye2, batch.overlap).reshape(residual.shape)
        else:
            overlap = batch.overlap
        residual = gauge_shift(residual, overlap, mask, batch.edge_graph, batch.graph_mask.shape[0])
    safe_scale = jnp.where(mask, scale, 1.0)
    loss = block_loss(
        loss_type,
        residual / safe_scale,
        mask,
        edge_graph=batch.edge_graph,
        num_graphs=batch.graph_mask.shape[0],
    )
    return loss, masked_abs_error_sum(residual, mask)


def dropout_steps(model: nn.Module, rate: float, seed: int) -> dict[str, Any]:
    """The :func:`make_steps` keywords for ``[process.train.drop] dropout_rate`` on a flax ``model``
    built with that rate (hamflow.nn.model.build_model): none when rate is 0 (the step is unchanged)."""
    if rate <= 0:
        return {}

    def dropout_apply_fn(params: Any, batch: GraphBatch, key: jnp.ndarray) -> jnp.ndarray:
        return model.apply({"params": params}, batch, dropout=True, rngs={"dropout": key})

    return {"dropout_apply_fn": dropout_apply_fn, "dropout_seed": int(seed)}


def make_steps(
    apply_fn: Callable,
    optimizer: optax.GradientTransformation,
    normaliser: Normaliser,
    *,
    loss_type: str,
    standardize_gauge: bool,
    spinful: bool,
    ema_decay: float = 0.0,
    dropout_apply_fn: Callable | None = None,
    dropout_seed: int = 0,
) -> tuple[Callable, Callable]:
    """(train_step, eval_step), both pure and jittable.

    train_step(state, stacked_batch, learning_rate) -> (state, StepMetrics); eval_step(params,
    stacked_batch) -> StepMetrics. ``apply_fn(params, batch)`` returns the network's raw blocks
    (E, B, B). ``learning_rate`` (float32 scalar) is the schedule's rate for this step, computed by
    the caller: it is a runtime argument, so a changed schedule, rate or ``max_epoch`` reuses the
    compiled program (and the persistent compilation cache). The plateau scale multiplies it.
    ema_decay > 0: the state's optimizer state is an :class:`AveragedState` (see
    :func:`init_opt_state`) and ``state.params`` the moving average of the optimizer's weights.
    dropout_apply_fn: ``(params, batch, key) -> raw blocks`` with dropout (``[process.train.drop]``),
    used by train_step only (eval_step always uses ``apply_fn``); its key is
    ``fold_in(PRNGKey(dropout_seed), step)`` split over the D shares, so a resumed run draws the same
    masks as an uninterrupted one. None: no dropout.
    """

    def stacked_loss(
        params: Any, stacked: GraphBatch, keys: jnp.ndarray | None = None
    ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
        def one(
            batch: GraphBatch, key: jnp.ndarray | None
        ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
            forward = apply_fn if key is None else (lambda p, b: dropout_apply_fn(p, b, key))
            return _share_loss(
                forward,
                params,
                batch,
                normaliser,
                loss_type=loss_type,
                standardize_gauge=standardize_gauge,
                spinful=spinful,
            )

        if keys is None:
            losses, (abs_err, entries) = jax.vmap(lambda batch: one(batch, None))(stacked)
        else:
            losses, (abs_err, entries) = jax.vmap(one)(stacked, keys)
        return jnp.mean(losses), (jnp.sum(abs_err), jnp.sum(entries))

    def train_step(
        state: TrainState, stacked: GraphBatch, schedule_rate: jnp.ndarray
    ) -> tuple[TrainState, StepMetrics]:
        averaged = ema_decay > 0
        raw = state.opt_state.raw_params if averaged else state.params
        inner = state.opt_state.inner if averaged else state.opt_state
        keys = None
        if dropout_apply_fn is not None:
            step_key = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state.step)
            keys = jax.random.split(step_key, stacked.labels.shape[0])
        (loss, (abs_err, entries)), grads = jax.value_and_grad(stacked_loss, has_aux=True)(raw, stacked, keys)
        learning_rate = schedule_rate * state.plateau_scale
        inner = _set_learning_rate(inner, learning_rate)
        updates, inner = optimizer.update(grads, inner, raw)
        raw = optax.apply_updates(raw, updates)
        if averaged:
            keep = ema_weight(ema_decay, state.step)
            params = _blend(state.params, raw, keep)
            opt_state = AveragedState(inner, raw)
        else:
            params, opt_state = raw, inner
        new_state = TrainState(params, opt_state, state.step + 1, state.plateau_scale)
        return new_state, StepMetrics(loss, abs_err, entries, jnp.asarray(learning_rate, jnp.float32))

    def eval_step(params: Any, stacked: GraphBatch) -> StepMetrics:
        loss, (abs_err, entries) = stacked_loss(params, stacked)
        return StepMetrics(loss, abs_err, entries, jnp.zeros((), jnp.float32))

    return train_step, eval_step
