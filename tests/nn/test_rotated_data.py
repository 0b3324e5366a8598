"""Equivariance on real DFT data: DeepH-dock's H2O computed in an original and a rotated frame.

rotated/dft/0 is the original structure, rotated/dft/1..3 the same molecule rotated by scipy's
Rotation.from_euler('zyz', [gamma, beta, alpha]) (euler_angle holds alpha beta gamma, radians), shifted,
and DFT-computed anew. Checked for each: (1) its geometry is R times that of 0 (same atom order, up to
the shift); (2) the DFT Hamiltonians obey H_ij = D_i(R) H0_ij D_j(R)^T with hamflow's standard-order
Wigner D (so its convention is the data's); (3) the networks' predictions obey the same relation for
every atom pair (all pairs with R = 0, on-site included: the data are molecules in a box).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from nn_batches import equivariance_error, molecule_batch
from scipy.spatial.transform import Rotation

from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.data.orbitals import atomic_number
from hamflow.data.poscar import read_poscar
from hamflow.nn.model import build_model, init_params
from hamflow.nn.wigner import basis_rotation

ORBITALS = {"O": (0, 0, 0, 1, 1, 2), "H": (0, 0, 1)}
COMMON_SHELLS = (0, 0, 0, 1, 1, 2)  # the union: s3p2d1, B = 14
BASIS_SIZE = 14


def load(root, name):
    poscar = read_poscar(root / name / "POSCAR")
    return poscar, read_matrix_h5(root / name / "hamiltonian.h5")


@pytest.fixture(scope="module", params=["1", "2", "3"])
def rotated_pair(deeph_dock, request):
    root = deeph_dock / "rotated" / "dft"
    original, h_original = load(root, "0")
    rotated, h_rotated = load(root, request.param)
    alpha, beta, gamma = np.loadtxt(root / request.param / "euler_angle")
    rotation = Rotation.from_euler("zyz", [gamma, beta, alpha]).as_matrix()
    return original, h_original, rotated, h_rotated, rotation


NETWORKS = {
    "sparrow": ("8x0e+4x1o+4x2e+2x3o+2x4e", True),
    "eagle": ("8x0e+4x1e+4x2e+2x3e+2x4e", False),
}


@pytest.fixture(scope="module")
def compiled_networks():
    """{net_type: (model, jitted apply)}, shared by the three rotated structures (one compile each)."""
    networks = {}
    for net_type, (irreps, parity) in NETWORKS.items():
        model = build_model(
            net_type,
            COMMON_SHELLS,
            net_irreps=irreps,
            num_blocks=1,
            rmax=5.0,
            consider_parity=parity,
        )
        networks[net_type] = (model, jax.jit(model.apply))
    return networks


def test_geometry_is_the_rotated_original(rotated_pair):
    original, _, rotated, _, rotation = rotated_pair
    assert original.elements == rotated.elements == ("O", "H", "H")
    centred = original.positions - original.positions.mean(axis=0)
    expected = centred @ rotation.T + rotated.positions.mean(axis=0)
    deviation = np.max(np.abs(expected - rotated.positions))
    print(f"rotated geometry: max deviation from R x original {deviation:.1e} A")
    assert deviation < 1e-8


def test_dft_hamiltonians_rotate_with_standard_wigner_d(rotated_pair):
    original, h_original, _, h_rotated, rotation = rotated_pair
    assert not h_original.atom_pairs[:, :3].any()  # a molecule: R = 0 only
    index = h_original.pair_index()
    differences = []
    for n, row in enumerate(h_rotated.atom_pairs):
        pair = tuple(int(v) for v in row)
        d_i = basis_rotation(ORBITALS[original.elements[pair[3]]], rotation)
        d_j = basis_rotation(ORBITALS[original.elements[pair[4]]], rotation)
        differences.append((d_i @ h_original.block(index[pair]) @ d_j.T - h_rotated.block(n)).ravel())
    rmse = float(np.sqrt(np.mean(np.concatenate(differences) ** 2)))
    print(f"DFT H rotated with D vs recomputed DFT H: RMSE {rmse:.1e} eV")
    assert rmse < 1e-4  # DeepH-dock's own criterion; a wrong m order or sign gives ~1 eV


@pytest.mark.parametrize("net_type", list(NETWORKS))
def test_predictions_rotate_like_the_data(rotated_pair, compiled_networks, net_type):
    original, _, rotated, _, rotation = rotated_pair
    model, apply = compiled_networks[net_type]
    numbers = [atomic_number(element) for element in original.elements]
    batch = molecule_batch(original.positions, numbers, BASIS_SIZE)
    params = init_params(model, batch, seed=0)
    blocks = np.asarray(apply(params, batch))
    predicted = np.asarray(apply(params, molecule_batch(rotated.positions, numbers, BASIS_SIZE)))
    d = basis_rotation(COMMON_SHELLS, rotation)
    error, scale = equivariance_error(blocks, predicted, d, batch.edge_mask)
    print(f"{net_type} on rotated H2O (float32): max error {error:.1e}, max |H| {scale:.2f}")
    assert error < 2e-5 * max(scale, 1.0)
