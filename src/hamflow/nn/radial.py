"""Edge geometry for the networks: safe lengths and directions, Gaussian radial basis, smooth cutoff.

On-site edges (i == j, R = 0) have a zero vector; every function here returns finite values and finite
gradients for it (length 0, direction 0, so the spherical harmonics are (1, 0, 0, ...)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hamflow.graph.batch import GraphBatch
from hamflow.nn.wigner import STANDARD_TO_E3NN_AXES


def safe_length_and_direction(vectors: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Lengths (...,) and unit directions (..., 3) of vectors (..., 3); zero vectors give 0 and (0, 0, 0).

    Units follow the input (Angstrom). Gradients are finite at the zero vector.
    """
    squared = jnp.sum(vectors**2, axis=-1)
    nonzero = squared > 0.0
    safe_length = jnp.sqrt(jnp.where(nonzero, squared, 1.0))
    length = jnp.where(nonzero, safe_length, 0.0)
    direction = jnp.where(nonzero[..., None], vectors / safe_length[..., None], 0.0)
    return length, direction


def to_e3nn_axes(vectors: jnp.ndarray) -> jnp.ndarray:
    """Cartesian (x, y, z) vectors (..., 3) reordered to (y, z, x), e3nn-jax's axes for standard harmonics.

    e3nn's spherical harmonics of the reordered vector equal the standard real harmonics in the DeepH
    m order; every equivariant feature of the network then transforms with the standard Wigner D.
    """
    return vectors[..., list(STANDARD_TO_E3NN_AXES)]


def gaussian_basis(lengths: jnp.ndarray, rmax: float, num_basis: int) -> jnp.ndarray:
    """Gaussians exp(-((r - mu_k) / sigma)^2 / 2), centres mu_k evenly on [0, rmax] Angstrom.

    lengths: (...,) in Angstrom. Returns (..., num_basis); sigma is the spacing of the centres.
    """
    if num_basis < 2:
        raise ValueError(f"num_basis must be >= 2, got {num_basis}")
    centres = jnp.linspace(0.0, rmax, num_basis, dtype=lengths.dtype)
    width = rmax / (num_basis - 1)
    return jnp.exp(-0.5 * ((lengths[..., None] - centres) / width) ** 2)


def cutoff_envelope(lengths: jnp.ndarray, rmax: float) -> jnp.ndarray:
    """Smooth step from 1 at r = 0 to 0 at r >= rmax (C2: 1 - 10x^3 + 15x^4 - 6x^5, x = r / rmax).

    lengths: (...,) Angstrom. Returns (...,) in [0, 1]; zero, with zero derivatives, at and beyond rmax.
    """
    x = jnp.clip(lengths / rmax, 0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


class EdgeGeometry(NamedTuple):
    """Per-edge and per-node geometric inputs shared by the blocks of a network.

    lengths:          (E,) Angstrom (0 for on-site and padding edges).
    directions:       (E, 3) unit vectors in e3nn axes (y, z, x); zero for zero-length edges.
    radial:           (E, num_basis) Gaussian basis of the lengths.
    message_weights:  (E,) cutoff envelope for real off-site edges, 0 for on-site and padding edges.
    inv_sqrt_degree:  (N,) 1 / sqrt(1 + sum of message_weights over the node's edges).
    """

    lengths: jnp.ndarray
    directions: jnp.ndarray
    radial: jnp.ndarray
    message_weights: jnp.ndarray
    inv_sqrt_degree: jnp.ndarray


def edge_geometry(batch: GraphBatch, *, rmax: float, num_basis: int, dtype: jnp.dtype) -> EdgeGeometry:
    """Lengths, directions, radial basis and message normalisation of a batch, computed in ``dtype``.

    Messages into node i = edge_src come from j = edge_dst along r_ij = edge_vec (Angstrom).
    """
    vectors = to_e3nn_axes(jnp.asarray(batch.edge_vec, dtype=dtype))
    lengths, directions = safe_length_and_direction(vectors)
    real_offsite = jnp.logical_and(jnp.asarray(batch.edge_mask), jnp.logical_not(batch.edge_onsite))
    message_weights = jnp.where(real_offsite, cutoff_envelope(lengths, rmax), 0.0).astype(dtype)
    degree = jax.ops.segment_sum(
        message_weights, jnp.asarray(batch.edge_src), num_segments=batch.atomic_numbers.shape[0]
    )
    return EdgeGeometry(
        lengths=lengths,
        directions=directions,
        radial=gaussian_basis(lengths, rmax, num_basis),
        message_weights=message_weights,
        inv_sqrt_degree=jax.lax.rsqrt(1.0 + degree),
    )
