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


class EdgeChunk(NamedTuple):
    """The per-edge inputs of the networks for all edges of a batch or for a slice of them.

    edge_vec:    (C, 3) r_ij in Angstrom, Cartesian (x, y, z).
    edge_onsite: (C,) bool, i == j and R == 0.
    edge_mask:   (C,) bool, False for padding edges.
    edge_src:    (C,) int32 atom i, an index into the batch's nodes (all of them, not only the slice's).
    edge_dst:    (C,) int32 atom j.
    """

    edge_vec: jnp.ndarray
    edge_onsite: jnp.ndarray
    edge_mask: jnp.ndarray
    edge_src: jnp.ndarray
    edge_dst: jnp.ndarray

    @classmethod
    def of(cls, batch: GraphBatch) -> EdgeChunk:
        """All edges of ``batch``."""
        return cls(batch.edge_vec, batch.edge_onsite, batch.edge_mask, batch.edge_src, batch.edge_dst)


def _lengths_directions(chunk: EdgeChunk, dtype: jnp.dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    return safe_length_and_direction(to_e3nn_axes(jnp.asarray(chunk.edge_vec, dtype=dtype)))


def message_weights(chunk: EdgeChunk, *, rmax: float, dtype: jnp.dtype) -> jnp.ndarray:
    """(C,) cutoff envelope of real off-site edges, 0 for on-site and padding edges."""
    lengths, _ = _lengths_directions(chunk, dtype)
    real_offsite = jnp.logical_and(jnp.asarray(chunk.edge_mask), jnp.logical_not(chunk.edge_onsite))
    return jnp.where(real_offsite, cutoff_envelope(lengths, rmax), 0.0).astype(dtype)


def node_degree(chunk: EdgeChunk, num_nodes: int, *, rmax: float, dtype: jnp.dtype) -> jnp.ndarray:
    """(num_nodes,) sum of the message weights of ``chunk``'s edges by their atom i (``edge_src``).

    The degree of a graph is the sum of this over any split of its edges into chunks."""
    weights = message_weights(chunk, rmax=rmax, dtype=dtype)
    return jax.ops.segment_sum(weights, jnp.asarray(chunk.edge_src), num_segments=num_nodes)


def inverse_sqrt_degree(degree: jnp.ndarray) -> jnp.ndarray:
    """(N,) 1 / sqrt(1 + degree): the message normalisation of each node."""
    return jax.lax.rsqrt(1.0 + degree)


def chunk_geometry(
    chunk: EdgeChunk, inv_sqrt_degree: jnp.ndarray, *, rmax: float, num_basis: int, dtype: jnp.dtype
) -> EdgeGeometry:
    """EdgeGeometry of ``chunk``'s edges with the nodes' normalisation ``inv_sqrt_degree`` (N,) of the
    whole graph (:func:`inverse_sqrt_degree` of the :func:`node_degree` summed over all edges)."""
    lengths, directions = _lengths_directions(chunk, dtype)
    return EdgeGeometry(
        lengths=lengths,
        directions=directions,
        radial=gaussian_basis(lengths, rmax, num_basis),
        message_weights=message_weights(chunk, rmax=rmax, dtype=dtype),
        inv_sqrt_degree=inv_sqrt_degree,
    )


def edge_geometry(batch: GraphBatch, *, rmax: float, num_basis: int, dtype: jnp.dtype) -> EdgeGeometry:
    """Lengths, directions, radial basis and message normalisation of a batch, computed in ``dtype``.

    Messages into node i = edge_src come from j = edge_dst along r_ij = edge_vec (Angstrom).
    """
    chunk = EdgeChunk.of(batch)
    degree = node_degree(chunk, batch.atomic_numbers.shape[0], rmax=rmax, dtype=dtype)
    return chunk_geometry(chunk, inverse_sqrt_degree(degree), rmax=rmax, num_basis=num_basis, dtype=dtype)
