"""wigner_d_standard against real spherical harmonics evaluated directly with scipy (standard m order)."""

from __future__ import annotations

import numpy as np
import pytest
from nn_batches import random_rotation
from scipy.special import sph_harm_y

from hamflow.nn.wigner import basis_rotation, wigner_d_standard


def standard_real_sh(l: int, vectors: np.ndarray) -> np.ndarray:
    """(n, 2l+1) real harmonics Y_lm, m = -l..l (p: y, z, x; d: xy, yz, z^2, xz, x^2-y^2), from scipy.

    Y_lm = sqrt(2) (-1)^m Im Y_l^|m| (m < 0), Y_l^0 (m = 0), sqrt(2) (-1)^m Re Y_l^m (m > 0), with
    scipy's complex harmonics (Condon-Shortley phase included).
    """
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    polar = np.arccos(np.clip(unit[:, 2], -1.0, 1.0))
    azimuth = np.arctan2(unit[:, 1], unit[:, 0])
    columns = []
    for m in range(-l, l + 1):
        complex_y = sph_harm_y(l, abs(m), polar, azimuth)
        if m < 0:
            columns.append(np.sqrt(2.0) * (-1) ** m * complex_y.imag)
        elif m == 0:
            columns.append(complex_y.real)
        else:
            columns.append(np.sqrt(2.0) * (-1) ** m * complex_y.real)
    return np.stack(columns, axis=-1)


def test_standard_order_of_p_and_d_functions():
    """The reference really is the DeepH order: p = (y, z, x), d = (xy, yz, 3z^2-r^2, xz, x^2-y^2)."""
    v = np.array([[0.3, -0.5, 0.8]])
    x, y, z = v[0] / np.linalg.norm(v)
    p = standard_real_sh(1, v)[0]
    np.testing.assert_allclose(p / p[0], [1.0, z / y, x / y], rtol=1e-12)
    d = standard_real_sh(2, v)[0]
    expected = np.array([x * y, y * z, (3 * z**2 - 1) / (2 * np.sqrt(3)), x * z, (x**2 - y**2) / 2])
    np.testing.assert_allclose(d / d[0], expected / expected[0], rtol=1e-12)


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("improper", [False, True])
def test_rotates_scipy_harmonics(l, improper):
    rng = np.random.default_rng(l)
    vectors = rng.normal(size=(40, 3))
    rotation = random_rotation(10 + l, improper=improper)
    d = wigner_d_standard(l, rotation)
    rotated = standard_real_sh(l, vectors @ rotation.T)
    np.testing.assert_allclose(rotated, standard_real_sh(l, vectors) @ d.T, atol=1e-12)
    np.testing.assert_allclose(d @ d.T, np.eye(2 * l + 1), atol=1e-12)


def test_is_a_representation():
    r1, r2 = random_rotation(1), random_rotation(2, improper=True)
    for l in range(4):
        np.testing.assert_allclose(
            wigner_d_standard(l, r1 @ r2), wigner_d_standard(l, r1) @ wigner_d_standard(l, r2), atol=1e-12
        )
    np.testing.assert_allclose(wigner_d_standard(1, r1), r1[np.ix_([1, 2, 0], [1, 2, 0])], atol=1e-12)


def test_basis_rotation_is_block_diagonal_per_shell():
    rotation = random_rotation(5)
    shells = (0, 0, 1, 2)
    d = basis_rotation(shells, rotation)
    assert d.shape == (10, 10)
    np.testing.assert_allclose(d[2:5, 2:5], wigner_d_standard(1, rotation))
    np.testing.assert_allclose(d[5:, 5:], wigner_d_standard(2, rotation))
    assert np.all(d[:2, 2:] == 0) and np.all(d[2:5, 5:] == 0)
    assert d[0, 0] == pytest.approx(1.0) and d[0, 1] == 0


def test_rejects_non_matrix():
    with pytest.raises(ValueError, match="3, 3"):
        wigner_d_standard(1, np.eye(2))
