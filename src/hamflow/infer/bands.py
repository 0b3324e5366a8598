"""Eigenvalue and band errors: the generalized problem H(k) c = e S(k) c for DFT and predicted H.

Where the eigenvalues are taken (:func:`k_points_for`):
  gamma   structures whose matrix holds only R = (0, 0, 0) pairs (molecules in a box): k = Gamma;
  k_path  periodic structures whose folder has a ``K_PATH`` file: every point of the path;
  grid    other periodic structures: a Gamma-centred n1 x n2 x n3 grid, one point along directions
          in which no pair has R != 0.
Both spectra use the DFT overlap S(k). With the gauge correction the predicted spectrum is shifted by
-mu (the eigenvalues of H - mu S are those of H minus mu).

Which states are compared:
  occupied      the lowest ``occupation / 2`` states (``occupation`` states when spinful) when
                info.json gives ``occupation``, else the states at or below ``fermi_energy_eV``;
  near Fermi    the states within ``window`` eV of the band edges: occupied states no more than
                ``window`` below the highest occupied level (valence-band maximum / HOMO) and empty
                states no more than ``window`` above the lowest empty one (conduction-band minimum /
                LUMO). For a metal this is E_F +- window; for a molecule or insulator it keeps the
                frontier states however wide the gap. Needs ``occupation`` or ``fermi_energy_eV``.
The Fermi level reported is ``fermi_energy_eV``, or the middle of the gap when only ``occupation``
is given.
Energies in eV.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamflow.data.kspace import band_eigenvalues, read_k_path
from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.data.structure import Structure

K_PATH_FILE = "K_PATH"
DEFAULT_WINDOW_EV = 2.0
DEFAULT_K_GRID = (4, 4, 4)


@dataclass
class KPoints:
    """Where eigenvalues are taken: kind (gamma, k_path, grid), fractional k (n_k, 3), path labels
    as (index into k, name)."""

    kind: str
    k_frac: np.ndarray
    labels: list[tuple[int, str]]


@dataclass
class EigenvalueErrors:
    """DFT and predicted eigenvalues of one structure and their errors (eV).

    lattice:         (3, 3) rows are lattice vectors, Angstrom (for k-path distances).

    dft, predicted:  (n_k, n_states) ascending eigenvalues; ``predicted`` gauge-corrected (-mu).
    occupied:        (n_k, n_states) bool; near_fermi likewise (None without occupation or E_F).
    fermi_energy:    eV or None. ``*_mae`` / ``*_max`` are NaN when no state qualifies.
    """

    sid: str
    k_points: KPoints
    dft: np.ndarray
    predicted: np.ndarray
    occupied: np.ndarray
    near_fermi: np.ndarray | None
    fermi_energy: float | None
    window: float
    mu: float
    lattice: np.ndarray | None = None

    def _stats(self, mask: np.ndarray | None) -> tuple[float, float, int]:
        if mask is None or not mask.any():
            return float("nan"), float("nan"), 0
        errors = np.abs(self.predicted - self.dft)[mask]
        return float(errors.mean()), float(errors.max()), int(mask.sum())

    @property
    def occupied_stats(self) -> tuple[float, float, int]:
        """(MAE, max error, number of states) over occupied states at all k, eV."""
        return self._stats(self.occupied)

    @property
    def near_fermi_stats(self) -> tuple[float, float, int]:
        """(MAE, max error, number of states) within the window around the Fermi level, eV."""
        return self._stats(self.near_fermi)


def _is_molecule(matrix: BlockMatrix) -> bool:
    return not np.asarray(matrix.atom_pairs)[:, :3].any()


def k_points_for(
    structure: Structure, *, h_key: str = "H", k_grid: tuple[int, int, int] = DEFAULT_K_GRID
) -> KPoints:
    """Gamma for molecules, the K_PATH for periodic structures that have one, else a grid.

    Periodicity is read from the cell shifts R of ``structure.matrices[h_key]``.
    """
    matrix = structure.matrices[h_key]
    if _is_molecule(matrix):
        return KPoints("gamma", np.zeros((1, 3)), [(0, "Gamma")])
    k_path = Path(structure.path) / K_PATH_FILE
    if k_path.is_file():
        k_frac, labels = read_k_path(k_path)
        return KPoints("k_path", k_frac, labels)
    periodic = np.asarray(matrix.atom_pairs)[:, :3].any(axis=0)
    counts = [int(n) if p else 1 for n, p in zip(k_grid, periodic, strict=True)]
    axes = [np.arange(n) / n for n in counts]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return KPoints("grid", grid, [])


def _occupied_count(structure: Structure) -> int | None:
    occupation = structure.info.occupation
    if occupation is None:
        return None
    per_state = 1.0 if structure.info.spinful else 2.0
    return int(round(occupation / per_state))


def eigenvalue_errors(
    structure: Structure,
    predicted: BlockMatrix,
    *,
    mu: float = 0.0,
    window: float = DEFAULT_WINDOW_EV,
    k_grid: tuple[int, int, int] = DEFAULT_K_GRID,
    h_key: str = "H",
) -> EigenvalueErrors:
    """Eigenvalues of the DFT ``structure.matrices[h_key]`` and of ``predicted``, both with the DFT S.

    ``mu`` (eV) is subtracted from the predicted eigenvalues (the gauge shift of the prediction).
    """
    k_points = k_points_for(structure, h_key=h_key, k_grid=k_grid)
    with_prediction = dataclasses.replace(structure, matrices={**structure.matrices, "H_pred": predicted})
    dft = band_eigenvalues(structure, k_points.k_frac, h_key=h_key)
    pred = band_eigenvalues(with_prediction, k_points.k_frac, h_key="H_pred") - mu
    states = np.arange(dft.shape[1])[None, :]
    n_occ = _occupied_count(structure)
    fermi = structure.info.fermi_energy_eV
    if n_occ is not None:
        n_occ = min(n_occ, dft.shape[1])
        occupied = np.broadcast_to(states < n_occ, dft.shape).copy()
        if fermi is None and 0 < n_occ < dft.shape[1]:
            fermi = 0.5 * (float(dft[:, n_occ - 1].max()) + float(dft[:, n_occ].min()))
    elif fermi is not None:
        occupied = dft <= fermi
    else:
        occupied = np.zeros(dft.shape, dtype=bool)
    near = None
    if n_occ is not None or fermi is not None:
        near = np.zeros(dft.shape, dtype=bool)
        if occupied.any():
            near |= occupied & (dft >= float(dft[occupied].max()) - window)
        if (~occupied).any():
            near |= ~occupied & (dft <= float(dft[~occupied].min()) + window)
    return EigenvalueErrors(
        sid=structure.sid,
        k_points=k_points,
        dft=dft,
        predicted=pred,
        occupied=occupied,
        near_fermi=near,
        fermi_energy=None if fermi is None else float(fermi),
        window=float(window),
        mu=float(mu),
        lattice=np.asarray(structure.poscar.lattice, dtype=np.float64),
    )


def save_bands(path: str | Path, errors: EigenvalueErrors) -> None:
    """Write the spectra of one structure to an ``.npz`` (read by the band plot), atomically."""
    from hamflow.atomic import atomic_path

    label_index = np.array([i for i, _ in errors.k_points.labels], dtype=np.int64)
    label_names = np.array([name for _, name in errors.k_points.labels], dtype=str)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            sid=np.array(errors.sid),
            kind=np.array(errors.k_points.kind),
            k_frac=errors.k_points.k_frac,
            label_index=label_index,
            label_names=label_names,
            dft=errors.dft,
            predicted=errors.predicted,
            fermi_energy=np.array(np.nan if errors.fermi_energy is None else errors.fermi_energy),
            mu=np.array(errors.mu),
            lattice=np.full((3, 3), np.nan) if errors.lattice is None else errors.lattice,
        )
