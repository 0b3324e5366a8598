"""Equivariant dropout of irreps features (``[process.train.drop] dropout_rate``).

Each irrep channel (one copy of an irrep l: 2l+1 components) of each row is kept or zeroed as a whole,
with probability ``1 - rate`` of being kept, and kept channels are scaled by ``1 / (1 - rate)``
(inverted dropout: the expectation is unchanged, and evaluation is the identity). A mask that is the
same for all 2l+1 components of a channel commutes with every rotation and with inversion, so the
features stay exactly equivariant for any mask. Used in the training step only.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np


def channel_index(irreps: e3nn.Irreps) -> np.ndarray:
    """(dim,) int: for every component of a feature with ``irreps``, the index of its irrep channel
    (0 .. irreps.num_irreps - 1), so that a (rows, num_irreps) mask expands to (rows, dim)."""
    index, channel = [], 0
    for mul, ir in irreps:
        for _ in range(mul):
            index.extend([channel] * ir.dim)
            channel += 1
    return np.asarray(index, dtype=np.int32)


def irreps_dropout(features: e3nn.IrrepsArray, rate: float, key: jax.Array) -> e3nn.IrrepsArray:
    """Drop whole irrep channels of ``features`` (rows, dim) with probability ``rate`` (0 <= rate < 1).

    Returns the features times a per-(row, channel) mask of 0 or 1 / (1 - rate); ``rate == 0`` returns
    them unchanged.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return features
    rows = features.array.shape[:-1]
    keep = jax.random.bernoulli(key, 1.0 - rate, (*rows, features.irreps.num_irreps))
    scale = jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(features.array.dtype)
    mask = jnp.take(scale, jnp.asarray(channel_index(features.irreps)), axis=-1)
    return e3nn.IrrepsArray(features.irreps, features.array * mask)
