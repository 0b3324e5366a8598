"""Dense H(k)/S(k) and eigenvalues: MoTe2 against a direct dense solve, phase convention, spinful layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from hamflow.data.info import StructureInfo
from hamflow.data.kspace import band_eigenvalues, dense_at_k, generalized_eigenvalues, read_k_path
from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.data.poscar import Poscar
from hamflow.data.structure import Structure, load_structure
from hamflow.errors import DataError

K_POINTS = {
    "Gamma": [0.0, 0.0, 0.0],
    "M": [0.5, 0.0, 0.0],
    "K": [1 / 3, 1 / 3, 0.0],
    "random": [0.137, -0.291, 0.42],
}


def _direct_dense(matrix: BlockMatrix, sizes: list[int], k: np.ndarray) -> np.ndarray:
    """Independent reference: loop over pairs, add exp(+2 pi i k.R) * block at the atoms' offsets."""
    starts = [sum(sizes[:a]) for a in range(len(sizes))]
    out = np.zeros((sum(sizes), sum(sizes)), dtype=complex)
    for n in range(matrix.num_pairs):
        r1, r2, r3, i, j = (int(v) for v in matrix.atom_pairs[n])
        start, stop = matrix.chunk_boundaries[n], matrix.chunk_boundaries[n + 1]
        block = matrix.entries[start:stop].reshape(sizes[i], sizes[j])
        phase = np.exp(2j * np.pi * (k[0] * r1 + k[1] * r2 + k[2] * r3))
        out[starts[i] : starts[i] + sizes[i], starts[j] : starts[j] + sizes[j]] += phase * block
    return out


@pytest.fixture(scope="module")
def mote2(deeph_dock: Path) -> Structure:
    return load_structure(deeph_dock / "periodic/dft/MoTe2")


def test_mote2_eigenvalues_match_direct_dense_solve(mote2: Structure) -> None:
    ls = mote2.info.elements_orbital_map
    sizes = [sum(2 * l + 1 for l in ls[el]) for el in mote2.poscar.elements]
    offsets = mote2.orbital_offsets
    bands = band_eigenvalues(mote2, np.array(list(K_POINTS.values())))
    assert bands.shape == (4, 57)
    for n, k in enumerate(K_POINTS.values()):
        k = np.array(k)
        h_ref = _direct_dense(mote2.matrices["H"], sizes, k)
        s_ref = _direct_dense(mote2.matrices["S"], sizes, k)
        h_k = dense_at_k(mote2.matrices["H"], offsets, k)
        s_k = dense_at_k(mote2.matrices["S"], offsets, k)
        assert h_k.dtype == np.complex128 and h_k.shape == (57, 57)
        np.testing.assert_allclose(h_k, h_ref, atol=1e-12)
        np.testing.assert_allclose(s_k, s_ref, atol=1e-12)
        np.testing.assert_allclose(h_k, h_k.conj().T, atol=1e-6)  # the DFT H(k) is Hermitian
        reference = scipy.linalg.eigh(h_ref, s_ref, eigvals_only=True)
        np.testing.assert_allclose(generalized_eigenvalues(h_k, s_k), reference, atol=1e-8)
        np.testing.assert_allclose(bands[n], reference, atol=1e-8)


def test_mote2_has_the_direct_gap_at_k(mote2: Structure) -> None:
    """23 occupied bands (occupation 46, spinless): monolayer MoTe2 has a ~1.1 eV direct gap at K."""
    gamma, m, k = band_eigenvalues(mote2, np.array([K_POINTS["Gamma"], K_POINTS["M"], K_POINTS["K"]]))
    gap_k = k[23] - k[22]
    assert 0.8 < gap_k < 1.4
    assert gap_k < gamma[23] - gamma[22] and gap_k < m[23] - m[22]
    assert k[22] < mote2.info.fermi_energy_eV < k[23]


def test_phase_convention_is_plus_two_pi_i_k_dot_r() -> None:
    matrix = BlockMatrix.from_blocks(
        [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [-1, 0, 0, 0, 0]], [np.array([[0.5]]), [[2.0]], [[3.0]]]
    )
    k = 0.1
    value = dense_at_k(matrix, np.array([0, 1]), [k, 0.7, 0.3])[0, 0]
    assert value == pytest.approx(0.5 + 2.0 * np.exp(2j * np.pi * k) + 3.0 * np.exp(-2j * np.pi * k))


def _random_spin_structure(rng: np.random.Generator) -> tuple[BlockMatrix, BlockMatrix, list[int]]:
    """Two atoms (3 and 1 orbitals), pairs at R = 0, +-a1; spinless symmetric H and positive S."""
    sizes = [3, 1]
    pairs = [(r, i, j) for r in (-1, 0, 1) for i in range(2) for j in range(2)]
    h_blocks, s_blocks = {}, {}
    for r, i, j in pairs:
        if (r, i, j) in h_blocks:
            continue
        h = rng.normal(size=(sizes[i], sizes[j]))
        s = 0.05 * rng.normal(size=(sizes[i], sizes[j]))
        if r == 0 and i == j:
            h, s = h + h.T, np.eye(sizes[i]) + s @ s.T
        h_blocks[(r, i, j)], s_blocks[(r, i, j)] = h, s
        h_blocks[(-r, j, i)], s_blocks[(-r, j, i)] = h.T, s.T
    keys = sorted(h_blocks)
    to_pair = [[r, 0, 0, i, j] for r, i, j in keys]
    return (
        BlockMatrix.from_blocks(to_pair, [h_blocks[key] for key in keys]),
        BlockMatrix.from_blocks(to_pair, [s_blocks[key] for key in keys]),
        sizes,
    )


def test_spinful_layout_and_overlap_expansion() -> None:
    rng = np.random.default_rng(3)
    h, s, sizes = _random_spin_structure(rng)
    offsets = np.array([0, 3, 4])
    # Spinful H: [[h, soc], [-soc^*, h]] per block with a small spin-mixing part; S stays spinless.
    spin_blocks = []
    for n in range(h.num_pairs):
        block = h.block(n)
        soc = 0.01j * np.ones_like(block)
        spin_blocks.append(np.block([[block, soc], [soc, block]]))
    h_spin = BlockMatrix.from_blocks(h.atom_pairs, spin_blocks)
    k = np.array([0.23, 0.0, 0.0])
    hk = dense_at_k(h_spin, offsets, k, spinful=True)
    sk = dense_at_k(s, offsets, k, spinful=True)
    assert hk.shape == sk.shape == (8, 8)
    spinless = dense_at_k(h, offsets, k)
    np.testing.assert_allclose(hk[:4, :4], spinless)  # uu quadrant
    np.testing.assert_allclose(hk[4:, 4:], spinless)  # dd quadrant
    ud = _direct_dense(
        BlockMatrix.from_blocks(h.atom_pairs, [b[: len(b) // 2, b.shape[1] // 2 :] for b in spin_blocks]),
        sizes,
        k,
    )
    np.testing.assert_allclose(hk[:4, 4:], ud)
    np.testing.assert_allclose(sk, np.kron(np.eye(2), dense_at_k(s, offsets, k)))
    # A spin-expanded S (2ni, 2nj) gives the same S(k) as the spinless one.
    s_expanded = BlockMatrix.from_blocks(
        s.atom_pairs, [np.kron(np.eye(2), s.block(n)) for n in range(s.num_pairs)]
    )
    np.testing.assert_allclose(dense_at_k(s_expanded, offsets, k, spinful=True), sk)
    # Without spin mixing every spinless level appears twice.
    plain = BlockMatrix.from_blocks(
        h.atom_pairs, [np.kron(np.eye(2), h.block(n)).astype(complex) for n in range(h.num_pairs)]
    )
    structure = Structure(
        sid="spin",
        path=Path("spin"),
        poscar=Poscar("x", np.eye(3) * 5, ("O", "H"), np.zeros((2, 3))),
        info=StructureInfo(2, 4, False, True, None, {"O": (1,), "H": (0,)}),
        matrices={"H": plain, "S": s},
    )
    doubled = band_eigenvalues(structure, k[None])[0]
    single = generalized_eigenvalues(spinless, dense_at_k(s, offsets, k))
    np.testing.assert_allclose(doubled, np.repeat(single, 2), atol=1e-10)


def test_block_shape_mismatch_is_reported() -> None:
    matrix = BlockMatrix.from_blocks([[0, 0, 0, 0, 1]], [np.ones((2, 2))])
    with pytest.raises(DataError, match=r"block shape \(2, 2\); orbital map gives \(3, 1\)"):
        dense_at_k(matrix, np.array([0, 3, 4]), [0, 0, 0])
    with pytest.raises(DataError, match="names an atom outside 0..1"):
        dense_at_k(
            BlockMatrix.from_blocks([[0, 0, 0, 0, 5]], [np.ones((3, 1))]), np.array([0, 3, 4]), [0, 0, 0]
        )


def test_overlap_not_positive_definite() -> None:
    with pytest.raises(DataError, match="not positive definite"):
        generalized_eigenvalues(np.eye(2), np.diag([1.0, -1.0]))


def test_read_k_path(deeph_dock: Path, tmp_path: Path) -> None:
    k_points, labels = read_k_path(deeph_dock / "periodic/dft/MoTe2/K_PATH")
    assert k_points.shape == (140, 3)
    assert labels == [(0, "GAMMA"), (49, "M"), (50, "M"), (79, "K"), (80, "K"), (139, "GAMMA")]
    np.testing.assert_allclose(k_points[49], [0.5, 0, 0])
    np.testing.assert_allclose(k_points[79], [1 / 3, 1 / 3, 0], atol=1e-9)
    np.testing.assert_allclose(k_points[1], [0.5 / 49, 0, 0])
    bad = tmp_path / "K_PATH"
    bad.write_text("10 0 0 0 0.5 0 0 G\n")
    with pytest.raises(DataError, match=f"{bad}: key 'line 1'"):
        read_k_path(bad)
