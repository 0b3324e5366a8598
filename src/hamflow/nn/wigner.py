"""Wigner D matrices of the real spherical harmonics in the standard (DeepH) m order, in float64 numpy.

The standard order inside a shell of angular momentum l is m = -l..l of the real spherical harmonics
(p: y, z, x; d: xy, yz, z^2, xz, x^2-y^2). e3nn-jax orders its real harmonics with y as the polar axis;
the two agree when e3nn is fed the permuted vector P r = (y, z, x), so the standard D of a rotation R is
e3nn's D of P R P^T. These matrices serve the tests (rotate predicted blocks) and data augmentation.
They are computed with numpy/scipy in float64 whatever JAX's precision setting is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import e3nn_jax as e3nn
import numpy as np
import scipy.linalg
from scipy.spatial.transform import Rotation

# Row k of the permutation picks Cartesian component k of the e3nn vector: (x, y, z) -> (y, z, x).
STANDARD_TO_E3NN_AXES = (1, 2, 0)
_PERMUTATION = np.eye(3)[list(STANDARD_TO_E3NN_AXES)]


@functools.cache
def _e3nn_generators(l: int) -> np.ndarray:
    """e3nn's real generators of SO(3) for degree l, shape (3, 2l+1, 2l+1), float64."""
    return np.asarray(e3nn.generators(l), dtype=np.float64)


def wigner_d_standard(l: int, rotation: np.ndarray) -> np.ndarray:
    """The (2l+1, 2l+1) matrix D with Y_l(R v) = D(R) Y_l(v) for the standard-order real harmonics.

    rotation: (3, 3) orthogonal matrix acting on Cartesian (x, y, z) column vectors; an improper one
    (det = -1) includes the parity factor (-1)^l, as orbitals of angular momentum l carry.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must be a (3, 3) matrix, got shape {rotation.shape}")
    det = float(np.sign(np.linalg.det(rotation)))
    proper = det * rotation
    rotvec = Rotation.from_matrix(_PERMUTATION @ proper @ _PERMUTATION.T).as_rotvec()
    generator = np.einsum("a,aij->ij", rotvec, _e3nn_generators(l))
    return det**l * scipy.linalg.expm(generator)


def basis_rotation(shell_ls: Sequence[int], rotation: np.ndarray) -> np.ndarray:
    """(B, B) block-diagonal matrix of wigner_d_standard(l, rotation) for every shell, B = sum(2l+1).

    A Hamiltonian block H_ij in this orbital basis rotates as D H_ij D^T.
    """
    blocks = [wigner_d_standard(l, rotation) for l in shell_ls]
    return scipy.linalg.block_diag(*blocks) if blocks else np.zeros((0, 0))


PAULI = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128)


def spin_rotation(rotation: np.ndarray) -> np.ndarray:
    """(2, 2) SU(2) matrix U of a (3, 3) Cartesian rotation: U sigma_k U^dagger = sum_j R_jk sigma_j.

    Spin is axial: an improper ``rotation`` (det = -1) acts through its proper part -R (inversion
    leaves spin alone). U is fixed up to the sign of SU(2)'s double cover, which cancels in U H U^dagger.
    """
    det = float(np.sign(np.linalg.det(rotation)))
    x, y, z, w = Rotation.from_matrix(det * np.asarray(rotation, np.float64)).as_quat()
    return w * np.eye(2) - 1j * np.einsum("a,aij->ij", [x, y, z], PAULI)


def spinful_basis_rotation(shell_ls: Sequence[int], rotation: np.ndarray) -> np.ndarray:
    """(2B, 2B) complex kron(U, D) for spinful blocks [[uu, ud], [du, dd]] (spin outer, orbitals inner):
    with spin-orbit coupling a block rotates as M H M^dagger, M = kron(spin_rotation, basis_rotation)."""
    return np.kron(spin_rotation(rotation), basis_rotation(shell_ls, rotation))


def irreps_rotation(irreps: e3nn.Irreps | str, rotation: np.ndarray) -> np.ndarray:
    """(dim, dim) block-diagonal D of features with these irreps in the standard-harmonic basis.

    Irrep (l, p) gets wigner_d_standard of the proper part of ``rotation``, times p for an improper
    ``rotation`` (det = -1); so natural-parity irreps (p = (-1)^l) rotate like orbitals of that l.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    det = float(np.sign(np.linalg.det(rotation)))
    blocks = []
    for mul, ir in e3nn.Irreps(irreps):
        d = wigner_d_standard(ir.l, det * rotation) * (ir.p if det < 0 else 1)
        blocks.extend([d] * mul)
    return scipy.linalg.block_diag(*blocks) if blocks else np.zeros((0, 0))
