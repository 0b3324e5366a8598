"""Dense matrices at a k-point from the block-sparse M(R), generalized eigenvalues, and K_PATH files.

The Bloch sum itself is :class:`hamflow.data.bloch.BlochMatrix` (dense and sparse M(k)).
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

from hamflow.data.bloch import BlochMatrix
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
    bloch = BlochMatrix.from_blocks(matrix, orbital_offsets, spinful=spinful)
    return bloch.cells, bloch.real_space()


def dense_at_k(
    matrix: BlockMatrix, orbital_offsets: np.ndarray, k_frac, *, spinful: bool = False
) -> np.ndarray:
    """M(k) = sum_R exp(+2 pi i k.R) M(R) as a dense (N, N) complex128 matrix.

    k_frac: (3,) fractional coordinates. N = n_orb, or 2 n_orb for spinful (module docstring layout).
    """
    return BlochMatrix.from_blocks(matrix, orbital_offsets, spinful=spinful).dense(k_frac)


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
    h_bloch, s_bloch = bloch_matrices(structure, h_key=h_key)
    k_points = np.asarray(k_points_frac, dtype=np.float64).reshape(-1, 3)
    out = np.empty((len(k_points), h_bloch.size), dtype=np.float64)
    for n, k in enumerate(k_points):
        out[n] = generalized_eigenvalues(h_bloch.dense(k), None if s_bloch is None else s_bloch.dense(k))
    return out


def bloch_matrices(structure: Structure, *, h_key: str = "H") -> tuple[BlochMatrix, BlochMatrix | None]:
    """(H, S) of ``structure`` ready for the Bloch sum; S None for an orthogonal basis without S.

    DataError naming the structure when ``h_key`` was not loaded, when S is missing for a
    non-orthogonal basis, or when a block does not fit the orbital map.
    """
    if h_key not in structure.matrices:
        raise DataError(f"{h_key} was not loaded for this structure", structure=structure.sid, key=h_key)
    spinful = structure.info.spinful
    offsets = structure.orbital_offsets
    try:
        h_bloch = BlochMatrix.from_blocks(structure.matrices[h_key], offsets, spinful=spinful)
        s_bloch = None
        if "S" in structure.matrices:
            s_bloch = BlochMatrix.from_blocks(structure.matrices["S"], offsets, spinful=spinful)
        elif not structure.info.orthogonal_basis:
            raise DataError("overlap S was not loaded and the basis is not orthogonal", key="S")
    except DataError as error:
        raise DataError(error.reason, file=structure.path, structure=structure.sid, key=error.key) from None
    return h_bloch, s_bloch


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
