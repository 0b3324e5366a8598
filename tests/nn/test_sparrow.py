"""sparrow: predicted blocks rotate with the Wigner D matrices (proper rotations and inversion)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, equivariance_error, molecule_batch, random_rotation

from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import basis_rotation

SHELLS = (0, 0, 1, 2)
BASIS_SIZE = 10
SETTINGS = {
    "net_irreps": "8x0e+4x1o+2x1e+4x2e+2x2o+2x3o+2x4e",  # natural and unnatural parities
    "num_blocks": 2,
    "rmax": 4.0,
    "consider_parity": True,
}


@pytest.fixture(scope="module")
def sparrow():
    model = build_model("sparrow", SHELLS, **SETTINGS)
    batch = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE)
    params = init_params(model, batch, seed=0)
    apply = jax.jit(model.apply)
    return model, params, apply, batch


def predict_rotated(apply, params, rotation, dtype=np.float32):
    batch = molecule_batch(CLUSTER_POSITIONS @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE, dtype=dtype)
    return np.asarray(apply(params, batch))


@pytest.mark.parametrize(("seed", "improper"), [(1, False), (2, False), (3, True)])
def test_equivariant_float32(sparrow, seed, improper):
    _, params, apply, batch = sparrow
    blocks = np.asarray(apply(params, batch))
    assert blocks.shape == (batch.num_edges, BASIS_SIZE, BASIS_SIZE) and blocks.dtype == np.float32
    rotation = random_rotation(seed, improper=improper)
    rotated = predict_rotated(apply, params, rotation)
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    print(
        f"sparrow float32 {'improper' if improper else 'proper'}: max error {error:.2e}, max |H| {scale:.2f}"
    )
    assert error < 2e-5 * max(scale, 1.0)


def test_equivariant_float64(sparrow):
    _, params, _, _ = sparrow
    rotation = random_rotation(4, improper=True)
    with jax.enable_x64(True):
        model64 = build_model("sparrow", SHELLS, **SETTINGS, dtype=jnp.float64)
        apply64 = jax.jit(model64.apply)
        batch = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE, dtype=np.float64)
        blocks = np.asarray(apply64(params, batch))
        rotated = predict_rotated(apply64, params, rotation, dtype=np.float64)
    assert blocks.dtype == np.float64
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    print(f"sparrow float64 rotation+inversion: max error {error:.2e}, max |H| {scale:.2f}")
    assert error < 1e-10 * max(scale, 1.0)


def test_equivariant_for_a_linear_molecule(sparrow):
    """Pseudovector (1e) features of a linear molecule are zero by symmetry, rounding noise in float32:
    the normalisation must not blow them up into non-equivariant O(1) signals."""
    _, params, apply, batch = sparrow
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    positions = np.outer([0.0, 1.1, 2.3, -1.2, 3.4, -2.5], axis)
    linear = molecule_batch(positions, CLUSTER_NUMBERS, BASIS_SIZE)
    rotation = random_rotation(8, improper=True)
    blocks = np.asarray(apply(params, linear))
    rotated = np.asarray(apply(params, molecule_batch(positions @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE)))
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    print(f"sparrow float32 linear molecule: max error {error:.2e}, max |H| {scale:.2f}")
    assert error < 2e-5 * max(scale, 1.0)


def test_atom_permutation_permutes_blocks_and_padding_is_zero(sparrow):
    _, params, apply, batch = sparrow
    blocks = np.asarray(apply(params, batch))
    assert np.all(np.isfinite(blocks))
    assert np.all(blocks[~batch.edge_mask] == 0)
    order = np.array([3, 0, 5, 1, 4, 2])
    permuted = molecule_batch(CLUSTER_POSITIONS[order], [CLUSTER_NUMBERS[k] for k in order], BASIS_SIZE)
    permuted_blocks = np.asarray(apply(params, permuted))
    n = len(order)
    for a in range(n):
        for b in range(n):
            np.testing.assert_allclose(
                permuted_blocks[a * n + b], blocks[order[a] * n + order[b]], atol=2e-5, rtol=1e-5
            )
