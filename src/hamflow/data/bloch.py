"""The Bloch sum M(k) = sum_R exp(+2 pi i k.R) M(R) of a block matrix, as a dense or a sparse matrix.

One place for it: :class:`BlochMatrix` turns the blocks of a :class:`BlockMatrix` into entries
(cell R, row, column, value) once, with the sorted set of positions they fill in M(k); M(k) at any k
is then one weighted sum over those entries, written into a dense (N, N) array or a
``scipy.sparse`` CSR matrix with the same values. ``hamflow.data.kspace`` (dense eigenvalues, used
by ``hamflow evaluate``) and ``hamflow.infer.band_structure`` (``hamflow bands``, dense or sparse)
both call it.

Conventions (as in :mod:`hamflow.data.kspace`): k in fractional (reciprocal-lattice) coordinates,
R the integer cell shift of atom j; orbitals of atom a are rows/columns
``orbital_offsets[a]:orbital_offsets[a+1]``. Spinful: all spin-up orbitals first, then all spin-down;
a stored (2 ni, 2 nj) block [[uu, ud], [du, dd]] is split into the four quadrants, a spinless
(ni, nj) block (the overlap S) is expanded as kron(I2, S).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.errors import DataError


def bloch_phases(cells: np.ndarray, k_frac: np.ndarray) -> np.ndarray:
    """(n_k, n_R) complex128 exp(+2 pi i k.R) for fractional k (n_k, 3) and cell shifts R (n_R, 3)."""
    k = np.asarray(k_frac, dtype=np.float64).reshape(-1, 3)
    return np.exp(2j * np.pi * (k @ np.asarray(cells, dtype=np.float64).T))


def _spin_index(local: np.ndarray, half: int, offset: np.ndarray, n_orb: int) -> np.ndarray:
    """Global index of row (or column) ``local`` of a spinful block whose first ``half`` rows are up."""
    return offset[:, None] + local[None, :] + np.where(local >= half, n_orb - half, 0)[None, :]


@dataclass(frozen=True, eq=False)
class BlochMatrix:
    """The entries of M(R) with the positions they take in M(k).

    size:     N, the matrix dimension (n_orb, or 2 n_orb when spinful).
    cells:    (n_R, 3) int64 distinct cell shifts R.
    cell:     (nnz,) int64 index into ``cells`` of each entry.
    slot:     (nnz,) int64 index into ``pattern`` of each entry (entries of different R at the same
              row and column share a slot).
    pattern:  (n_slots,) int64 sorted flat positions row * N + col of the nonzeros of M(k).
    values:   (nnz,) the entries, float64 or complex128 (H in eV, S dimensionless).
    """

    size: int
    cells: np.ndarray
    cell: np.ndarray
    slot: np.ndarray
    pattern: np.ndarray
    values: np.ndarray

    @classmethod
    def from_blocks(
        cls, matrix: BlockMatrix, orbital_offsets: np.ndarray, *, spinful: bool = False
    ) -> BlochMatrix:
        """The entries of every block of ``matrix``; DataError naming the first pair whose atom index
        or block shape does not fit ``orbital_offsets`` ((n_atoms+1,) int64, spinless)."""
        offsets = np.asarray(orbital_offsets, dtype=np.int64)
        n_atoms = len(offsets) - 1
        n_orb = int(offsets[-1])
        size = 2 * n_orb if spinful else n_orb
        pairs = np.asarray(matrix.atom_pairs, dtype=np.int64).reshape(-1, 5)
        outside = (pairs[:, 3:] < 0) | (pairs[:, 3:] >= n_atoms)
        if outside.any():
            n = int(np.argwhere(outside.any(axis=1))[0, 0])
            raise DataError(
                f"pair {n} {pairs[n].tolist()} names an atom outside 0..{n_atoms - 1}", key="atom_pairs"
            )
        counts = np.diff(offsets)
        ni, nj = counts[pairs[:, 3]], counts[pairs[:, 4]]
        shapes = np.asarray(matrix.chunk_shapes, dtype=np.int64).reshape(-1, 2)
        plain = (shapes[:, 0] == ni) & (shapes[:, 1] == nj)
        spin_block = ~plain & spinful & (shapes[:, 0] == 2 * ni) & (shapes[:, 1] == 2 * nj)
        wrong = ~(plain | spin_block)
        if wrong.any():
            n = int(np.argwhere(wrong)[0, 0])
            allowed = f"({ni[n]}, {nj[n]})" + (f" or ({2 * ni[n]}, {2 * nj[n]})" if spinful else "")
            raise DataError(
                f"pair {n} {pairs[n].tolist()} has block shape {tuple(int(v) for v in shapes[n])}; "
                f"orbital map gives {allowed}",
                key="chunk_shapes",
            )
        cells, cell_of_pair = np.unique(pairs[:, :3], axis=0, return_inverse=True)
        cells = cells.reshape(-1, 3)
        cell_of_pair = cell_of_pair.reshape(-1)
        bounds = np.asarray(matrix.chunk_boundaries, dtype=np.int64)
        row_start, col_start = offsets[pairs[:, 3]], offsets[pairs[:, 4]]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # cell, flat, entry
        groups = np.unique(np.column_stack([shapes, spin_block]), axis=0)
        for rows, cols, is_spin in groups:
            members = np.nonzero((shapes[:, 0] == rows) & (shapes[:, 1] == cols) & (spin_block == is_spin))[0]
            local = np.arange(rows * cols, dtype=np.int64)
            local_row, local_col = local // max(cols, 1), local % max(cols, 1)
            entry = bounds[members][:, None] + local[None, :]
            cell = np.broadcast_to(cell_of_pair[members][:, None], entry.shape)
            if is_spin:
                r = _spin_index(local_row, rows // 2, row_start[members], n_orb)
                c = _spin_index(local_col, cols // 2, col_start[members], n_orb)
                parts.append((cell, r, c, entry))
            else:
                r = row_start[members][:, None] + local_row[None, :]
                c = col_start[members][:, None] + local_col[None, :]
                parts.append((cell, r, c, entry))
                if spinful:  # kron(I2, block): the down-down copy
                    parts.append((cell, r + n_orb, c + n_orb, entry))
        if parts:
            cell = np.concatenate([p[0].reshape(-1) for p in parts])
            flat = np.concatenate([(p[1] * size + p[2]).reshape(-1) for p in parts])
            entry = np.concatenate([p[3].reshape(-1) for p in parts])
        else:
            cell = flat = entry = np.zeros(0, dtype=np.int64)
        dtype = np.result_type(matrix.entries.dtype, np.float64)
        values = np.asarray(matrix.entries)[entry].astype(dtype, copy=False)
        pattern, slot = np.unique(flat, return_inverse=True)
        return cls(
            size=size,
            cells=cells.astype(np.int64, copy=False),
            cell=cell.astype(np.int64, copy=False),
            slot=slot.reshape(-1).astype(np.int64, copy=False),
            pattern=pattern.astype(np.int64, copy=False),
            values=values,
        )

    @property
    def nnz(self) -> int:
        """Nonzero positions of M(k) (entries of different R at one position count once)."""
        return int(self.pattern.size)

    @functools.cached_property
    def _by_slot_and_cell(self) -> scipy.sparse.csr_matrix:
        """(n_slots, n_R) sparse: the value each cell R puts at each slot (summed if repeated)."""
        return scipy.sparse.csr_matrix(
            (self.values, (self.slot, self.cell)), shape=(self.pattern.size, len(self.cells))
        )

    def values_at_k(self, k_frac) -> np.ndarray:
        """The Bloch sum: (n_slots,) complex128 values of M(k) at ``pattern``; k_frac (3,)."""
        phase = bloch_phases(self.cells, k_frac)[0]
        return np.asarray(self._by_slot_and_cell @ phase, dtype=np.complex128)

    def dense(self, k_frac) -> np.ndarray:
        """M(k) as a dense (N, N) complex128 array."""
        out = np.zeros(self.size * self.size, dtype=np.complex128)
        out[self.pattern] = self.values_at_k(k_frac)
        return out.reshape(self.size, self.size)

    def sparse(self, k_frac) -> scipy.sparse.csr_matrix:
        """M(k) as an (N, N) complex128 CSR matrix with the same values as :meth:`dense`."""
        rows, cols = np.divmod(self.pattern, self.size)
        indptr = np.searchsorted(rows, np.arange(self.size + 1), side="left")
        return scipy.sparse.csr_matrix((self.values_at_k(k_frac), cols, indptr), shape=(self.size, self.size))

    def real_space(self) -> np.ndarray:
        """(n_R, N, N) dense M(R) per cell in ``cells`` (dtype of ``values``)."""
        out = np.zeros((len(self.cells), self.size * self.size), dtype=self.values.dtype)
        np.add.at(out, (self.cell, self.pattern[self.slot]), self.values)
        return out.reshape(len(self.cells), self.size, self.size)
