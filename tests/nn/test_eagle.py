"""eagle: SO(2)-reduced convolutions are exactly SO(3)-equivariant; whole-model rotation tests."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, equivariance_error, molecule_batch, random_rotation

from hamflow.nn.eagle import SO2Linear, edge_frame_wigners, rotate
from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import basis_rotation

SHELLS = (0, 0, 1, 2)
BASIS_SIZE = 10
SETTINGS = {
    "net_irreps": "8x0e+4x1e+4x2e+2x3e+2x4e",
    "num_blocks": 1,
    "rmax": 4.0,
    "consider_parity": False,
}


def test_edge_frame_takes_polar_axis_to_edge():
    directions = np.array([[0.6, 0.0, 0.8], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    wigners = edge_frame_wigners(jnp.asarray(directions, jnp.float32), 2)
    y_axis = np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(np.asarray(wigners[1])[:3] @ y_axis, directions[:3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(wigners[2])[3], np.eye(5), atol=1e-6)  # zero vector: identity


def test_so2_linear_commutes_with_rotations_about_the_polar_axis():
    irreps_in, irreps_out = e3nn.Irreps("3x0e+2x1e+2x2e"), e3nn.Irreps("2x0e+3x1e+1x2e+1x3e")
    x = e3nn.normal(irreps_in, jax.random.PRNGKey(0), (4,))
    layer = SO2Linear(str(irreps_out))
    params = layer.init(jax.random.PRNGKey(1), x)
    angle = jnp.full((4,), 0.7)

    def about_y(features, irreps):
        ds = [
            e3nn.Irrep(l, 1).D_from_angles(angle, jnp.zeros(4), jnp.zeros(4)) for l in range(irreps.lmax + 1)
        ]
        return rotate(e3nn.IrrepsArray(irreps, features), ds, inverse=False).array

    out = layer.apply(params, x).array
    out_of_rotated = layer.apply(params, e3nn.IrrepsArray(irreps_in, about_y(x.array, irreps_in))).array
    np.testing.assert_allclose(np.asarray(about_y(out, irreps_out)), np.asarray(out_of_rotated), atol=1e-5)
    assert np.all(np.asarray(out)[:, -7:][:, [0, 6]] == 0)  # 3e, |m| = 3 > input lmax 2: zero


@pytest.fixture(scope="module")
def eagle():
    model = build_model("eagle", SHELLS, **SETTINGS)
    batch = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE)
    params = init_params(model, batch, seed=0)
    return params, jax.jit(model.apply), batch


@pytest.mark.parametrize("seed", [1, 2])
def test_equivariant_float32(eagle, seed):
    params, apply, batch = eagle
    blocks = np.asarray(apply(params, batch))
    assert blocks.shape == (batch.num_edges, BASIS_SIZE, BASIS_SIZE) and np.all(np.isfinite(blocks))
    rotation = random_rotation(seed)
    rotated_batch = molecule_batch(CLUSTER_POSITIONS @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE)
    rotated = np.asarray(apply(params, rotated_batch))
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    print(f"eagle float32: max error {error:.2e}, max |H| {scale:.2f}")
    assert error < 2e-5 * max(scale, 1.0)


def test_equivariant_with_an_edge_on_the_frame_pole(eagle):
    """An edge along z (e3nn's polar axis y after the (y, z, x) reordering): the edge frame is singular."""
    params, apply, batch = eagle
    positions = CLUSTER_POSITIONS.copy()
    positions[1] = positions[0] + np.array([0.0, 0.0, 0.96])
    pole_batch = molecule_batch(positions, CLUSTER_NUMBERS, BASIS_SIZE)
    rotation = random_rotation(6)
    blocks = np.asarray(apply(params, pole_batch))
    rotated = np.asarray(apply(params, molecule_batch(positions @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE)))
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    assert np.all(np.isfinite(blocks)) and error < 2e-5 * max(scale, 1.0)


def test_equivariant_float64(eagle):
    params, _, _ = eagle
    rotation = random_rotation(3)
    with jax.enable_x64(True):
        apply64 = jax.jit(build_model("eagle", SHELLS, **SETTINGS, dtype=jnp.float64).apply)
        batch = molecule_batch(CLUSTER_POSITIONS, CLUSTER_NUMBERS, BASIS_SIZE, dtype=np.float64)
        rotated_batch = molecule_batch(
            CLUSTER_POSITIONS @ rotation.T, CLUSTER_NUMBERS, BASIS_SIZE, dtype=np.float64
        )
        blocks, rotated = np.asarray(apply64(params, batch)), np.asarray(apply64(params, rotated_batch))
    assert blocks.dtype == np.float64
    error, scale = equivariance_error(blocks, rotated, basis_rotation(SHELLS, rotation), batch.edge_mask)
    print(f"eagle float64: max error {error:.2e}, max |H| {scale:.2f}")
    assert error < 1e-10 * max(scale, 1.0)
