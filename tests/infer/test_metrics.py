"""Entry errors: pair alignment, gauge correction, element-pair and shell-pair tables."""

from __future__ import annotations

import numpy as np
import pytest

from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.errors import DataError
from hamflow.infer.metrics import (
    ErrorSummary,
    compare_entries,
    gauge_mu,
    shell_names,
    structure_errors,
)

# two atoms: O (s, p: 4 orbitals) and H (s: 1 orbital)
ORBITALS = {"O": (0, 1), "H": (0,)}
ELEMENTS = ("O", "H")
SIZES = {0: 4, 1: 1}
PAIRS = [
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 1],
    [0, 0, 0, 1, 0],
    [0, 0, 0, 1, 1],
    [1, 0, 0, 0, 1],
    [-1, 0, 0, 1, 0],
]


def _matrix(seed: int, pairs=PAIRS, *, spin: int = 1, complex_entries: bool = False) -> BlockMatrix:
    rng = np.random.default_rng(seed)
    blocks = []
    for pair in pairs:
        shape = (spin * SIZES[pair[3]], spin * SIZES[pair[4]])
        block = rng.normal(size=shape)
        if complex_entries:
            block = block + 1j * rng.normal(size=shape)
        blocks.append(block)
    return BlockMatrix.from_blocks(pairs, blocks)


def test_shell_names_count_shells_per_l() -> None:
    assert shell_names([0, 0, 1, 1, 2]) == ["s1", "s2", "p1", "p2", "d1"]
    assert shell_names([1, 0, 1]) == ["p1", "s1", "p2"]


def test_compare_aligns_reordered_pairs_and_counts_missing_and_extra() -> None:
    reference = _matrix(0)
    order = [3, 0, 5, 2, 1]  # pair 4 missing from the prediction
    predicted = BlockMatrix.from_blocks(
        [PAIRS[k] for k in order] + [[2, 0, 0, 0, 0]],
        [reference.block(k) + 0.5 for k in order] + [np.zeros((4, 4))],
    )
    comparison = compare_entries(reference, predicted)
    assert comparison.missing_pairs == 1
    assert comparison.extra_pairs == 1
    assert comparison.pairs.shape == (5, 5)
    np.testing.assert_allclose(comparison.predicted - comparison.reference, 0.5)
    errors = structure_errors(comparison, ELEMENTS, ORBITALS, sid="x")
    assert errors.mae == pytest.approx(0.5)
    assert errors.max_error == pytest.approx(0.5)
    assert errors.num_entries == 16 + 4 + 4 + 1 + 4


def test_compare_rejects_other_block_shapes_and_no_common_pair() -> None:
    reference = _matrix(0)
    wrong = BlockMatrix.from_blocks([PAIRS[0]], [np.zeros((3, 4))])
    with pytest.raises(DataError, match=r"structure s7.*predicted block shape \[3, 4\], DFT \[4, 4\]"):
        compare_entries(reference, wrong, structure="s7")
    elsewhere = BlockMatrix.from_blocks([[5, 5, 5, 0, 0]], [np.zeros((4, 4))])
    with pytest.raises(DataError, match="share no atom pair"):
        compare_entries(reference, elsewhere)


def test_gauge_correction_removes_a_constant_mu_s_shift_exactly() -> None:
    reference, overlap = _matrix(1), _matrix(2)
    noise = _matrix(3)
    shifted = BlockMatrix(
        reference.atom_pairs,
        reference.chunk_shapes,
        reference.chunk_boundaries,
        reference.entries + 6.5 * overlap.entries + 1e-4 * noise.entries,
    )
    comparison = compare_entries(reference, shifted, overlap)
    errors = structure_errors(comparison, ELEMENTS, ORBITALS, sid="g", standardize_gauge=True)
    expected_mu = 6.5 + 1e-4 * float(noise.entries @ overlap.entries) / float(
        overlap.entries @ overlap.entries
    )
    assert errors.mu == pytest.approx(expected_mu, rel=1e-12)
    residual = 1e-4 * noise.entries - (expected_mu - 6.5) * overlap.entries
    assert errors.gauge_mae == pytest.approx(np.abs(residual).mean(), rel=1e-9)
    assert errors.mae > 1.0  # the plain error still sees the whole shift
    assert gauge_mu(np.zeros(3), np.zeros(3)) == 0.0


def test_gauge_needs_the_overlap() -> None:
    comparison = compare_entries(_matrix(0), _matrix(1))
    with pytest.raises(DataError, match="structure q: .*overlap S.*overlap.h5 is missing"):
        structure_errors(comparison, ELEMENTS, ORBITALS, sid="q", standardize_gauge=True)


def test_spinful_overlap_is_block_diagonal_in_spin() -> None:
    reference = _matrix(4, spin=2, complex_entries=True)
    overlap = _matrix(5)
    comparison = compare_entries(reference, reference, overlap, spinful=True)
    for n, pair in enumerate(PAIRS):
        ni, nj = SIZES[pair[3]], SIZES[pair[4]]
        s_block = overlap.block(n)
        expected = np.block([[s_block, np.zeros((ni, nj))], [np.zeros((ni, nj)), s_block]])
        rows = comparison.pair_of_entry == n
        got = np.zeros((2 * ni, 2 * nj))
        got[comparison.row[rows], comparison.col[rows]] = comparison.overlap[rows]
        np.testing.assert_array_equal(got, expected)


def test_element_and_shell_pair_tables_partition_the_entries() -> None:
    reference = _matrix(6)
    predicted = _matrix(7)
    comparison = compare_entries(reference, predicted)
    errors = structure_errors(comparison, ELEMENTS, ORBITALS, sid="t")
    absolute = np.abs(predicted.entries - reference.entries)
    assert set(errors.element_pairs) == {("O", "O"), ("O", "H"), ("H", "O"), ("H", "H")}
    # O-H blocks: pair (0,0,0,0,1) and (1,0,0,0,1), each 4x1
    oh = np.concatenate([absolute[16:20], absolute[25:29]])
    assert errors.element_pairs[("O", "H")].count == 8
    assert errors.element_pairs[("O", "H")].mae == pytest.approx(oh.mean())
    assert errors.element_pairs[("O", "H")].maximum == pytest.approx(oh.max())
    # O p1 - O p1 is the lower-right 3x3 of the on-site O block
    on_site = absolute[:16].reshape(4, 4)
    assert errors.shell_pairs[("O", "p1", "O", "p1")].mae == pytest.approx(on_site[1:, 1:].mean())
    assert errors.shell_pairs[("O", "s1", "O", "p1")].count == 3
    total = sum(s.total for s in errors.shell_pairs.values())
    assert sum(s.count for s in errors.shell_pairs.values()) == absolute.size
    assert total == pytest.approx(absolute.sum())

    summary = ErrorSummary()
    summary.add(errors)
    summary.add(errors)
    assert summary.overall.count == 2 * absolute.size
    assert summary.overall.mae == pytest.approx(absolute.mean())
    assert summary.element_pairs[("H", "H")].count == 2 * errors.element_pairs[("H", "H")].count


def test_parity_sample_is_capped_and_seeded() -> None:
    comparison = compare_entries(_matrix(0), _matrix(1))
    first = structure_errors(comparison, ELEMENTS, ORBITALS, sid="p", parity_samples=10)
    second = structure_errors(comparison, ELEMENTS, ORBITALS, sid="p", parity_samples=10)
    assert first.parity_reference.shape == (10,)
    np.testing.assert_array_equal(first.parity_reference, second.parity_reference)
    full = structure_errors(comparison, ELEMENTS, ORBITALS, sid="p")
    np.testing.assert_array_equal(full.parity_predicted, comparison.predicted)
