"""Spinful (complex) blocks, finite gradients through on-site edges, and bfloat16 compute."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, equivariance_error, molecule_batch, random_rotation

from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import basis_rotation

SHELLS = (0, 1)
BASIS_SIZE = 4
SETTINGS = {
    "net_irreps": "8x0e+4x1o+2x2e",
    "num_blocks": 1,
    "rmax": 4.0,
    "consider_parity": True,
}
POSITIONS, NUMBERS = CLUSTER_POSITIONS[:4], CLUSTER_NUMBERS[:4]


@pytest.fixture(scope="module")
def spinful():
    model = build_model("sparrow", SHELLS, **SETTINGS, spinful=True, spin_orbit=False)
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * BASIS_SIZE)
    return model, init_params(model, batch, seed=1), batch


def test_spinful_blocks_are_complex_and_each_spin_block_rotates(spinful):
    model, params, batch = spinful
    apply = jax.jit(model.apply)
    blocks = np.asarray(apply(params, batch))
    assert blocks.shape == (batch.num_edges, 2 * BASIS_SIZE, 2 * BASIS_SIZE) and blocks.dtype == np.complex64
    assert np.abs(blocks.imag).max() > 0 and np.all(blocks[~batch.edge_mask] == 0)
    rotation = random_rotation(5)
    rotated = np.asarray(apply(params, molecule_batch(POSITIONS @ rotation.T, NUMBERS, 2 * BASIS_SIZE)))
    # Spin is treated as invariant: D acts on the orbital index of each of uu, ud, du, dd.
    d = np.kron(np.eye(2), basis_rotation(SHELLS, rotation))
    for part in (np.real, np.imag):
        error, scale = equivariance_error(part(blocks), part(rotated), d, batch.edge_mask)
        assert error < 2e-5 * max(scale, 1.0)


def test_gradients_are_finite_through_on_site_edges(spinful):
    model, params, batch = spinful
    assert batch.edge_onsite.sum() == len(NUMBERS)

    def loss(p):
        return jnp.sum(jnp.abs(model.apply(p, batch)) ** 2)

    gradients = jax.jit(jax.grad(loss))(params)
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(gradients)]
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert sum(float(np.abs(leaf).sum()) for leaf in leaves) > 0


def test_bfloat16_compute_keeps_float32_params():
    model32 = build_model("sparrow", SHELLS, **SETTINGS)
    batch = molecule_batch(POSITIONS, NUMBERS, BASIS_SIZE)
    params = init_params(model32, batch, seed=2)
    model16 = build_model("sparrow", SHELLS, **SETTINGS, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(model16.init, jax.random.PRNGKey(0), batch)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {np.dtype(np.float32)}
    reference = np.asarray(jax.jit(model32.apply)(params, batch))
    low = np.asarray(jax.jit(model16.apply)(params, batch)).astype(np.float32)
    assert np.all(np.isfinite(low))
    deviation = np.max(np.abs(low - reference)) / np.max(np.abs(reference))
    print(f"bfloat16 compute: max deviation from float32 {deviation:.1e} of max |H|")
    assert deviation < 0.1
