"""Supervised losses on predicted Hamiltonian / density-matrix blocks, masks and gauge honoured.

All functions take arrays shaped like ``GraphBatch.labels``: (E, B, B) real or (E, 2B, 2B) complex,
with a boolean mask of the same shape. Residuals are divided by a per-entry ``scale`` (the target
normaliser's block scale, eV for H) so that every orbital block weighs alike; pass ones for raw units.

Loss definitions (the mean runs over masked entries only):
- ``mse``:   mean |r|^2
- ``mae``:   mean |r|
- ``huber``: mean of optax's Huber on |r| with delta = ``HUBER_DELTA`` (in normalised units)
- ``wmae``:  structure-weighted MAE: every structure in the batch weighs the same, whatever its
             number of entries (mean over structures of each structure's MAE), so large cells do not
             drown small molecules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hamflow.errors import NotAvailableError

SUPERVISED_LOSSES = ("mse", "mae", "wmae", "huber")
UNSUPERVISED_LOSSES = ("ai2dft", "ai2dft_node", "hopad", "aims")
HUBER_DELTA = 1.0


def gauge_shift(
    residual: jnp.ndarray, overlap: jnp.ndarray, mask: jnp.ndarray, edge_graph: jnp.ndarray, num_graphs: int
) -> jnp.ndarray:
    """Remove the per-structure constant energy shift mu*S from a residual dH (eV).

    mu = <dH, S> / <S, S> per structure (sums over masked entries), returned as dH - mu S.
    residual, overlap, mask: (E, B, B); edge_graph: (E,) structure index of each edge.
    """
    s = jnp.where(mask, overlap, 0.0)
    dh = jnp.where(mask, residual, 0.0)
    num = jax.ops.segment_sum(jnp.sum(jnp.real(dh) * s, axis=(1, 2)), edge_graph, num_segments=num_graphs)
    den = jax.ops.segment_sum(jnp.sum(s * s, axis=(1, 2)), edge_graph, num_segments=num_graphs)
    mu = num / jnp.where(den > 0, den, 1.0)
    return residual - mu[edge_graph][:, None, None] * overlap


def _masked_mean(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    count = jnp.sum(mask)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1)


def block_loss(
    loss_type: str,
    residual: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    edge_graph: jnp.ndarray,
    num_graphs: int,
) -> jnp.ndarray:
    """Scalar loss of a (normalised) residual ``pred - label`` over the masked entries.

    residual: (E, B, B) real or complex; mask: same shape, bool; edge_graph: (E,) int.
    """
    magnitude = jnp.abs(residual)
    if loss_type == "mse":
        return _masked_mean(magnitude**2, mask)
    if loss_type == "mae":
        return _masked_mean(magnitude, mask)
    if loss_type == "huber":
        quadratic = jnp.minimum(magnitude, HUBER_DELTA)
        linear = magnitude - quadratic
        return _masked_mean(0.5 * quadratic**2 + HUBER_DELTA * linear, mask)
    if loss_type == "wmae":
        per_edge_sum = jnp.sum(jnp.where(mask, magnitude, 0.0), axis=(1, 2))
        per_edge_count = jnp.sum(mask, axis=(1, 2))
        sums = jax.ops.segment_sum(per_edge_sum, edge_graph, num_segments=num_graphs)
        counts = jax.ops.segment_sum(per_edge_count, edge_graph, num_segments=num_graphs)
        present = counts > 0
        per_structure = sums / jnp.maximum(counts, 1)
        return jnp.sum(jnp.where(present, per_structure, 0.0)) / jnp.maximum(jnp.sum(present), 1)
    if loss_type in UNSUPERVISED_LOSSES:
        raise NotAvailableError("model.loss_type", loss_type)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def masked_abs_error_sum(residual: jnp.ndarray, mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(sum of |residual| over masked entries, number of masked entries): for MAE in physical units."""
    return jnp.sum(jnp.where(mask, jnp.abs(residual), 0.0)), jnp.sum(mask)
