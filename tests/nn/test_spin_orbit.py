"""The spin-orbit readout: spinful blocks rotate with kron(U, D), are time-reversal even, and the
irreps rule knows the spin-vector part."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, molecule_batch, random_rotation

from hamflow.errors import ConfigError
from hamflow.graph.irreps import check_net_irreps
from hamflow.nn.block_head import _spin_vector_basis, spin_vector_irreps
from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import PAULI, basis_rotation, spin_rotation, spinful_basis_rotation

SHELLS = (0, 1, 2)
BASIS_SIZE = 9
SETTINGS = {"net_irreps": "8x0e+4x1o+4x1e+2x2e+2x2o+2x3o+2x3e+2x4e", "num_blocks": 1, "rmax": 4.0}
POSITIONS, NUMBERS = CLUSTER_POSITIONS[:4], CLUSTER_NUMBERS[:4]


@pytest.mark.parametrize("improper", [False, True])
def test_spin_rotation_turns_the_pauli_vector_like_the_rotation(improper: bool) -> None:
    rotation = random_rotation(3, improper=improper)
    u = spin_rotation(rotation)
    np.testing.assert_allclose(u @ u.conj().T, np.eye(2), atol=1e-12)
    proper = np.sign(np.linalg.det(rotation)) * rotation
    for k in range(3):
        expected = np.einsum("j,jab->ab", proper[:, k], PAULI)
        np.testing.assert_allclose(u @ PAULI[k] @ u.conj().T, expected, atol=1e-12)


@pytest.mark.parametrize(("l1", "l2"), [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)])
def test_the_spin_vector_basis_is_orthonormal_and_complete(l1: int, l2: int) -> None:
    basis = _spin_vector_basis(l1, l2)
    flat = basis.reshape(basis.shape[0], -1)
    assert flat.shape == (3 * (2 * l1 + 1) * (2 * l2 + 1),) * 2
    assert spin_vector_irreps(l1, l2, parity=True).dim == flat.shape[0]
    np.testing.assert_allclose(flat @ flat.T, np.eye(flat.shape[0]), atol=1e-12)


@pytest.fixture(scope="module")
def spin_orbit_model():
    model = build_model("sparrow", SHELLS, **SETTINGS, consider_parity=True, spinful=True)
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * BASIS_SIZE)
    return model, init_params(model, batch, seed=4), jax.jit(model.apply)


@pytest.mark.parametrize("improper", [False, True])
def test_spinful_blocks_rotate_with_the_spin_and_orbital_matrices(spin_orbit_model, improper: bool) -> None:
    model, params, apply = spin_orbit_model
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * BASIS_SIZE)
    blocks = np.asarray(apply(params, batch), np.complex128)[batch.edge_mask]
    assert blocks.shape[1:] == (2 * BASIS_SIZE, 2 * BASIS_SIZE)
    ud = blocks[:, :BASIS_SIZE, BASIS_SIZE:]
    assert np.abs(ud).max() > 1e-3 * np.abs(blocks).max(), "the spin-orbit part must not vanish"
    rotation = random_rotation(7, improper=improper)
    rotated_batch = molecule_batch(POSITIONS @ rotation.T, NUMBERS, 2 * BASIS_SIZE)
    rotated = np.asarray(apply(params, rotated_batch), np.complex128)[rotated_batch.edge_mask]
    m = spinful_basis_rotation(SHELLS, rotation)
    expected = m @ blocks @ m.conj().T
    error = np.abs(expected - rotated).max()
    scale = np.abs(blocks).max()
    print(f"spin-orbit equivariance (improper={improper}): max error {error:.1e} of max |H| {scale:.2f}")
    assert error < 2e-5 * max(scale, 1.0)
    # spin treated as invariant would be wrong here: D alone on each spin sub-block does not match
    invariant = np.kron(np.eye(2), basis_rotation(SHELLS, rotation))
    assert np.abs(invariant @ blocks @ invariant.T - rotated).max() > 100 * error


def test_predicted_blocks_are_time_reversal_even(spin_orbit_model) -> None:
    model, params, apply = spin_orbit_model
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * BASIS_SIZE)
    blocks = np.asarray(apply(params, batch), np.complex128)[batch.edge_mask]
    # T = i sigma_y K on spin (outer) x orbitals (real): T H T^-1 = (sigma_y x 1) H* (sigma_y x 1)
    sy = np.kron(PAULI[1], np.eye(BASIS_SIZE))
    np.testing.assert_allclose(sy @ blocks.conj() @ sy, blocks, atol=1e-6 * np.abs(blocks).max())


def test_the_spin_invariant_readout_stays_available() -> None:
    model = build_model("sparrow", SHELLS, **SETTINGS, consider_parity=True, spinful=True, spin_orbit=False)
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * BASIS_SIZE)
    blocks = np.asarray(jax.jit(model.apply)(init_params(model, batch, seed=4), batch))
    sy = np.kron(PAULI[1], np.eye(BASIS_SIZE))
    # four independent sub-blocks: not constrained to be time-reversal even
    assert np.abs(sy @ blocks.conj() @ sy - blocks).max() > 1e-3 * np.abs(blocks).max()


def test_the_irreps_rule_asks_for_the_spin_vector_irreps() -> None:
    natural = "16x0e+8x1o+8x2e+4x3o+4x4e"
    check_net_irreps(natural, SHELLS, consider_parity=True)  # enough without spin-orbit
    with pytest.raises(ConfigError, match=r"5e.*spin-orbit"):
        check_net_irreps(natural, SHELLS, consider_parity=True, spin_orbit=True)


def test_eagle_spinful_blocks_rotate_with_the_spin_and_orbital_matrices() -> None:
    shells, size = (0, 1), 4
    model = build_model(
        "eagle",
        shells,
        net_irreps="8x0e+4x1e+4x2e+2x3e",
        num_blocks=1,
        rmax=4.0,
        consider_parity=False,
        spinful=True,
    )
    batch = molecule_batch(POSITIONS, NUMBERS, 2 * size)
    params = init_params(model, batch, seed=5)
    apply = jax.jit(model.apply)
    blocks = np.asarray(apply(params, batch), np.complex128)[batch.edge_mask]
    rotation = random_rotation(11)
    rotated_batch = molecule_batch(POSITIONS @ rotation.T, NUMBERS, 2 * size)
    rotated = np.asarray(apply(params, rotated_batch), np.complex128)[rotated_batch.edge_mask]
    m = spinful_basis_rotation(shells, rotation)
    scale = np.abs(blocks).max()
    assert np.abs(blocks[:, :size, size:]).max() > 1e-3 * scale
    assert np.abs(m @ blocks @ m.conj().T - rotated).max() < 2e-5 * max(scale, 1.0)
