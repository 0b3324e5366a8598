"""Dense matrices at a k-point from the block-sparse M(R), generalized eigenvalues, and K_PATH files.

Convention: M(k) = sum_R exp(+2 pi i k.R) M(R), with k in fractional (reciprocal-lattice) coordinates
and R the integer cell shift of atom j. Orbitals of atom a occupy rows/columns
``orbital_offsets[a]:orbital_offsets[a+1]``.

Spinful layout of the (2n, 2n) matrices: all spin-up orbitals first, then all spin-down, i.e. the
global matrix is [[M_uu, M_ud], [M_du, M_dd]] with each quadrant (n, n) in the spinless orbital
order. A stored spinful block (2 ni, 2 nj) = [[uu, ud], [du, dd]] is split into the four quadrants;
a spinless block (ni, nj) (the overlap S) is expanded as kron(I2, S) = [[S, 0], [0, S]].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg

from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.data.structure import Structure
from hamflow.errors import DataError


def real_space_dense(
    matrix: BlockMatrix, orbital_offsets: np.ndarray, *, spinful: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Group the blocks by cell shift R: returns (R (n_R, 3) int64, M(R) (n_R, N, N)).

    N = n_orb (spinless) or 2 n_orb (spinful, layout in the module docstring). dtype is the
    entries' dtype promoted to at least float64 (complex stays complex).
    """
    offsets = np.asarray(orbital_offsets, dtype=np.int64)
    n_atoms = len(offsets) - 1
    n_orb = int(offsets[-1])
    size = 2 * n_orb if spinful else n_orb
    pairs = np.asarray(matrix.atom_pairs, dtype=np.int64)
    cells, cell_of_pair = np.unique(pairs[:, :3], axis=0, return_inverse=True)
    cell_of_pair = cell_of_pair.reshape(-1)
    dtype = np.result_type(matrix.entries.dtype, np.float64)
    dense = np.zeros((len(cells), size, size), dtype=dtype)
    for n in range(matrix.num_pairs):
        i, j = int(pairs[n, 3]), int(pairs[n, 4])
        if not (0 <= i < n_atoms and 0 <= j < n_atoms):
            raise DataError(
                f"pair {n} {pairs[n].tolist()} names an atom outside 0..{n_atoms - 1}", key="atom_pairs"
            )
        block = matrix.block(n)
        ni, nj = int(offsets[i + 1] - offsets[i]), int(offsets[j + 1] - offsets[j])
        rows, cols = slice(offsets[i], offsets[i + 1]), slice(offsets[j], offsets[j + 1])
        target = dense[cell_of_pair[n]]
        if block.shape == (ni, nj):
            target[rows, cols] += block
            if spinful:
                target[
                    n_orb + offsets[i] : n_orb + offsets[i + 1], n_orb + offsets[j] : n_orb + offsets[j + 1]
                ] += block
        elif spinful and block.shape == (2 * ni, 2 * nj):
            up_i, up_j = rows, cols
            dn_i = slice(n_orb + offsets[i], n_orb + offsets[i + 1])
            dn_j = slice(n_orb + offsets[j], n_orb + offsets[j + 1])
            target[up_i, up_j] += block[:ni, :nj]
            target[up_i, dn_j] += block[:ni, nj:]
            target[dn_i, up_j] += block[ni:, :nj]
            target[dn_i, dn_j] += block[ni:, nj:]
        else:
            allowed = f"({ni}, {nj})" + (f" or ({2 * ni}, {2 * nj})" if spinful else "")
            raise DataError(
                f"pair {n} {pairs[n].tolist()} has block shape {block.shape}; orbital map gives {allowed}",
                key="chunk_shapes",
            )
    return cells, dense


def _phases(cells: np.ndarray, k_points_frac: np.ndarray) -> np.ndarray:
    """(n_k, n_R) exp(+2 pi i k.R)."""
    return np.exp(2j * np.pi * (np.asarray(k_points_frac, dtype=np.float64) @ cells.T.astype(np.float64)))


def dense_at_k(
    matrix: BlockMatrix, orbital_offsets: np.ndarray, k_frac, *, spinful: bool = False
) -> np.ndarray:
    """M(k) = sum_R exp(+2 pi i k.R) M(R) as a dense (N, N) complex128 matrix.

    k_frac: (3,) fractional coordinates. N = n_orb, or 2 n_orb for spinful (module docstring layout).
    """
    k = np.asarray(k_frac, dtype=np.float64).reshape(1, 3)
    cells, dense = real_space_dense(matrix, orbital_offsets, spinful=spinful)
    phase = _phases(cells, k)[0]
    return np.tensordot(phase, dense, axes=1).astype(np.complex128, copy=False)


def generalized_eigenvalues(h_k: np.ndarray, s_k: np.ndarray | None) -> np.ndarray:
    """Ascending eigenvalues (eV) of H(k) c = E S(k) c; both are symmetrised (M + M^H)/2 first.

    ``s_k`` None means an orthogonal basis (S = I). DataError when S(k) is not positive definite.
    """
    h = 0.5 * (h_k + h_k.conj().T)
    if s_k is None:
        return scipy.linalg.eigh(h, eigvals_only=True)
    s = 0.5 * (s_k + s_k.conj().T)
    try:
        return scipy.linalg.eigh(h, s, eigvals_only=True)
    except np.linalg.LinAlgError as error:
        raise DataError(f"overlap S(k) is not positive definite: {error}", key="overlap") from None


def band_eigenvalues(structure: Structure, k_points_frac: np.ndarray, *, h_key: str = "H") -> np.ndarray:
    """(n_k, N) eigenvalues in eV at each k (fractional, (n_k, 3)); N = n_orb, doubled when spinful.

    Uses ``structure.matrices[h_key]`` and ``structure.matrices["S"]`` (S = I when absent and the
    basis is orthogonal).
    """
    if h_key not in structure.matrices:
        raise DataError(f"{h_key} was not loaded for this structure", structure=structure.sid, key=h_key)
    spinful = structure.info.spinful
    offsets = structure.orbital_offsets
    try:
        h_cells, h_dense = real_space_dense(structure.matrices[h_key], offsets, spinful=spinful)
        s_cells = s_dense = None
        if "S" in structure.matrices:
            s_cells, s_dense = real_space_dense(structure.matrices["S"], offsets, spinful=spinful)
        elif not structure.info.orthogonal_basis:
            raise DataError("overlap S was not loaded and the basis is not orthogonal", key="S")
    except DataError as error:
        raise DataError(error.reason, file=structure.path, structure=structure.sid, key=error.key) from None
    k_points = np.asarray(k_points_frac, dtype=np.float64).reshape(-1, 3)
    h_phase = _phases(h_cells, k_points)
    s_phase = None if s_cells is None else _phases(s_cells, k_points)
    out = np.empty((len(k_points), h_dense.shape[1]), dtype=np.float64)
    for n in range(len(k_points)):
        h_k = np.tensordot(h_phase[n], h_dense, axes=1)
        s_k = None if s_phase is None else np.tensordot(s_phase[n], s_dense, axes=1)
        out[n] = generalized_eigenvalues(h_k, s_k)
    return out


def read_k_path(path: str | Path) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Read a K_PATH file: one segment a line, ``npts k1 k2 k3 q1 q2 q3 label_start label_end``.

    Each segment contributes ``npts`` points from start to end inclusive (fractional coordinates).
    Returns (k_points_frac (n_k, 3), labels) where labels lists (index into k_points, name) for the
    start and end point of every segment, in order.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read: {error}", file=path) from None
    points: list[np.ndarray] = []
    labels: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 9:
            raise DataError(
                f"expected 'npts k1 k2 k3 q1 q2 q3 label_start label_end', got {line.strip()!r}",
                file=path,
                key=f"line {number}",
            )
        try:
            npts = int(tokens[0])
            start = np.array([float(t) for t in tokens[1:4]])
            end = np.array([float(t) for t in tokens[4:7]])
        except ValueError:
            raise DataError(f"not numbers: {line.strip()!r}", file=path, key=f"line {number}") from None
        if npts < 1:
            raise DataError(f"npts = {npts}; expected at least 1", file=path, key=f"line {number}")
        first = sum(len(p) for p in points)
        fractions = np.linspace(0.0, 1.0, npts) if npts > 1 else np.zeros(1)
        points.append(start[None, :] + fractions[:, None] * (end - start)[None, :])
        labels.append((first, tokens[7]))
        labels.append((first + npts - 1, tokens[8]))
    if not points:
        raise DataError("no k-path segments", file=path)
    return np.concatenate(points, axis=0), labels
