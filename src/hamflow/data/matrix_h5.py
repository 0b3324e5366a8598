"""Block-sparse matrix files of the DeepH format (hamiltonian.h5, overlap.h5, density_matrix.h5, ...).

Each file holds four datasets:
  atom_pairs        (N, 5) int64 rows [R1, R2, R3, i, j]: 0-based atoms in POSCAR order, atom j in
                    the cell shifted by R (integer lattice-vector multiples);
  chunk_shapes      (N, 2) int64 block shapes (rows, cols);
  chunk_boundaries  (N+1,) int64 cumulative sizes, starting at 0;
  entries           (chunk_boundaries[-1],) the blocks one after another, each row-major; float64
                    (float32 for predictions) or complex for spinful H / Rho (h5py's complex
                    compound), blocks then laid out [[uu, ud], [du, dd]] with shape (2 ni, 2 nj).
Units: H in eV, S dimensionless, Rho in electrons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hamflow.atomic import atomic_path
from hamflow.errors import DataError

MATRIX_FILES: dict[str, str] = {
    "H": "hamiltonian.h5",
    "S": "overlap.h5",
    "Rho": "density_matrix.h5",
    "H_pred": "hamiltonian_pred.h5",
    "Rho_pred": "density_matrix_pred.h5",
}

_DATASETS = ("atom_pairs", "chunk_shapes", "chunk_boundaries", "entries")


@dataclass
class BlockMatrix:
    """A matrix M(R)_{ij} stored as one dense block per atom pair (R, i, j).

    atom_pairs:       (N, 5) int64 rows [R1, R2, R3, i, j], 0-based atoms.
    chunk_shapes:     (N, 2) int64.
    chunk_boundaries: (N+1,) int64, cumulative from 0.
    entries:          (chunk_boundaries[-1],) float or complex, the blocks row-major.
    """

    atom_pairs: np.ndarray
    chunk_shapes: np.ndarray
    chunk_boundaries: np.ndarray
    entries: np.ndarray

    @property
    def num_pairs(self) -> int:
        return int(self.atom_pairs.shape[0])

    def block(self, n: int) -> np.ndarray:
        """(rows, cols) view of the block of pair ``n`` (row ``n`` of ``atom_pairs``)."""
        start, stop = int(self.chunk_boundaries[n]), int(self.chunk_boundaries[n + 1])
        rows, cols = (int(v) for v in self.chunk_shapes[n])
        return self.entries[start:stop].reshape(rows, cols)

    def pair_index(self) -> dict[tuple[int, int, int, int, int], int]:
        """{(R1, R2, R3, i, j): row in atom_pairs}."""
        return {tuple(int(v) for v in row): n for n, row in enumerate(self.atom_pairs)}

    @classmethod
    def from_blocks(cls, pairs: Sequence[Sequence[int]], blocks: Sequence[np.ndarray]) -> BlockMatrix:
        """Build from pairs [R1, R2, R3, i, j] and 2-D blocks; entries keep the blocks' common dtype."""
        if len(pairs) != len(blocks):
            raise DataError(f"{len(pairs)} atom pairs but {len(blocks)} blocks", key="entries")
        atom_pairs = np.asarray(pairs, dtype=np.int64).reshape(len(pairs), 5)
        arrays = [np.asarray(block) for block in blocks]
        for n, array in enumerate(arrays):
            if array.ndim != 2:
                raise DataError(f"block {n} has {array.ndim} dimensions, expected 2", key="entries")
        shapes = np.array([array.shape for array in arrays], dtype=np.int64).reshape(len(arrays), 2)
        boundaries = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(shapes[:, 0] * shapes[:, 1], out=boundaries[1:])
        dtype = np.result_type(*arrays) if arrays else np.dtype(np.float64)
        entries = (
            np.concatenate([array.reshape(-1) for array in arrays]).astype(dtype, copy=False)
            if arrays
            else np.zeros(0, dtype=dtype)
        )
        return cls(atom_pairs, shapes, boundaries, entries)


def check_block_matrix(matrix: BlockMatrix) -> tuple[str, str] | None:
    """The first integrity problem of the four arrays as (dataset key, reason), or None when sound.

    Checks dtypes, shapes (N,5)/(N,2)/(N+1,), non-negative shapes, boundaries starting at 0 and
    agreeing with the shapes, and the entries length. Values (NaN, hermiticity) are not checked here.
    """
    pairs, shapes, bounds, entries = (
        matrix.atom_pairs,
        matrix.chunk_shapes,
        matrix.chunk_boundaries,
        matrix.entries,
    )
    for key, array in (("atom_pairs", pairs), ("chunk_shapes", shapes), ("chunk_boundaries", bounds)):
        if not np.issubdtype(array.dtype, np.integer):
            return key, f"dtype {array.dtype}; expected integers (int64)"
    if not (np.issubdtype(entries.dtype, np.floating) or np.issubdtype(entries.dtype, np.complexfloating)):
        return "entries", f"dtype {entries.dtype}; expected float or complex"
    if pairs.ndim != 2 or pairs.shape[1] != 5:
        return "atom_pairs", f"shape {pairs.shape}; expected (N, 5) rows [R1, R2, R3, i, j]"
    n = pairs.shape[0]
    if shapes.shape != (n, 2):
        return "chunk_shapes", f"shape {shapes.shape}; expected ({n}, 2) for {n} atom pairs"
    if bounds.shape != (n + 1,):
        return "chunk_boundaries", f"shape {bounds.shape}; expected ({n + 1},) for {n} atom pairs"
    if entries.ndim != 1:
        return "entries", f"shape {entries.shape}; expected a flat 1-D array"
    if n and (pairs[:, 3:] < 0).any():
        row = int(np.argwhere((pairs[:, 3:] < 0).any(axis=1))[0, 0])
        return "atom_pairs", f"row {row} {pairs[row].tolist()} has a negative atom index"
    if n and (shapes < 0).any():
        row = int(np.argwhere((shapes < 0).any(axis=1))[0, 0])
        return "chunk_shapes", f"row {row} has a negative shape {shapes[row].tolist()}"
    if bounds[0] != 0:
        return "chunk_boundaries", f"starts at {int(bounds[0])}; expected 0"
    sizes = np.diff(bounds)
    if (sizes < 0).any():
        row = int(np.argwhere(sizes < 0)[0, 0])
        return (
            "chunk_boundaries",
            f"decreases at position {row + 1} ({int(bounds[row])} -> {int(bounds[row + 1])})",
        )
    expected = shapes[:, 0] * shapes[:, 1]
    if (sizes != expected).any():
        row = int(np.argwhere(sizes != expected)[0, 0])
        return (
            "chunk_boundaries",
            f"block {row} spans {int(sizes[row])} entries but chunk_shapes gives "
            f"{shapes[row].tolist()} = {int(expected[row])}",
        )
    if entries.shape[0] != int(bounds[-1]):
        return "entries", f"length {entries.shape[0]} but chunk_boundaries ends at {int(bounds[-1])}"
    return None


def read_matrix_h5(path: str | Path, *, structure: str | None = None) -> BlockMatrix:
    """Read a block-sparse matrix file as stored (dtype kept); DataError on any integrity problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path, structure=structure)
    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            for key in _DATASETS:
                node = handle.get(key)
                if not isinstance(node, h5py.Dataset):
                    found = ", ".join(sorted(handle.keys())) or "nothing"
                    reason = "dataset missing" if node is None else "is a group, expected a dataset"
                    raise DataError(
                        f"{reason} (file holds: {found})", file=path, structure=structure, key=key
                    )
                try:
                    arrays[key] = node[()]
                except (OSError, ValueError, TypeError) as error:
                    raise DataError(
                        f"cannot read dataset (truncated or corrupt file?): {error}",
                        file=path,
                        structure=structure,
                        key=key,
                    ) from None
    except DataError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise DataError(
            f"cannot open as HDF5 (truncated or corrupt file?): {error}", file=path, structure=structure
        ) from None
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray) or array.dtype.names is not None:
            dtype = getattr(array, "dtype", type(array).__name__)
            raise DataError(f"unsupported dtype {dtype}", file=path, structure=structure, key=key)
    matrix = BlockMatrix(
        atom_pairs=arrays["atom_pairs"],
        chunk_shapes=arrays["chunk_shapes"],
        chunk_boundaries=arrays["chunk_boundaries"],
        entries=arrays["entries"],
    )
    problem = check_block_matrix(matrix)
    if problem is not None:
        key, reason = problem
        raise DataError(reason, file=path, structure=structure, key=key)
    matrix.atom_pairs = matrix.atom_pairs.astype(np.int64, copy=False)
    matrix.chunk_shapes = matrix.chunk_shapes.astype(np.int64, copy=False)
    matrix.chunk_boundaries = matrix.chunk_boundaries.astype(np.int64, copy=False)
    return matrix


def write_matrix_h5(path: str | Path, matrix: BlockMatrix, *, dtype: np.dtype | type | None = None) -> None:
    """Write atomically; ``dtype`` converts entries (e.g. np.float32 for predictions), else kept."""
    problem = check_block_matrix(matrix)
    if problem is not None:
        key, reason = problem
        raise DataError(f"refusing to write an inconsistent matrix: {reason}", file=path, key=key)
    entries = matrix.entries if dtype is None else matrix.entries.astype(dtype)
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("atom_pairs", data=np.asarray(matrix.atom_pairs, dtype=np.int64))
        handle.create_dataset("chunk_boundaries", data=np.asarray(matrix.chunk_boundaries, dtype=np.int64))
        handle.create_dataset("chunk_shapes", data=np.asarray(matrix.chunk_shapes, dtype=np.int64))
        handle.create_dataset("entries", data=entries)
