"""The target normaliser: fits known scales/offsets and leaves predictions equivariant."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from hamflow.train.normaliser import Normaliser, fit_normaliser

SHELLS = (0, 0, 1, 2)  # s2p1d1: B = 1 + 1 + 3 + 5 = 10
B = 10


@dataclass
class _Graph:
    atomic_numbers: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_shift: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray


def _graphs(count: int = 20, seed: int = 0) -> list[_Graph]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        z = np.array([8, 1, 1])
        src, dst = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
        src, dst = src.ravel(), dst.ravel()
        labels = 0.01 * rng.normal(size=(9, B, B))
        onsite = src == dst
        # a large on-site constant on the first s shell of oxygen, like a core level
        labels[onsite & (z[src] == 8), 0, 0] += -500.0
        out.append(_Graph(z, src, dst, np.zeros((9, 3), int), labels, np.ones((9, B, B), bool)))
    return out


def _block_rotation(rng: np.random.Generator) -> np.ndarray:
    per_l = {}
    for l in set(SHELLS):
        q, _ = np.linalg.qr(rng.normal(size=(2 * l + 1, 2 * l + 1)))
        per_l[l] = q
    d = np.zeros((B, B))
    start = 0
    for l in SHELLS:
        d[start : start + 2 * l + 1, start : start + 2 * l + 1] = per_l[l]
        start += 2 * l + 1
    return d


def test_fit_finds_core_offset_and_scales() -> None:
    norm = fit_normaliser(_graphs(), SHELLS)
    oxygen = norm.species_of_z[8]
    np.testing.assert_allclose(norm.onsite_offset[oxygen, 0, 0], -500.0, atol=0.01)
    # after the offset the on-site s block is noise of 0.01: its scale is ~0.01, not ~500
    assert 0.005 < norm.onsite_scale[oxygen, 0, 0] < 0.02
    np.testing.assert_allclose(norm.offsite_scale[oxygen, norm.species_of_z[1]], 0.01, rtol=0.3)
    # an element never seen falls back to the last row
    assert norm.species_of_z[26] == norm.onsite_scale.shape[0] - 1


def test_denormalisation_commutes_with_rotations() -> None:
    norm = fit_normaliser(_graphs(), SHELLS)
    rng = np.random.default_rng(3)
    z = jnp.asarray([8, 1, 1])
    src = jnp.asarray([0, 0, 1, 1])
    dst = jnp.asarray([0, 1, 1, 0])
    onsite = src == dst
    scale, offset = norm.edge_tables(z, src, dst, onsite)
    raw = rng.normal(size=(4, B, B))
    d = _block_rotation(rng)
    rotated_raw = np.einsum("ij,ejk,lk->eil", d, raw, d)
    lhs = np.einsum("ij,ejk,lk->eil", d, raw * scale + offset, d)
    rhs = rotated_raw * scale + offset
    np.testing.assert_allclose(lhs, rhs, atol=1e-4)


def test_spinful_tables_tile_the_spin_blocks() -> None:
    norm = fit_normaliser(_graphs(), SHELLS)
    z = jnp.asarray([8, 1])
    src, dst = jnp.asarray([0, 0]), jnp.asarray([0, 1])
    scale, offset = norm.edge_tables(z, src, dst, src == dst, spinful=True)
    assert scale.shape == (2, 2 * B, 2 * B)
    np.testing.assert_array_equal(offset[0, :B, :B], offset[0, B:, B:])
    assert float(jnp.abs(offset[0, :B, B:]).max()) == 0.0


def test_save_load_round_trip(tmp_path) -> None:
    norm = fit_normaliser(_graphs(4), SHELLS)
    norm.save(tmp_path / "normaliser.npz")
    back = Normaliser.load(tmp_path / "normaliser.npz")
    for name in ("species_of_z", "onsite_scale", "offsite_scale", "onsite_offset"):
        np.testing.assert_array_equal(getattr(norm, name), getattr(back, name))
