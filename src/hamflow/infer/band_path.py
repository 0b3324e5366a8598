"""Where ``hamflow bands`` takes its k-points: Gamma, a K_PATH file, or a path from ASE.

  gamma    molecules (no matrix pair with a cell shift R != 0): k = Gamma only;
  k_path   the structure folder's ``K_PATH`` file, or the file given with ``--k-path FILE``
           (:func:`hamflow.data.kspace.read_k_path`);
  auto     ``--k-path auto``, or a periodic structure without K_PATH: the special points and path of
           the cell's Bravais lattice from ASE (``Cell.bandpath``, Setyawan-Curtarolo), in the
           coordinates of the structure's own cell, for the directions in which the structure is
           periodic (a slab with vacuum along c gets a 2-D path).

k-points are fractional (reciprocal-lattice) coordinates of the structure's cell. Labels are
(index into the k-points, name) for the first and last point of every segment, as K_PATH files give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamflow.data.kspace import read_k_path
from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.errors import DataError

K_PATH_FILE = "K_PATH"
#: k-points of an automatic path (about; each segment gets its share by length, at least 2)
DEFAULT_AUTO_POINTS = 100
AUTO = "auto"


@dataclass
class BandPath:
    """k-points of a band structure.

    kind:    "gamma", "k_path" (a K_PATH file) or "auto" (ASE).
    k_frac:  (n_k, 3) fractional coordinates.
    labels:  (index into k_frac, name) for the start and end of every segment.
    source:  the K_PATH file, or "ase:<path string>" (e.g. "ase:GXWKGLUWLK,UX"), or "gamma".
    """

    kind: str
    k_frac: np.ndarray
    labels: list[tuple[int, str]]
    source: str


def periodic_directions(matrix: BlockMatrix) -> np.ndarray:
    """(3,) bool: the lattice directions along which some pair of ``matrix`` has R != 0."""
    return np.asarray(matrix.atom_pairs)[:, :3].any(axis=0)


def gamma_point() -> BandPath:
    """k = Gamma only (molecules)."""
    return BandPath("gamma", np.zeros((1, 3)), [(0, "Gamma")], "gamma")


def auto_band_path(
    lattice: np.ndarray, periodic: np.ndarray, *, num_points: int = DEFAULT_AUTO_POINTS
) -> BandPath:
    """ASE's band path of the Bravais lattice of ``lattice`` ((3, 3) rows, Angstrom).

    ``periodic`` (3,) bool restricts it to the periodic directions. Each segment between two special
    points gets points in proportion to its length in 1/Angstrom (at least 2, both ends included);
    a comma in ASE's path (a jump, e.g. "K,U") starts a new run of segments.
    """
    from ase.cell import Cell
    from ase.dft.kpoints import parse_path_string

    lattice = np.asarray(lattice, dtype=np.float64)
    try:
        path = Cell(lattice).bandpath(pbc=[bool(p) for p in periodic], npoints=0)
    except Exception as error:  # ASE raises ValueError / RuntimeError / its own classes for odd cells
        raise DataError(
            f"ASE finds no band path for this cell ({type(error).__name__}: {error}); "
            "give one with --k-path FILE (K_PATH format)",
            key="POSCAR lattice",
        ) from None
    special = {name: np.asarray(point, dtype=np.float64) for name, point in path.special_points.items()}
    reciprocal = 2.0 * np.pi * np.linalg.inv(lattice).T  # rows b_i: k_cart = k_frac @ reciprocal
    segments = [
        (start, end)
        for run in parse_path_string(path.path)
        for start, end in zip(run[:-1], run[1:], strict=True)
    ]
    if not segments:  # a single special point (ASE's path for a cell with no periodic direction)
        return gamma_point()
    lengths = np.array([np.linalg.norm((special[b] - special[a]) @ reciprocal) for a, b in segments])
    total = float(lengths.sum()) or 1.0
    points: list[np.ndarray] = []
    labels: list[tuple[int, str]] = []
    for (a, b), length in zip(segments, lengths, strict=True):
        count = max(2, int(round(num_points * length / total)))
        first = sum(len(p) for p in points)
        fractions = np.linspace(0.0, 1.0, count)
        points.append(special[a][None, :] + fractions[:, None] * (special[b] - special[a])[None, :])
        labels += [(first, a), (first + count - 1, b)]
    return BandPath("auto", np.concatenate(points, axis=0), labels, f"ase:{path.path}")


def choose_band_path(
    folder: str | Path,
    lattice: np.ndarray,
    periodic: np.ndarray,
    k_path: str | None = None,
    *,
    num_points: int = DEFAULT_AUTO_POINTS,
) -> BandPath:
    """The k-points for one structure (module docstring): Gamma for a molecule (any ``k_path`` is
    then ignored), else ``k_path`` (a K_PATH file, or "auto"), else ``folder/K_PATH``, else auto."""
    periodic = np.asarray(periodic, dtype=bool)
    if not periodic.any():
        return gamma_point()
    if k_path is not None and k_path != AUTO:
        k_frac, labels = read_k_path(k_path)
        return BandPath("k_path", k_frac, labels, str(k_path))
    own = Path(folder) / K_PATH_FILE
    if k_path is None and own.is_file():
        k_frac, labels = read_k_path(own)
        return BandPath("k_path", k_frac, labels, str(own))
    return auto_band_path(lattice, periodic, num_points=num_points)
