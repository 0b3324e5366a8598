"""hamflow's standard-order Wigner D (nn/wigner.py) against e3nn-jax's ``D_from_matrix``.

nn/wigner.py states that the standard-order D of a rotation R is e3nn's D of P R P^T, P the axis
permutation (x, y, z) -> (y, z, x); its own matrices come from e3nn's generators and scipy's expm.
Here e3nn-jax's ``Irrep.D_from_matrix`` / ``Irreps.D_from_matrix`` (float32) gives the reference, for
proper and improper rotations and both parities.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import numpy as np
import pytest
from nn_batches import random_rotation

from hamflow.nn.wigner import STANDARD_TO_E3NN_AXES, irreps_rotation, wigner_d_standard

P = np.eye(3)[list(STANDARD_TO_E3NN_AXES)]


def _e3nn_d(irreps: str, rotation: np.ndarray) -> np.ndarray:
    return np.asarray(e3nn.Irreps(irreps).D_from_matrix(P @ rotation @ P.T), dtype=np.float64)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("l", range(0, 7))
def test_wigner_d_standard_equals_e3nn_d_from_matrix(l, improper):
    for seed in range(3):
        rotation = random_rotation(100 * l + seed, improper=improper)
        natural = f"1x{l}{'e' if l % 2 == 0 else 'o'}"  # orbitals of angular momentum l: parity (-1)^l
        np.testing.assert_allclose(wigner_d_standard(l, rotation), _e3nn_d(natural, rotation), atol=2e-5)


@pytest.mark.parametrize("improper", [False, True])
def test_irreps_rotation_equals_e3nn_for_both_parities(improper):
    irreps = "3x0e+2x0o+2x1o+1x1e+2x2e+1x2o+1x3o+1x3e+1x4e"
    rotation = random_rotation(11, improper=improper)
    np.testing.assert_allclose(irreps_rotation(irreps, rotation), _e3nn_d(irreps, rotation), atol=2e-5)
