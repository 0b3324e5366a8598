"""Entry errors of a predicted H (or Rho) against DFT: overall, per structure, element pair, shell pair.

The comparison runs over the atom pairs (R, i, j) present in both files, entry by entry (every entry of
every block, as DeepH-dock's error analysis does). Errors are absolute: |pred - dft| (eV for H,
electrons for Rho; complex modulus for spinful blocks).

Gauge correction (``standardize_gauge``): a Hamiltonian is defined up to a constant energy shift, which
in a non-orthogonal basis is mu * S. Per structure, mu = <dH, S> / <S, S> over all compared entries
(dH = pred - dft; spinful S acts as [[S, 0], [0, S]]), and the corrected error is |dH - mu S|, exactly
DeepH-dock's ``standardize_gauge`` definition.

Shells are named per element by angular momentum and count: an element with shells [0, 0, 1, 1, 2]
has s1, s2, p1, p2, d1 (the k-th shell of that l, in ``elements_orbital_map`` order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.errors import DataError
from hamflow.graph.basis import L_LETTERS

#: Entries of one structure kept at most for the parity plot (a seeded random subset).
PARITY_SAMPLES_PER_STRUCTURE = 20_000


def shell_names(shell_ls: Sequence[int]) -> list[str]:
    """Names of an element's shells in file order: [0, 0, 1, 1, 2] -> [s1, s2, p1, p2, d1]."""
    seen: dict[int, int] = {}
    names = []
    for l in (int(v) for v in shell_ls):
        seen[l] = seen.get(l, 0) + 1
        letter = L_LETTERS[l] if l < len(L_LETTERS) else f"l{l}_"
        names.append(f"{letter}{seen[l]}")
    return names


def _shell_of_orbital(shell_ls: Sequence[int]) -> np.ndarray:
    """(n_orb,) int64: shell index (file order) of each orbital of an element."""
    return np.repeat(np.arange(len(shell_ls)), [2 * int(l) + 1 for l in shell_ls]).astype(np.int64)


@dataclass
class EntryComparison:
    """Reference and predicted entries of one structure on the atom pairs both files hold.

    reference, predicted: (M,) float64 or complex128, every entry of the compared blocks.
    overlap:              (M,) float64 S at each entry (spinful: [[S, 0], [0, S]]), or None.
    pair_of_entry:        (M,) int64 index into ``pairs`` of each entry.
    row, col:             (M,) int64 position of each entry inside its block.
    pairs:                (P, 5) int64 compared pairs [R1, R2, R3, i, j]; shapes (P, 2).
    missing_pairs:        pairs in the reference but not in the prediction (not compared).
    extra_pairs:          pairs in the prediction but not in the reference (not compared).
    """

    reference: np.ndarray
    predicted: np.ndarray
    overlap: np.ndarray | None
    pair_of_entry: np.ndarray
    row: np.ndarray
    col: np.ndarray
    pairs: np.ndarray
    shapes: np.ndarray
    missing_pairs: int
    extra_pairs: int


def _pair_rows(source: BlockMatrix, pairs: np.ndarray) -> np.ndarray:
    """Row in ``source`` of each of ``pairs`` (N, 5), -1 where absent."""
    if source.atom_pairs.shape == pairs.shape and np.array_equal(source.atom_pairs, pairs):
        return np.arange(pairs.shape[0], dtype=np.int64)
    index = source.pair_index()
    return np.array([index.get(tuple(int(v) for v in row), -1) for row in pairs], dtype=np.int64)


def compare_entries(
    reference: BlockMatrix,
    predicted: BlockMatrix,
    overlap: BlockMatrix | None = None,
    *,
    spinful: bool = False,
    structure: str | None = None,
) -> EntryComparison:
    """Align the predicted blocks (and S) with the reference's on their common pairs.

    Raises DataError (naming the structure and the pair) when a common pair's block shapes differ,
    or when no pair is common.
    """
    ref_pairs = np.asarray(reference.atom_pairs, dtype=np.int64)
    pred_rows = _pair_rows(predicted, ref_pairs)
    keep = np.nonzero(pred_rows >= 0)[0]
    if keep.size == 0:
        raise DataError("prediction and DFT file share no atom pair", structure=structure, key="atom_pairs")
    pred_rows = pred_rows[keep]
    shapes = np.asarray(reference.chunk_shapes, dtype=np.int64)[keep]
    pred_shapes = np.asarray(predicted.chunk_shapes, dtype=np.int64)[pred_rows]
    bad = np.nonzero((shapes != pred_shapes).any(axis=1))[0]
    if bad.size:
        n = int(keep[bad[0]])
        raise DataError(
            f"pair {ref_pairs[n].tolist()}: predicted block shape {pred_shapes[bad[0]].tolist()}, "
            f"DFT {shapes[bad[0]].tolist()}",
            structure=structure,
            key="chunk_shapes",
        )
    sizes = shapes[:, 0] * shapes[:, 1]
    total = int(sizes.sum())
    pair_of_entry = np.repeat(np.arange(keep.size, dtype=np.int64), sizes)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offset = np.arange(total, dtype=np.int64) - first[pair_of_entry]
    cols_of_entry = shapes[pair_of_entry, 1]
    row, col = offset // np.maximum(cols_of_entry, 1), offset % np.maximum(cols_of_entry, 1)
    ref_values = reference.entries[np.asarray(reference.chunk_boundaries)[keep][pair_of_entry] + offset]
    pred_values = predicted.entries[np.asarray(predicted.chunk_boundaries)[pred_rows][pair_of_entry] + offset]
    dtype = np.result_type(ref_values.dtype, pred_values.dtype, np.float64)

    overlap_values = None
    if overlap is not None:
        s_rows = _pair_rows(overlap, ref_pairs[keep])
        s_shapes = np.asarray(overlap.chunk_shapes, dtype=np.int64)
        present = s_rows[pair_of_entry] >= 0
        safe_rows = np.where(s_rows >= 0, s_rows, 0)
        s_cols = s_shapes[safe_rows, 1][pair_of_entry]
        s_nrows = s_shapes[safe_rows, 0][pair_of_entry]
        if spinful:
            same_spin = (row < s_nrows) == (col < s_cols)
            s_row, s_col = row % np.maximum(s_nrows, 1), col % np.maximum(s_cols, 1)
            present &= same_spin
        else:
            s_row, s_col = row, col
        start = np.asarray(overlap.chunk_boundaries)[safe_rows][pair_of_entry]
        index = np.where(present, start + s_row * s_cols + s_col, 0)
        values = np.asarray(overlap.entries)
        overlap_values = np.where(present, np.real(values[index]) if values.size else 0.0, 0.0)

    return EntryComparison(
        reference=ref_values.astype(dtype, copy=False),
        predicted=pred_values.astype(dtype, copy=False),
        overlap=overlap_values,
        pair_of_entry=pair_of_entry,
        row=row,
        col=col,
        pairs=ref_pairs[keep],
        shapes=shapes,
        missing_pairs=int(ref_pairs.shape[0] - keep.size),
        extra_pairs=int(predicted.num_pairs - keep.size),
    )


def gauge_mu(difference: np.ndarray, overlap: np.ndarray) -> float:
    """mu = <dH, S> / <S, S> (eV): the constant shift mu * S that best explains ``difference``.

    difference: (M,) pred - dft (real part used for complex entries); overlap: (M,) S. 0 when S = 0.
    """
    s = np.asarray(overlap, dtype=np.float64)
    denominator = float(s @ s)
    if denominator <= 0.0:
        return 0.0
    return float(np.real(np.asarray(difference)) @ s) / denominator


@dataclass
class GroupStats:
    """Sum, count and maximum of absolute errors of a group of entries (eV, or electrons for Rho)."""

    total: float = 0.0
    count: int = 0
    maximum: float = 0.0

    def add(self, total: float, count: int, maximum: float) -> None:
        self.total += float(total)
        self.count += int(count)
        self.maximum = max(self.maximum, float(maximum))

    def merge(self, other: GroupStats) -> None:
        self.add(other.total, other.count, other.maximum)

    @property
    def mae(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _grouped(codes: np.ndarray, errors: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum, count, max) of ``errors`` per code 0..size-1."""
    sums = np.bincount(codes, weights=errors, minlength=size)
    counts = np.bincount(codes, minlength=size)
    maxima = np.zeros(size)
    np.maximum.at(maxima, codes, errors)
    return sums, counts, maxima


@dataclass
class StructureErrors:
    """Errors of one structure (eV for H, electrons for Rho).

    mae, max_error:             plain |pred - dft| over all compared entries.
    mu:                         the gauge shift (eV) when the correction was asked for, else None.
    gauge_mae, gauge_max_error: |pred - dft - mu S| (None without the correction).
    element_pairs:              {(element_i, element_j): GroupStats} of the reported errors.
    shell_pairs:                {(element_i, shell_i, element_j, shell_j): GroupStats}.
    The reported errors (tables, parity) are the gauge-corrected ones when the correction is on.
    parity_reference / parity_predicted: (<= PARITY_SAMPLES_PER_STRUCTURE,) a seeded random subset of
    entries (real parts; the prediction gauge-corrected when the correction is on).
    """

    sid: str
    num_entries: int
    num_pairs: int
    missing_pairs: int
    extra_pairs: int
    mae: float
    max_error: float
    mu: float | None = None
    gauge_mae: float | None = None
    gauge_max_error: float | None = None
    element_pairs: dict[tuple[str, str], GroupStats] = field(default_factory=dict)
    shell_pairs: dict[tuple[str, str, str, str], GroupStats] = field(default_factory=dict)
    parity_reference: np.ndarray = field(default_factory=lambda: np.zeros(0))
    parity_predicted: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def reported_mae(self) -> float:
        return self.gauge_mae if self.gauge_mae is not None else self.mae

    @property
    def reported_max_error(self) -> float:
        return self.gauge_max_error if self.gauge_max_error is not None else self.max_error


def structure_errors(
    comparison: EntryComparison,
    elements: Sequence[str],
    elements_orbital_map: dict[str, Sequence[int]],
    *,
    sid: str,
    standardize_gauge: bool = False,
    parity_samples: int = PARITY_SAMPLES_PER_STRUCTURE,
) -> StructureErrors:
    """All error statistics of one structure from its aligned entries.

    elements: (n_atoms,) symbol of each atom in POSCAR order. With ``standardize_gauge`` the overlap
    must be part of ``comparison`` (DataError otherwise).
    """
    difference = comparison.predicted - comparison.reference
    plain = np.abs(difference)
    result = StructureErrors(
        sid=sid,
        num_entries=int(plain.size),
        num_pairs=int(comparison.pairs.shape[0]),
        missing_pairs=comparison.missing_pairs,
        extra_pairs=comparison.extra_pairs,
        mae=float(plain.mean()),
        max_error=float(plain.max()),
    )
    reported = plain
    shift = 0.0
    if standardize_gauge:
        if comparison.overlap is None:
            raise DataError(
                "the gauge correction needs the overlap S, but overlap.h5 is missing", structure=sid, key="S"
            )
        shift = gauge_mu(difference, comparison.overlap)
        reported = np.abs(difference - shift * comparison.overlap)
        result.mu = shift
        result.gauge_mae = float(reported.mean())
        result.gauge_max_error = float(reported.max())

    symbols = sorted(set(elements))
    element_index = np.array([symbols.index(el) for el in elements], dtype=np.int64)
    atom_i = element_index[comparison.pairs[:, 3]][comparison.pair_of_entry]
    atom_j = element_index[comparison.pairs[:, 4]][comparison.pair_of_entry]
    num = len(symbols)
    sums, counts, maxima = _grouped(atom_i * num + atom_j, reported, num * num)
    for code in np.nonzero(counts)[0]:
        key = (symbols[code // num], symbols[code % num])
        result.element_pairs[key] = GroupStats(float(sums[code]), int(counts[code]), float(maxima[code]))

    # shells: one global index per (element, shell); spinful blocks repeat the orbitals twice
    shell_offset = np.cumsum([0] + [len(elements_orbital_map[el]) for el in symbols])
    orbital_shell = [
        _shell_of_orbital(elements_orbital_map[el]) + shell_offset[k] for k, el in enumerate(symbols)
    ]
    names = [(el, name) for el in symbols for name in shell_names(elements_orbital_map[el])]
    num_shells = len(names)
    norb = np.array([len(o) for o in orbital_shell], dtype=np.int64)
    table = np.full((num, int(norb.max())), -1, dtype=np.int64)
    for k, shells in enumerate(orbital_shell):
        table[k, : len(shells)] = shells
    shell_i = table[atom_i, comparison.row % norb[atom_i]]
    shell_j = table[atom_j, comparison.col % norb[atom_j]]
    if (shell_i < 0).any() or (shell_j < 0).any():
        raise DataError("block larger than elements_orbital_map allows", structure=sid, key="chunk_shapes")
    sums, counts, maxima = _grouped(shell_i * num_shells + shell_j, reported, num_shells * num_shells)
    for code in np.nonzero(counts)[0]:
        a, b = names[code // num_shells], names[code % num_shells]
        result.shell_pairs[(a[0], a[1], b[0], b[1])] = GroupStats(
            float(sums[code]), int(counts[code]), float(maxima[code])
        )

    rng = np.random.default_rng(0)
    take = np.arange(plain.size)
    if plain.size > parity_samples:
        take = np.sort(rng.choice(plain.size, size=parity_samples, replace=False))
    corrected = comparison.predicted[take]
    if standardize_gauge and comparison.overlap is not None:
        corrected = corrected - shift * comparison.overlap[take]
    result.parity_reference = np.real(comparison.reference[take]).astype(np.float64)
    result.parity_predicted = np.real(corrected).astype(np.float64)
    return result


@dataclass
class ErrorSummary:
    """Errors aggregated over many structures (eV for H, electrons for Rho)."""

    overall: GroupStats = field(default_factory=GroupStats)
    overall_plain: GroupStats = field(default_factory=GroupStats)
    element_pairs: dict[tuple[str, str], GroupStats] = field(default_factory=dict)
    shell_pairs: dict[tuple[str, str, str, str], GroupStats] = field(default_factory=dict)
    structures: list[StructureErrors] = field(default_factory=list)

    def add(self, errors: StructureErrors) -> None:
        """Merge one structure (the reported errors: gauge-corrected when that is on)."""
        self.structures.append(errors)
        self.overall.add(
            errors.reported_mae * errors.num_entries, errors.num_entries, errors.reported_max_error
        )
        self.overall_plain.add(errors.mae * errors.num_entries, errors.num_entries, errors.max_error)
        for key, stats in errors.element_pairs.items():
            self.element_pairs.setdefault(key, GroupStats()).merge(stats)
        for key, stats in errors.shell_pairs.items():
            self.shell_pairs.setdefault(key, GroupStats()).merge(stats)
