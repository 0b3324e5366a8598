"""``hamflow bands``: the band structure of one structure folder from its (predicted) Hamiltonian.

Input: a DeepH-format folder with POSCAR, info.json, overlap.h5 (unless ``orthogonal_basis``) and the
Hamiltonian (``hamiltonian_pred.h5`` as ``hamflow infer`` writes, or any matrix file name). k-points:
:mod:`hamflow.infer.band_path` (Gamma for molecules, K_PATH, a given file, or ASE's path).

At each k, H(k) and S(k) come from the one Bloch sum (:class:`hamflow.data.bloch.BlochMatrix`) and
the generalized problem H(k) c = E S(k) c is solved by
  dense   ``scipy.linalg.eigh``: every state, O(N^3) time and N^2 memory; with ``num_bands`` the
          ``num_bands`` states nearest ``around`` are kept;
  sparse  shift-invert: H(k) - sigma S(k) (sigma = ``around``) is factorised once (SuperLU in a
          minimum-degree order, diagonal pivots, checked by the eigenpairs' residuals), and ARPACK
          finds the ``num_bands`` eigenvalues nearest sigma (``scipy.sparse.linalg.eigsh``; complex
          Hermitian problems go through its ``eigs`` branch, real ones at Gamma-like k stay real).
``solver="auto"`` takes dense up to :data:`DENSE_MAX_ORBITALS` orbitals (N, doubled when spinful) and
sparse above: a dense complex eigh at N = 4000 takes tens of seconds and 0.5 GB; the sparse solver's
time grows with the factorisation's fill instead (benchmarks/bands_large.py).

Energies in eV; k fractional; path distances in 1/Angstrom.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_path
from hamflow.data.kspace import bloch_matrices, generalized_eigenvalues
from hamflow.data.matrix_h5 import MATRIX_FILES
from hamflow.data.structure import INFO_FILE, POSCAR_FILE, Structure, load_structure
from hamflow.errors import ConfigError, DataError
from hamflow.infer.band_path import DEFAULT_AUTO_POINTS, BandPath, choose_band_path, periodic_directions
from hamflow.infer.plots import path_distance, path_segments

LOG = logging.getLogger(__name__)

SOLVERS = ("auto", "dense", "sparse")
#: ``auto`` uses the dense solver up to this matrix size N (orbitals, x2 when spinful), sparse above
DENSE_MAX_ORBITALS = 4000
#: states per k-point of the sparse solver when ``num_bands`` is not given
DEFAULT_SPARSE_BANDS = 20
#: largest |H x - E S x| / |x| (eV) accepted from the factor without pivoting
RESIDUAL_TOLERANCE_EV = 1e-6
BANDS_FILE = "bands.npz"
PLOT_FILE = "bands.png"


@dataclass
class BandStructure:
    """Eigenvalues along a band path.

    eigenvalues:    (n_k, n_bands) ascending at each k, eV (all N states, or the ``num_bands``
                    nearest ``around``).
    distances:      (n_k,) position along the path, 1/Angstrom (segments joined, jumps take none).
    fermi_energy:   info.json's ``fermi_energy_eV`` or None; ``around`` the target energy or None.
    seconds_per_k:  (n_k,) wall time of each k-point (Bloch sum + solve); ``setup_seconds`` reading
                    the files and preparing the Bloch sums.
    """

    sid: str
    path: BandPath
    eigenvalues: np.ndarray
    distances: np.ndarray
    solver: str
    size: int
    num_bands: int | None
    around: float | None
    fermi_energy: float | None
    lattice: np.ndarray
    seconds_per_k: np.ndarray
    setup_seconds: float
    matrix_file: str


def choose_solver(size: int, solver: str = "auto") -> str:
    """``dense`` or ``sparse`` for an N = ``size`` problem; ``solver`` forces one (module docstring)."""
    if solver not in SOLVERS:
        raise ConfigError("--solver", f"= {solver!r}; allowed: {', '.join(SOLVERS)}")
    if solver != "auto":
        return solver
    return "dense" if size <= DENSE_MAX_ORBITALS else "sparse"


def nearest(values: np.ndarray, num_bands: int | None, around: float | None) -> np.ndarray:
    """The ``num_bands`` entries of ascending ``values`` nearest ``around``, ascending (all if None)."""
    if num_bands is None or num_bands >= len(values):
        return values
    keep = np.sort(np.argsort(np.abs(values - around), kind="stable")[:num_bands])
    return values[keep]


def dense_bands(h_k: np.ndarray, s_k: np.ndarray | None, num_bands: int | None, around: float | None):
    """(num_bands or N,) ascending eigenvalues (eV) of dense (N, N) H(k), S(k) (S None: identity)."""
    return nearest(generalized_eigenvalues(h_k, s_k), num_bands, around)


def _factorise(shifted, *, pivoting: bool):
    """A solve x = shifted^-1 b from SuperLU in its minimum-degree order of A + A^T.

    pivoting False: the diagonal is the pivot (symmetric mode), so the factor keeps the fill of the
    order; True: SuperLU's partial pivoting, whose row exchanges undo the order (on a 3-D crystal
    the fill is then near dense). RuntimeError when exactly singular."""
    import scipy.sparse.linalg as sla

    if pivoting:
        return sla.splu(shifted, permc_spec="MMD_AT_PLUS_A").solve
    options = {"SymmetricMode": True}
    return sla.splu(shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=options).solve


def residuals(h, s, values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(k,) |H x - E S x| / |x| in eV of each eigenpair: H, S (N, N) (S None: identity), values
    (k,) eV, vectors (N, k)."""
    s_x = vectors if s is None else s @ vectors
    return np.linalg.norm(h @ vectors - s_x * values[None, :], axis=0) / np.linalg.norm(vectors, axis=0)


def sparse_bands(h_k, s_k, num_bands: int, around: float, *, pivoting: bool = False) -> np.ndarray:
    """(num_bands,) ascending eigenvalues (eV) nearest ``around`` of sparse H(k), S(k) (S None: I).

    Shift-invert: (H - around S) is factorised once with SuperLU and ARPACK iterates on its inverse
    (the eigenvalues nearest ``around`` converge first). The factor pivots on the diagonal
    (:func:`_factorise`); when that fails (a zero pivot, ARPACK not converging) or an eigenpair's
    residual :func:`residuals` exceeds :data:`RESIDUAL_TOLERANCE_EV` (a small pivot), the k-point
    is solved again with partial pivoting. Needs num_bands < N - 1.
    """
    import scipy.sparse
    import scipy.sparse.linalg as sla

    size = h_k.shape[0]
    if not 0 < num_bands < size - 1:
        raise ConfigError(
            "--num-bands",
            f"= {num_bands}: the sparse solver finds between 1 and N - 2 = {size - 2} states of this "
            f"{size}-orbital structure; use --solver dense for all of them",
        )
    h = (0.5 * (h_k + h_k.conj().T)).tocsc()
    s = None if s_k is None else (0.5 * (s_k + s_k.conj().T)).tocsc()
    if not h.imag.count_nonzero() and (s is None or not s.imag.count_nonzero()):
        h = h.real.tocsc()
        s = None if s is None else s.real.tocsc()

    def again(reason: str) -> np.ndarray:
        LOG.warning("H(k) - %g S(k) without pivoting: %s; solving again with pivoting", around, reason)
        return sparse_bands(h_k, s_k, num_bands, around, pivoting=True)

    for sigma in (around, around + 1e-6):  # an exactly singular shift: move it by a micro-eV
        shifted = (h - sigma * (scipy.sparse.identity(size, format="csc") if s is None else s)).tocsc()
        try:
            solve = _factorise(shifted, pivoting=pivoting)
            break
        except RuntimeError as error:
            if sigma != around:
                if not pivoting:
                    return again(str(error))
                raise DataError(f"H(k) - {sigma} S(k) cannot be factorised: {error}", key="around") from None
    op_inverse = sla.LinearOperator(shifted.shape, matvec=solve, dtype=shifted.dtype)
    try:
        values, vectors = sla.eigsh(h, k=num_bands, M=s, sigma=sigma, which="LM", OPinv=op_inverse)
    except sla.ArpackNoConvergence as error:
        if not pivoting:
            return again("ARPACK did not converge")
        raise DataError(
            f"ARPACK did not converge for {num_bands} states near {around} eV ({error})", key="around"
        ) from None
    values = np.real(values)
    worst = float(residuals(h, s, values, vectors).max(initial=0.0))
    if not pivoting and not worst <= RESIDUAL_TOLERANCE_EV:
        return again(f"eigenpair residual {worst:.2e} eV")
    return np.sort(values)


def _check_folder(folder: Path, structure_dir: Path, matrix_file: str) -> None:
    """One-line errors for a missing input, before anything is read."""
    if not folder.is_dir():
        raise DataError("not a folder", file=folder)
    if not (folder / matrix_file).is_file():
        raise DataError(
            f"no {matrix_file} here (the Hamiltonian `hamflow infer` writes; give another file with "
            "--matrix, e.g. --matrix hamiltonian.h5)",
            file=folder,
        )
    for name in (POSCAR_FILE, INFO_FILE):
        if not (structure_dir / name).is_file():
            raise DataError(
                f"no {name} (give the folder holding it with --structure-dir)", file=structure_dir
            )


def load_band_inputs(
    folder: str | Path, *, structure_dir: str | Path | None = None, matrix_file: str = MATRIX_FILES["H_pred"]
) -> Structure:
    """POSCAR, info.json, overlap.h5 (key "S") of ``structure_dir`` (default ``folder``) and the
    Hamiltonian ``folder/matrix_file`` (key "H"). DataError naming the missing file."""
    folder = Path(folder)
    source = folder if structure_dir is None else Path(structure_dir)
    _check_folder(folder, source, matrix_file)
    structure = load_structure(source, quantities=("S",), required=())
    if "S" not in structure.matrices and not structure.info.orthogonal_basis:
        raise DataError(
            f"no {MATRIX_FILES['S']}: the bands of a non-orthogonal basis need the overlap S(k) "
            "(give the folder holding it with --structure-dir)",
            file=source / MATRIX_FILES["S"],
            structure=structure.sid,
        )
    from hamflow.data.matrix_h5 import read_matrix_h5

    structure.matrices["H"] = read_matrix_h5(folder / matrix_file, structure=structure.sid)
    return structure


def compute_band_structure(
    folder: str | Path,
    *,
    structure_dir: str | Path | None = None,
    matrix_file: str = MATRIX_FILES["H_pred"],
    k_path: str | None = None,
    num_bands: int | None = None,
    around: float | None = None,
    solver: str = "auto",
    num_k: int = DEFAULT_AUTO_POINTS,
) -> BandStructure:
    """Bands of one folder (module docstring).

    k_path:     None (the folder's K_PATH, else ASE), "auto" (ASE) or a K_PATH file.
    num_bands:  states per k nearest ``around``; None: all (dense) or :data:`DEFAULT_SPARSE_BANDS`.
    around:     target energy in eV; None: info.json's ``fermi_energy_eV`` (needed with num_bands).
    num_k:      about how many k-points an ASE path gets.
    """
    start = time.perf_counter()
    if num_bands is not None and num_bands < 1:
        raise ConfigError("--num-bands", f"= {num_bands} must be >= 1")
    structure = load_band_inputs(folder, structure_dir=structure_dir, matrix_file=matrix_file)
    h_bloch, s_bloch = bloch_matrices(structure, h_key="H")
    chosen = choose_solver(h_bloch.size, solver)
    if chosen == "sparse" and num_bands is None:
        num_bands = min(DEFAULT_SPARSE_BANDS, h_bloch.size - 2)
    fermi = structure.info.fermi_energy_eV
    target = fermi if around is None else float(around)
    if num_bands is not None and num_bands < h_bloch.size and target is None:
        raise ConfigError(
            "--around",
            f"is needed: {structure.path / INFO_FILE} has no fermi_energy_eV to take the "
            f"{num_bands} bands around",
        )
    periodic = periodic_directions(
        structure.matrices["S"] if s_bloch is not None else structure.matrices["H"]
    )
    lattice = np.asarray(structure.poscar.lattice, dtype=np.float64)
    path = choose_band_path(structure.path, lattice, periodic, k_path, num_points=num_k)
    LOG.info(
        "%s: N = %d, %s solver, %d k-point(s) (%s)", structure.sid, h_bloch.size, chosen, len(path.k_frac),
        path.source,
    )  # fmt: skip
    setup = time.perf_counter() - start
    rows, seconds = [], np.zeros(len(path.k_frac))
    for n, k in enumerate(path.k_frac):
        tick = time.perf_counter()
        if chosen == "dense":
            s_k = None if s_bloch is None else s_bloch.dense(k)
            rows.append(dense_bands(h_bloch.dense(k), s_k, num_bands, target))
        else:
            s_k = None if s_bloch is None else s_bloch.sparse(k)
            rows.append(sparse_bands(h_bloch.sparse(k), s_k, num_bands, target))
        seconds[n] = time.perf_counter() - tick
    distances = path_distance(path.k_frac, lattice, path_segments(len(path.k_frac), _label_index(path)))
    return BandStructure(
        sid=structure.sid,
        path=path,
        eigenvalues=np.stack(rows),
        distances=distances,
        solver=chosen,
        size=h_bloch.size,
        num_bands=num_bands,
        around=target if num_bands is not None else None,
        fermi_energy=fermi,
        lattice=lattice,
        seconds_per_k=seconds,
        setup_seconds=setup,
        matrix_file=matrix_file,
    )


def _label_index(path: BandPath) -> np.ndarray:
    return np.array([i for i, _ in path.labels], dtype=np.int64)


def save_band_structure(path: str | Path, bands: BandStructure) -> Path:
    """Write ``bands`` to an ``.npz`` atomically: sid, solver, kind, source, k_frac (n_k, 3),
    distances (n_k,), label_index, label_names, eigenvalues (n_k, n_bands) eV, fermi_energy and
    around (eV, NaN when none), num_orbitals, lattice (3, 3), seconds_per_k, matrix_file."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            sid=np.array(bands.sid),
            solver=np.array(bands.solver),
            kind=np.array(bands.path.kind),
            source=np.array(bands.path.source),
            k_frac=bands.path.k_frac,
            distances=bands.distances,
            label_index=_label_index(bands.path),
            label_names=np.array([name for _, name in bands.path.labels], dtype=str),
            eigenvalues=bands.eigenvalues,
            fermi_energy=np.array(np.nan if bands.fermi_energy is None else bands.fermi_energy),
            around=np.array(np.nan if bands.around is None else bands.around),
            num_orbitals=np.array(bands.size),
            lattice=bands.lattice,
            seconds_per_k=bands.seconds_per_k,
            matrix_file=np.array(bands.matrix_file),
        )
    return path


def band_structure_command(
    folder: str | Path, *, out_dir: str | Path | None = None, plot: bool = True, **options
) -> tuple[BandStructure, list[Path]]:
    """``hamflow bands``: compute, write OUT/bands.npz and OUT/bands.png (OUT defaults to ``folder``)."""
    from hamflow.infer.plots import plot_band_structure

    bands = compute_band_structure(folder, **options)
    out = Path(folder) if out_dir is None else Path(out_dir)
    written = [save_band_structure(out / BANDS_FILE, bands)]
    if plot:
        written.append(plot_band_structure(written[0], out / PLOT_FILE))
    return bands, written
