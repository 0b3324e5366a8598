"""The sparse band solver's factor: diagonal pivots in SuperLU's minimum-degree order (far less fill
than partial pivoting on a 3-D crystal), and its guard: a k-point whose unpivoted factor is
inaccurate is solved again with pivoting."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg as sla

from hamflow.data.bloch import BlochMatrix
from hamflow.infer import band_structure
from hamflow.infer.band_structure import residuals, sparse_bands

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bands_large  # noqa: E402


def test_diagonal_pivots_keep_the_fill_of_the_order_on_a_crystal() -> None:
    _, _, h, s = bands_large.synthetic_silicon(64)  # 832 orbitals, 16 neighbours within 4 A
    offsets = np.arange(65) * 13
    shifted = (
        BlochMatrix.from_blocks(h, offsets).sparse(np.zeros(3)).real
        - 0.5 * BlochMatrix.from_blocks(s, offsets).sparse(np.zeros(3)).real
    ).tocsc()
    diagonal = sla.splu(
        shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
    )
    partial = sla.splu(shifted, permc_spec="MMD_AT_PLUS_A")
    assert diagonal.nnz < 0.8 * partial.nnz, (diagonal.nnz, partial.nnz)
    values, vectors = sla.eigsh(shifted, k=4, sigma=0.0, which="LM")
    assert residuals(shifted, None, values, vectors).max() < 1e-9


def _near_singular_chain(atoms: int = 200) -> scipy.sparse.csr_matrix:
    """A ring of two-orbital atoms whose on-site blocks [[1e-13, 1], [1, 1e-13]] (eV) give an
    unpivoted factor at sigma = 0 pivots of 1e-13 (H, N = 2 x atoms, eV)."""
    rng = np.random.default_rng(1)
    n = 2 * atoms
    rows, cols, values = [], [], []
    for atom in range(atoms):
        i, j = 2 * atom, 2 * ((atom + 1) % atoms)
        rows += [i, i + 1, i, i + 1]
        cols += [i + 1, i, i, i + 1]
        values += [1.0, 1.0, 1e-13, 1e-13]
        hop = rng.normal(size=(2, 2)) * 0.3
        for p in range(2):
            for q in range(2):
                rows += [i + p, j + q]
                cols += [j + q, i + p]
                values += [hop[p, q], hop[p, q]]
    return scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n, n))


def _nearest(dense: np.ndarray, count: int, around: float) -> np.ndarray:
    return np.sort(dense[np.argsort(np.abs(dense - around))[:count]])


def test_an_inaccurate_unpivoted_factor_is_solved_again_with_pivoting(caplog, monkeypatch) -> None:
    h = _near_singular_chain()
    want = _nearest(np.linalg.eigvalsh(h.toarray()), 6, 0.0)
    with caplog.at_level(logging.WARNING, logger="hamflow.infer.band_structure"):
        got = sparse_bands(h, None, 6, 0.0)
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert "solving again with pivoting" in caplog.text
    # without the residual guard the unpivoted answer is what would come back
    monkeypatch.setattr(band_structure, "RESIDUAL_TOLERANCE_EV", np.inf)
    unguarded = sparse_bands(h, None, 6, 0.0)
    assert np.abs(unguarded - want).max() > 1e-6  # 2.9e-4 eV here


def test_an_accurate_unpivoted_factor_is_kept(caplog) -> None:
    h = _near_singular_chain()
    with caplog.at_level(logging.WARNING, logger="hamflow.infer.band_structure"):
        got = sparse_bands(h, None, 6, 0.3)  # 0.3 eV: no small pivot
    np.testing.assert_allclose(got, _nearest(np.linalg.eigvalsh(h.toarray()), 6, 0.3), atol=1e-9)
    assert "pivoting" not in caplog.text
