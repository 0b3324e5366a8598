"""The Clebsch-Gordan block head: irreps <-> (2l1+1)x(2l2+1) blocks, whole-basis assembly."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_batches import random_rotation

from hamflow.errors import ConfigError
from hamflow.nn.block_head import (
    assemble_blocks,
    assemble_spinful_blocks,
    block_irreps,
    block_to_irreps,
    check_readout_reachable,
    irreps_to_block,
    output_irreps,
)
from hamflow.nn.wigner import basis_rotation, irreps_rotation, wigner_d_standard

PAIRS = [(l1, l2) for l1 in range(3) for l2 in range(3)]


def test_block_irreps():
    assert block_irreps(1, 2, parity=True) == e3nn.Irreps("1o+2o+3o")
    assert block_irreps(1, 1, parity=True) == e3nn.Irreps("0e+1e+2e")
    assert block_irreps(1, 2, parity=False) == e3nn.Irreps("1e+2e+3e")
    assert block_irreps(0, 0, parity=True) == e3nn.Irreps("0e")


@pytest.mark.parametrize(("l1", "l2"), PAIRS)
def test_round_trip(l1, l2):
    rng = np.random.default_rng(l1 * 3 + l2)
    block = rng.normal(size=(4, 2 * l1 + 1, 2 * l2 + 1))
    with jax.enable_x64(True):
        irreps = block_to_irreps(jnp.asarray(block), l1, l2)
        assert irreps.irreps == block_irreps(l1, l2, parity=True)
        back = np.asarray(irreps_to_block(irreps, l1, l2))
    np.testing.assert_allclose(back, block, atol=1e-13)


@pytest.mark.parametrize(("l1", "l2"), PAIRS)
@pytest.mark.parametrize("improper", [False, True])
def test_cg_map_is_equivariant_float64(l1, l2, improper):
    """H(D_L x) = D_l1 H(x) D_l2^T with standard-basis D, inversion included (parity (-1)^(l1+l2))."""
    irreps = block_irreps(l1, l2, parity=True)
    rotation = random_rotation(7 + l1 + 3 * l2, improper=improper)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, irreps.dim))
    with jax.enable_x64(True):
        block = np.asarray(irreps_to_block(e3nn.IrrepsArray(irreps, jnp.asarray(x)), l1, l2))
        rotated_x = x @ irreps_rotation(irreps, rotation).T
        rotated = np.asarray(irreps_to_block(e3nn.IrrepsArray(irreps, jnp.asarray(rotated_x)), l1, l2))
    d1, d2 = wigner_d_standard(l1, rotation), wigner_d_standard(l2, rotation)
    error = np.max(np.abs(np.einsum("ij,ejk,lk->eil", d1, block, d2) - rotated))
    assert error < 1e-13, f"CG map equivariance error {error:.1e} for ({l1}, {l2})"


def test_output_irreps_and_assembly_match_pairwise_blocks():
    shells = (0, 0, 1, 2)
    irreps = output_irreps(shells, parity=True)
    size = sum(2 * l + 1 for l in shells)
    assert irreps.dim == size * size
    x = np.random.default_rng(1).normal(size=(5, irreps.dim)).astype(np.float32)
    blocks = np.asarray(assemble_blocks(e3nn.IrrepsArray(irreps, jnp.asarray(x)), shells))
    assert blocks.shape == (5, size, size)
    offsets = np.cumsum([0] + [2 * l + 1 for l in shells])
    start = 0
    for a, la in enumerate(shells):
        for b, lb in enumerate(shells):
            pair = block_irreps(la, lb, parity=True)
            chunk = e3nn.IrrepsArray(pair, jnp.asarray(x[:, start : start + pair.dim]))
            expected = np.asarray(irreps_to_block(chunk, la, lb))
            got = blocks[:, offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]]
            np.testing.assert_allclose(got, expected, atol=1e-6)
            start += pair.dim


def test_assembled_blocks_rotate_with_basis_rotation():
    shells = (0, 1, 1, 2)
    irreps = output_irreps(shells, parity=True)
    rotation = random_rotation(3, improper=True)
    x = np.random.default_rng(2).normal(size=(2, irreps.dim))
    with jax.enable_x64(True):
        blocks = np.asarray(assemble_blocks(e3nn.IrrepsArray(irreps, jnp.asarray(x)), shells))
        rotated_x = x @ irreps_rotation(irreps, rotation).T
        rotated = np.asarray(assemble_blocks(e3nn.IrrepsArray(irreps, jnp.asarray(rotated_x)), shells))
    d = basis_rotation(shells, rotation)
    np.testing.assert_allclose(np.einsum("ij,ejk,lk->eil", d, blocks, d), rotated, atol=1e-12)


def test_spinful_assembly_layout():
    shells = (0, 1)
    irreps = output_irreps(shells, parity=True)
    x = np.random.default_rng(3).normal(size=(2, 8, irreps.dim)).astype(np.float32)
    spinful = np.asarray(assemble_spinful_blocks(e3nn.IrrepsArray(irreps, jnp.asarray(x)), shells))
    real = np.asarray(assemble_blocks(e3nn.IrrepsArray(irreps, jnp.asarray(x)), shells))
    assert spinful.shape == (2, 8, 8) and spinful.dtype == np.complex64
    np.testing.assert_allclose(spinful[:, :4, :4], real[:, 0] + 1j * real[:, 1])  # uu
    np.testing.assert_allclose(spinful[:, :4, 4:], real[:, 2] + 1j * real[:, 3])  # ud
    np.testing.assert_allclose(spinful[:, 4:, :4], real[:, 4] + 1j * real[:, 5])  # du
    np.testing.assert_allclose(spinful[:, 4:, 4:], real[:, 6] + 1j * real[:, 7])  # dd


def test_readout_reachability_check():
    # d-d blocks need 0e..4e, p-d 1o..3o: 1e, 2o, 3e, 4e come from products with 1o.
    check_readout_reachable(e3nn.Irreps("8x0e+4x1o+4x2e+2x3o"), (0, 1, 2), parity=True)
    with pytest.raises(ConfigError, match=r"net_irreps.*3e\+4e"):
        check_readout_reachable(e3nn.Irreps("8x0e+4x1o+4x2e"), (0, 1, 2), parity=True)
    with pytest.raises(ConfigError, match="net_irreps"):
        check_readout_reachable(e3nn.Irreps("8x0e"), (0, 1), parity=False)
