"""Generate the bundled demo dataset (data/demo/) from real DFT with PySCF.

Two datasets, written in the DeepH format with hamflow's own writers:

- ``molecules/dft/<kind>/<sid>/`` (data_dir_depth = 1): H2O, NH3, CH4 and ethanol, each a randomly
  rotated equilibrium geometry with ~0.05 Angstrom Gaussian displacements, PBE/def2-SVP (all-electron,
  molecular code), centred in a 20 Angstrom box that only the POSCAR carries. The files hold R = (0,0,0)
  and every atom pair (i, j), on-site pairs included.
- ``silicon/dft/<sid>/`` (data_dir_depth = 0): perturbed 2-atom Si cells (small strain, ~0.05 Angstrom
  displacements), KRKS-PBE with GTH pseudopotentials and the gth-szv-molopt-sr basis. H(k) of the
  converged potential on a Gamma-centred grid is Fourier-transformed to H(R); S(R) comes from
  real-space overlap integrals; pairs are kept out to ``pair_cutoff`` Angstrom.

Each structure holds ``hamiltonian.h5`` (eV), ``overlap.h5`` and ``density_matrix.h5`` (the AO
density matrix, electrons). The Hamiltonian is the Fock matrix PySCF diagonalised last, so the
generalized eigenvalues of the stored (H, S) are PySCF's orbital energies. Every structure is read
back with hamflow's reader and verified before its folder is published (atomically):
eigenvalues vs PySCF (molecules: mo_energy; Si: PySCF's own bands at off-grid k), Tr(P S) = number
of electrons, H(R)_ij = H(-R)_ji^T. The recorded reference energies go to
``<dataset>/reference_energies.json`` for the tests.

Orbital order: PySCF lists an atom's shells in basis order with p as (px, py, pz); the DeepH file
lists shells sorted by l (``elements_orbital_map``) and p as (py, pz, px); d and higher agree.

Run (sequential, one thread; a few minutes)::

    OMP_NUM_THREADS=1 python scripts/make_demo_dataset.py [--only molecules|silicon] [--out data/demo]
    python scripts/make_demo_dataset.py --quick --out /tmp/demo   # one H2O/sto-3g + one tiny Si cell
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import itertools
import json
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hamflow.atomic import atomic_dir, atomic_write_text
from hamflow.data.info import StructureInfo, write_info
from hamflow.data.kspace import band_eigenvalues, dense_at_k, generalized_eigenvalues
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, write_matrix_h5
from hamflow.data.poscar import Poscar, write_poscar
from hamflow.data.structure import Structure, load_structure
from hamflow.errors import DataError, HamflowError

HARTREE_TO_EV = 27.2113845
SEED = 20240611
DEEPH_P_ORDER = (1, 2, 0)  # PySCF (px, py, pz) -> DeepH (py, pz, px)
REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_FILE = "reference_energies.json"

# Equilibrium geometries, Angstrom, atoms grouped by element (POSCAR order).
EQUILIBRIUM_MOLECULES: dict[str, list[tuple[str, tuple[float, float, float]]]] = {
    "h2o": [
        ("O", (0.0, 0.0, 0.1173)),
        ("H", (0.0, 0.7572, -0.4692)),
        ("H", (0.0, -0.7572, -0.4692)),
    ],
    "nh3": [
        ("N", (0.0, 0.0, 0.1162)),
        ("H", (0.0, 0.9377, -0.2711)),
        ("H", (0.8121, -0.4689, -0.2711)),
        ("H", (-0.8121, -0.4689, -0.2711)),
    ],
    "ch4": [
        ("C", (0.0, 0.0, 0.0)),
        ("H", (0.6276, 0.6276, 0.6276)),
        ("H", (0.6276, -0.6276, -0.6276)),
        ("H", (-0.6276, 0.6276, -0.6276)),
        ("H", (-0.6276, -0.6276, 0.6276)),
    ],
    "ethanol": [
        ("C", (1.1879, -0.3829, 0.0)),
        ("C", (0.0, 0.5526, 0.0)),
        ("O", (-1.1867, -0.2472, 0.0)),
        ("H", (-1.9237, 0.3850, 0.0)),
        ("H", (0.0227, 1.1990, 0.8854)),
        ("H", (0.0227, 1.1990, -0.8854)),
        ("H", (1.1431, -1.0259, 0.8784)),
        ("H", (1.1431, -1.0259, -0.8784)),
        ("H", (2.1181, 0.1899, 0.0)),
    ],
    # Two more kinds for the mixed benchmark (benchmarks/make_mixed_molecules.py), not in the demo data.
    "h2co": [
        ("C", (0.0, 0.0, -0.5287)),
        ("O", (0.0, 0.0, 0.6763)),
        ("H", (0.0, 0.9429, -1.1167)),
        ("H", (0.0, -0.9429, -1.1167)),
    ],
    "ch3oh": [
        ("C", (-0.0465, 0.6630, 0.0)),
        ("O", (-0.0465, -0.7572, 0.0)),
        ("H", (-1.0863, 0.9763, 0.0)),
        ("H", (0.4377, 1.0700, 0.8882)),
        ("H", (0.4377, 1.0700, -0.8882)),
        ("H", (0.8619, -1.0551, 0.0)),
    ],
}

SILICON_LATTICE_CONSTANT = 5.431  # Angstrom, conventional cubic cell
# Primitive FCC vectors (rows) in units of the cubic lattice constant, and the two Si sites (fractional,
# shifted by 1/8 so that displaced atoms stay inside the cell).
SILICON_PRIMITIVE = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
SILICON_SITES_FRAC = np.array([[0.125, 0.125, 0.125], [0.375, 0.375, 0.375]])
# Band path of the FCC primitive cell (fractional reciprocal coordinates for the vectors above).
SILICON_K_PATH: tuple[tuple[int, tuple[float, ...], tuple[float, ...], str, str], ...] = (
    (26, (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), "L", "GAMMA"),
    (30, (0.0, 0.0, 0.0), (0.5, 0.0, 0.5), "GAMMA", "X"),
    (11, (0.5, 0.0, 0.5), (0.625, 0.25, 0.625), "X", "U"),
    (32, (0.375, 0.375, 0.75), (0.0, 0.0, 0.0), "K", "GAMMA"),
)


@dataclass(frozen=True)
class MoleculeRecipe:
    """How the molecules are computed; energies in eV, lengths in Angstrom."""

    counts: dict[str, int] = field(default_factory=lambda: {"h2o": 10, "nh3": 8, "ch4": 8, "ethanol": 4})
    basis: str = "def2-svp"
    xc: str = "pbe"
    conv_tol_hartree: float = 1e-12
    box_angstrom: float = 20.0
    displacement_sigma_angstrom: float = 0.05
    energy_tolerance_eV: float = 1e-6
    electron_tolerance: float = 1e-8


@dataclass(frozen=True)
class SiliconRecipe:
    """How the Si cells are computed; energies in eV, lengths in Angstrom."""

    num_cells: int = 3
    basis: str = "gth-szv-molopt-sr"
    pseudo: str = "gth-pbe"
    xc: str = "pbe"
    conv_tol_hartree: float = 1e-10
    multigrid: bool = True  # PySCF's multigrid XC integration (else plain FFTDF)
    ke_cutoff_hartree: float | None = None  # None: PySCF's choice for the basis
    scf_mesh: tuple[int, int, int] = (3, 3, 3)
    transform_mesh: tuple[int, int, int] = (6, 6, 6)
    pair_cutoff_angstrom: float = 11.0
    displacement_sigma_angstrom: float = 0.05
    strain_sigma: float = 0.01
    # Gamma plus off-grid points (neither on the 3^3 nor on the 6^3 grid), fractional.
    check_k_points: tuple[tuple[float, float, float], ...] = (
        (0.0, 0.0, 0.0),
        (0.1, 0.2, 0.3),
        (0.37, 0.11, 0.29),
        (0.45, 0.05, 0.21),
        (0.27, 0.39, 0.43),
    )
    band_tolerance_eV: float = 5e-5
    electron_tolerance: float = 1e-4
    imaginary_tolerance: float = 1e-10  # largest Im M(R) left by the transform (eV for H, electrons)


QUICK_MOLECULES = MoleculeRecipe(counts={"h2o": 1}, basis="sto-3g")
QUICK_SILICON = SiliconRecipe(
    num_cells=1,
    conv_tol_hartree=1e-8,
    multigrid=False,
    ke_cutoff_hartree=15.0,
    scf_mesh=(2, 2, 2),
    transform_mesh=(4, 4, 4),
    pair_cutoff_angstrom=7.5,
    band_tolerance_eV=0.3,
    electron_tolerance=0.05,
    imaginary_tolerance=1e-3,
)


@dataclass
class DenseResult:
    """One converged calculation in the DeepH orbital order (PySCF AOs permuted).

    matrices:   {"H": eV, "S": 1, "Rho": electrons} -> {R (3-tuple): (n_orb, n_orb) float64}.
    reference:  what the stored files must reproduce (orbital or band energies in eV, ...).
    """

    elements: tuple[str, ...]
    lattice: np.ndarray  # (3, 3) rows, Angstrom
    positions: np.ndarray  # (n_atoms, 3) Cartesian, Angstrom
    orbital_map: dict[str, tuple[int, ...]]
    atom_orbitals: np.ndarray  # (n_atoms + 1,) offsets
    matrices: dict[str, dict[tuple[int, int, int], np.ndarray]]
    pairs: list[tuple[int, int, int, int, int]]
    num_electrons: int
    fermi_energy_eV: float
    reference: dict
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------
# Orbital order
# ------------------------------------------------------------------------------------------------


def deeph_orbital_order(mol) -> tuple[np.ndarray, dict[str, tuple[int, ...]], np.ndarray]:
    """Map PySCF's AO order to the DeepH one.

    Returns (perm, elements_orbital_map, offsets): ``perm[k]`` is the PySCF AO index of DeepH orbital
    k (shape (nao,)); the map lists each element's shell l in file order (shells sorted by l, stable);
    offsets (n_atoms + 1,) are each atom's first orbital. Works for ``gto.Mole`` and ``pbc.gto.Cell``.
    """
    if mol.cart:
        raise DataError("PySCF basis must be spherical (mol.cart = False)", key="cart")
    ao_loc = mol.ao_loc_nr()
    perm: list[int] = []
    orbital_map: dict[str, tuple[int, ...]] = {}
    offsets = [0]
    for atom in range(mol.natm):
        shells: list[tuple[int, int]] = []  # (l, first AO)
        for shell in range(mol.nbas):
            if mol.bas_atom(shell) != atom:
                continue
            l = int(mol.bas_angular(shell))
            for contraction in range(int(mol.bas_nctr(shell))):
                shells.append((l, int(ao_loc[shell]) + contraction * (2 * l + 1)))
        shells.sort(key=lambda item: item[0])
        for l, start in shells:
            indices = start + np.arange(2 * l + 1)
            perm.extend(indices[list(DEEPH_P_ORDER)] if l == 1 else indices)
        element = mol.atom_pure_symbol(atom)
        ls = tuple(l for l, _ in shells)
        if orbital_map.setdefault(element, ls) != ls:
            raise DataError(f"atoms of {element} carry different shells", key="basis")
        offsets.append(len(perm))
    order = np.asarray(perm, dtype=np.int64)
    if sorted(order.tolist()) != list(range(mol.nao_nr())):
        raise DataError("orbital permutation does not cover every AO once", key="basis")
    return order, orbital_map, np.asarray(offsets, dtype=np.int64)


def permute(matrix: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Rows and columns of a (nao, nao) matrix taken in the order ``perm``."""
    return np.ascontiguousarray(matrix[np.ix_(perm, perm)])


# ------------------------------------------------------------------------------------------------
# Molecules
# ------------------------------------------------------------------------------------------------


def structure_rng(kind: str, index: int) -> np.random.Generator:
    """A generator fixed by (SEED, kind, index): a structure never depends on how many are made."""
    return np.random.default_rng([SEED, zlib.crc32(kind.encode()), index])


def perturbed_molecule(kind: str, index: int, recipe: MoleculeRecipe) -> tuple[tuple[str, ...], np.ndarray]:
    """Elements and (n_atoms, 3) Cartesian positions (Angstrom): the equilibrium geometry randomly
    rotated, displaced by Gaussian noise and centred in the box."""
    rng = structure_rng(kind, index)
    elements = tuple(element for element, _ in EQUILIBRIUM_MOLECULES[kind])
    positions = np.array([xyz for _, xyz in EQUILIBRIUM_MOLECULES[kind]], dtype=np.float64)
    positions -= positions.mean(axis=0)
    positions = Rotation.random(random_state=rng).apply(positions)
    positions += rng.normal(0.0, recipe.displacement_sigma_angstrom, size=positions.shape)
    positions += 0.5 * recipe.box_angstrom - positions.mean(axis=0)
    return elements, positions


def converged_fock(mf, conv_tol_hartree: float, what: str) -> np.ndarray:
    """Run the PySCF SCF object ``mf`` to ``conv_tol_hartree``; the Fock matrix it diagonalised last
    (Hartree), or DataError (key scf) naming ``what`` when it did not converge."""
    mf.conv_tol = conv_tol_hartree
    captured: dict[str, np.ndarray] = {}
    mf.callback = lambda env: captured.__setitem__("fock", np.array(env["fock"]))
    mf.kernel()
    if not mf.converged:
        raise DataError(f"{what} did not converge", key="scf")
    return captured["fock"]


def run_molecule(elements: Sequence[str], positions: np.ndarray, recipe: MoleculeRecipe) -> DenseResult:
    """Converged RKS of one molecule; the Fock matrix stored is the one PySCF diagonalised last."""
    from pyscf import dft, gto

    start = time.perf_counter()
    mol = gto.M(
        atom=[(element, tuple(xyz)) for element, xyz in zip(elements, positions, strict=True)],
        basis=recipe.basis,
        unit="Angstrom",
        verbose=0,
    )
    mf = dft.RKS(mol, xc=recipe.xc)
    fock = converged_fock(mf, recipe.conv_tol_hartree, f"PySCF SCF ({recipe.xc}/{recipe.basis})")
    perm, orbital_map, offsets = deeph_orbital_order(mol)
    hamiltonian = permute(fock, perm) * HARTREE_TO_EV
    overlap = permute(mol.intor("int1e_ovlp"), perm)
    density = permute(mf.make_rdm1(), perm)
    mo_energy = np.asarray(mf.mo_energy) * HARTREE_TO_EV
    n_occupied = mol.nelectron // 2
    natm = mol.natm
    zero = (0, 0, 0)
    return DenseResult(
        elements=tuple(elements),
        lattice=np.eye(3) * recipe.box_angstrom,
        positions=np.asarray(positions, dtype=np.float64),
        orbital_map=orbital_map,
        atom_orbitals=offsets,
        matrices={"H": {zero: hamiltonian}, "S": {zero: overlap}, "Rho": {zero: density}},
        pairs=[(0, 0, 0, i, j) for i in range(natm) for j in range(natm)],
        num_electrons=int(mol.nelectron),
        fermi_energy_eV=float(0.5 * (mo_energy[n_occupied - 1] + mo_energy[n_occupied])),
        reference={"mo_energy_eV": mo_energy.tolist()},
        seconds=time.perf_counter() - start,
    )


# ------------------------------------------------------------------------------------------------
# Silicon
# ------------------------------------------------------------------------------------------------


def perturbed_silicon(index: int, recipe: SiliconRecipe) -> tuple[np.ndarray, np.ndarray]:
    """(lattice (3, 3) rows, positions (2, 3) Cartesian), Angstrom: a randomly strained primitive
    cell (symmetric strain, sigma ``strain_sigma``) with displaced atoms."""
    rng = structure_rng("silicon", index)
    strain = rng.normal(0.0, recipe.strain_sigma, size=(3, 3))
    strain = 0.5 * (strain + strain.T)
    lattice = SILICON_LATTICE_CONSTANT * SILICON_PRIMITIVE @ (np.eye(3) + strain)
    positions = SILICON_SITES_FRAC @ lattice
    positions += rng.normal(0.0, recipe.displacement_sigma_angstrom, size=positions.shape)
    return lattice, positions


def pairs_within(
    lattice: np.ndarray, positions: np.ndarray, cutoff: float, mesh: Sequence[int]
) -> list[tuple[int, int, int, int, int]]:
    """Every (R1, R2, R3, i, j) with |r_j + R.lattice - r_i| <= cutoff (Angstrom), sorted.

    DataError when two kept pairs alias on the Fourier mesh (same i, j and R modulo ``mesh``): the
    transformed H(R) would then be counted twice, so the cutoff must stay below half the supercell.
    """
    reciprocal_norms = np.linalg.norm(np.linalg.inv(lattice), axis=0)  # |b_k| / (2 pi)
    span = np.max(np.linalg.norm(positions[:, None] - positions[None], axis=-1))
    bounds = [int(np.ceil((cutoff + span) * norm)) for norm in reciprocal_norms]
    natm = len(positions)
    pairs = []
    seen: dict[tuple[int, ...], tuple[int, ...]] = {}
    ranges = [range(-b, b + 1) for b in bounds]
    for shift in itertools.product(*ranges):
        offset = np.asarray(shift, dtype=np.float64) @ lattice
        for i in range(natm):
            for j in range(natm):
                if np.linalg.norm(positions[j] + offset - positions[i]) > cutoff:
                    continue
                pair = (*shift, i, j)
                alias = (*(s % m for s, m in zip(shift, mesh, strict=True)), i, j)
                if alias in seen:
                    raise DataError(
                        f"pairs {seen[alias]} and {pair} alias on the {tuple(mesh)} mesh; "
                        f"lower pair_cutoff ({cutoff} A) or enlarge transform_mesh",
                        key="pair_cutoff",
                    )
                seen[alias] = pair
                pairs.append(pair)
    return sorted(pairs)


def fractional_k(cell, kpts_abs: np.ndarray) -> np.ndarray:
    """(n_k, 3) fractional coordinates of absolute k-points (Bohr^-1)."""
    return np.asarray(kpts_abs) @ cell.lattice_vectors().T / (2.0 * np.pi)


def fourier_to_cells(
    matrix_k: np.ndarray,
    k_frac: np.ndarray,
    cells: Sequence[tuple[int, int, int]],
    imaginary_tolerance: float,
) -> dict[tuple[int, int, int], np.ndarray]:
    """M(R) = (1/N_k) sum_k exp(-2 pi i k.R) M(k) for each R in ``cells``; real (n, n) float64.

    matrix_k: (n_k, n, n) on a grid closed under k -> -k; k_frac: (n_k, 3) fractional.
    DataError when an imaginary part above ``imaginary_tolerance`` (M's units) remains.
    """
    cells_array = np.asarray(cells, dtype=np.float64)
    phases = np.exp(-2j * np.pi * cells_array @ np.asarray(k_frac).T) / len(k_frac)  # (n_R, n_k)
    values = np.tensordot(phases, matrix_k, axes=1)  # (n_R, n, n)
    imaginary = float(np.abs(values.imag).max())
    if imaginary > imaginary_tolerance:
        raise DataError(f"Fourier transform left an imaginary part of {imaginary:.2e}", key="transform_mesh")
    return {tuple(int(v) for v in cell): values[n].real.copy() for n, cell in enumerate(cells)}


def real_space_overlap(cell, cells: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int, int], np.ndarray]:
    """S(R)_{ij} = <phi_i(cell 0)|phi_j(cell R)> from molecular overlap integrals (PySCF AO order)."""
    from pyscf import gto

    home = cell.to_mol()
    lattice_bohr = cell.lattice_vectors()
    out = {}
    for shift in cells:
        shifted = home.copy()
        shifted.set_geom_(
            home.atom_coords() + np.asarray(shift, dtype=np.float64) @ lattice_bohr, unit="Bohr"
        )
        out[tuple(shift)] = gto.intor_cross("int1e_ovlp", home, shifted)
    return out


def run_silicon(lattice: np.ndarray, positions: np.ndarray, recipe: SiliconRecipe) -> DenseResult:
    """KRKS of one Si cell and its real-space H(R), S(R), P(R) on the pairs within the cutoff.

    P(k) on the transform grid is the occupied projector of (H(k), S(k)) there (2 electrons per band,
    insulator), transformed like H.
    """
    import scipy.linalg
    from pyscf.pbc import dft as pbc_dft
    from pyscf.pbc import gto as pbc_gto

    start = time.perf_counter()
    cell = pbc_gto.Cell()
    cell.a = lattice
    cell.atom = [("Si", tuple(xyz)) for xyz in positions]
    cell.basis = recipe.basis
    cell.pseudo = recipe.pseudo
    cell.unit = "Angstrom"
    cell.verbose = 0
    if recipe.ke_cutoff_hartree is not None:
        cell.ke_cutoff = recipe.ke_cutoff_hartree
    cell.build()

    scf_kpts = cell.make_kpts(recipe.scf_mesh)
    kmf = pbc_dft.KRKS(cell, scf_kpts, xc=recipe.xc)
    if recipe.multigrid:
        kmf = kmf.multigrid_numint()
    kmf.conv_tol = recipe.conv_tol_hartree
    kmf.kernel()
    if not kmf.converged:
        raise DataError(f"PySCF KRKS did not converge ({recipe.xc}/{recipe.basis})", key="scf")
    dm_scf = kmf.make_rdm1()

    grid_kpts = cell.make_kpts(recipe.transform_mesh)
    h_k = np.asarray(kmf.get_hcore(cell, grid_kpts)) + np.asarray(
        kmf.get_veff(cell, dm_scf, kpts=scf_kpts, kpts_band=grid_kpts)
    )
    s_k = np.asarray(kmf.get_ovlp(cell, grid_kpts))
    n_occupied = cell.nelectron // 2
    rho_k = np.empty_like(h_k)
    occupied_max, empty_min = -np.inf, np.inf
    for n in range(len(grid_kpts)):
        energies, coefficients = scipy.linalg.eigh(h_k[n], s_k[n])
        occupied = coefficients[:, :n_occupied]
        rho_k[n] = 2.0 * occupied @ occupied.conj().T
        occupied_max = max(occupied_max, energies[n_occupied - 1])
        empty_min = min(empty_min, energies[n_occupied])
    if empty_min <= occupied_max:
        raise DataError("no band gap on the transform grid; the density recipe needs an insulator", key="Rho")

    # The POSCAR and the pair distances use the input geometry (Angstrom) exactly as PySCF received it.
    pairs = pairs_within(lattice, positions, recipe.pair_cutoff_angstrom, recipe.transform_mesh)
    cells = sorted({pair[:3] for pair in pairs})
    k_frac = fractional_k(cell, grid_kpts)
    perm, orbital_map, offsets = deeph_orbital_order(cell)
    transformed = {
        "H": fourier_to_cells(h_k * HARTREE_TO_EV, k_frac, cells, recipe.imaginary_tolerance),
        "S": real_space_overlap(cell, cells),
        "Rho": fourier_to_cells(rho_k, k_frac, cells, recipe.imaginary_tolerance),
    }
    matrices = {
        name: {shift: permute(value, perm) for shift, value in per_cell.items()}
        for name, per_cell in transformed.items()
    }

    check_k = np.asarray(recipe.check_k_points, dtype=np.float64)
    bands, _ = kmf.get_bands(cell.get_abs_kpts(check_k))
    bands_eV = np.asarray(bands) * HARTREE_TO_EV
    return DenseResult(
        elements=("Si",) * cell.natm,
        lattice=np.asarray(lattice, dtype=np.float64),
        positions=np.asarray(positions, dtype=np.float64),
        orbital_map=orbital_map,
        atom_orbitals=offsets,
        matrices=matrices,
        pairs=pairs,
        num_electrons=int(cell.nelectron),
        fermi_energy_eV=float(0.5 * (occupied_max + empty_min) * HARTREE_TO_EV),
        reference={"k_points_frac": check_k.tolist(), "bands_eV": bands_eV.tolist()},
        seconds=time.perf_counter() - start,
    )


def k_path_text() -> str:
    """The K_PATH file of the Si cells (DeepH-dock's format: npts, start, end, labels)."""
    lines = []
    for npts, begin, end, label_begin, label_end in SILICON_K_PATH:
        coords = "   ".join(f"{value:.10f}" for value in (*begin, *end))
        lines.append(f"{npts:<4d} {coords}     {label_begin:<20s}{label_end:<15s}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Writing and verification
# ------------------------------------------------------------------------------------------------


def is_spinful(result: DenseResult) -> bool:
    """True when H is (2n, 2n): two-component, all spin-up orbitals first, then all spin-down."""
    return next(iter(result.matrices["H"].values())).shape[0] == 2 * int(result.atom_orbitals[-1])


def block_matrix(result: DenseResult, name: str) -> BlockMatrix:
    """The (R, i, j) blocks of one quantity over ``result.pairs``.

    A (2n, 2n) spinful matrix (all up, then all down) gives (2 ni, 2 nj) blocks [[uu, ud], [du, dd]].
    """
    offsets = result.atom_orbitals
    n_orb = int(offsets[-1])
    blocks = []
    for r1, r2, r3, i, j in result.pairs:
        dense = result.matrices[name][(r1, r2, r3)]
        rows, cols = np.arange(offsets[i], offsets[i + 1]), np.arange(offsets[j], offsets[j + 1])
        if dense.shape[0] == 2 * n_orb:
            rows, cols = np.concatenate([rows, rows + n_orb]), np.concatenate([cols, cols + n_orb])
        blocks.append(dense[np.ix_(rows, cols)])
    return BlockMatrix.from_blocks([list(pair) for pair in result.pairs], blocks)


def write_structure(folder: Path, result: DenseResult, comment: str) -> None:
    """POSCAR, info.json and the three matrix files of one structure into ``folder``."""
    write_poscar(
        folder / "POSCAR",
        Poscar(comment=comment, lattice=result.lattice, elements=result.elements, positions=result.positions),
    )
    write_info(
        folder / "info.json",
        StructureInfo(
            atoms_quantity=len(result.elements),
            orbits_quantity=int(result.atom_orbitals[-1]),
            orthogonal_basis=False,
            spinful=is_spinful(result),
            fermi_energy_eV=result.fermi_energy_eV,
            elements_orbital_map=result.orbital_map,
            occupation=result.num_electrons,
        ),
    )
    for name in ("H", "S", "Rho"):
        write_matrix_h5(folder / MATRIX_FILES[name], block_matrix(result, name))


def trace_density_overlap(structure: Structure) -> float:
    """sum_R Tr(P(R) S(R)^T) over the stored pairs: electrons per cell (S(R)_ij = S(-R)_ji)."""
    overlap = structure.matrices["S"]
    density = structure.matrices["Rho"]
    index = overlap.pair_index()
    total = 0.0
    for n, pair in enumerate(density.atom_pairs):
        total += float(np.sum(density.block(n) * overlap.block(index[tuple(int(v) for v in pair)])))
    return total


def hermiticity_error(matrix: BlockMatrix) -> float:
    """max |M(R)_ij - M(-R)_ji^T| over the stored pairs; DataError when a partner pair is missing."""
    index = matrix.pair_index()
    worst = 0.0
    for n, (r1, r2, r3, i, j) in enumerate(matrix.atom_pairs.tolist()):
        partner = index.get((-r1, -r2, -r3, j, i))
        if partner is None:
            raise DataError(f"pair {[r1, r2, r3, i, j]} has no partner (-R, j, i)", key="atom_pairs")
        worst = max(worst, float(np.abs(matrix.block(n) - matrix.block(partner).T).max()))
    return worst


def verify_structure(
    folder: Path, sid: str, result: DenseResult, energy_tolerance_eV: float, electron_tolerance: float
) -> dict[str, float]:
    """Read the written files back with hamflow and check them against PySCF; DataError on failure.

    Molecules: Gamma-point generalized eigenvalues vs mo_energy. Si: eigenvalues at the check
    k-points vs PySCF's own bands. Both: Tr(P S) = electrons, H(R)_ij = H(-R)_ji^T.
    Returns the figures: max |dE| (eV), |Tr(P S) - N|, hermiticity (eV).
    """
    structure = load_structure(folder, sid=sid, quantities=("H", "S", "Rho"))
    if "mo_energy_eV" in result.reference:
        offsets = structure.orbital_offsets
        gamma = np.zeros(3)
        h_gamma = dense_at_k(structure.matrices["H"], offsets, gamma)
        s_gamma = dense_at_k(structure.matrices["S"], offsets, gamma)
        error = np.abs(generalized_eigenvalues(h_gamma, s_gamma) - result.reference["mo_energy_eV"]).max()
    else:
        k_points = np.asarray(result.reference["k_points_frac"])
        error = np.abs(band_eigenvalues(structure, k_points) - np.asarray(result.reference["bands_eV"])).max()
    electrons = abs(trace_density_overlap(structure) - result.num_electrons)
    hermiticity = hermiticity_error(structure.matrices["H"])
    figures = {
        "max_energy_error_eV": float(error),
        "electron_error": electrons,
        "hermiticity_eV": hermiticity,
    }
    if not error <= energy_tolerance_eV:
        raise DataError(
            f"eigenvalues of the stored (H, S) differ from PySCF's by {error:.3e} eV "
            f"(allowed {energy_tolerance_eV:.1e} eV)",
            file=folder,
            structure=sid,
            key="hamiltonian.h5",
        )
    if not electrons <= electron_tolerance:
        raise DataError(
            f"Tr(P S) misses the {result.num_electrons} electrons by {electrons:.3e}",
            file=folder,
            structure=sid,
            key="density_matrix.h5",
        )
    if not hermiticity <= 1e-9:
        raise DataError(f"H is not Hermitian ({hermiticity:.3e} eV)", file=folder, structure=sid, key="H")
    return figures


def publish_structure(
    folder: Path,
    sid: str,
    result: DenseResult,
    comment: str,
    tolerances: tuple[float, float],
    extra_files: dict[str, str] | None = None,
) -> dict[str, float]:
    """Write and verify in a temporary folder, then move it onto ``folder`` (atomically)."""
    with atomic_dir(folder) as tmp:
        write_structure(tmp, result, comment)
        for name, text in (extra_files or {}).items():
            atomic_write_text(tmp / name, text)
        return verify_structure(tmp, sid, result, *tolerances)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary table."""

    name: str
    atoms: int
    orbitals: int
    pairs: int
    seconds: float
    figures: dict[str, float]


def make_molecules(out: Path, recipe: MoleculeRecipe) -> list[Row]:
    """Compute, write and verify every molecule; writes molecules/reference_energies.json."""
    rows: list[Row] = []
    references: dict[str, dict] = {}
    for kind, count in recipe.counts.items():
        for index in range(count):
            sid = f"{index:03d}"
            name = f"{kind}/{sid}"
            elements, positions = perturbed_molecule(kind, index, recipe)
            result = run_molecule(elements, positions, recipe)
            comment = f"hamflow demo {kind} {sid}: PySCF RKS {recipe.xc}/{recipe.basis}"
            folder = out / "molecules" / "dft" / kind / sid
            figures = publish_structure(
                folder, name, result, comment, (recipe.energy_tolerance_eV, recipe.electron_tolerance)
            )
            references[name] = {**result.reference, "num_electrons": result.num_electrons}
            rows.append(
                Row(
                    name,
                    len(elements),
                    int(result.atom_orbitals[-1]),
                    len(result.pairs),
                    result.seconds,
                    figures,
                )
            )
            print_row(rows[-1])
    write_references(out / "molecules" / REFERENCE_FILE, asdict(recipe), references)
    return rows


def make_silicon(out: Path, recipe: SiliconRecipe) -> list[Row]:
    """Compute, write and verify every Si cell (with its K_PATH); writes silicon/reference_energies.json."""
    rows: list[Row] = []
    references: dict[str, dict] = {}
    for index in range(recipe.num_cells):
        sid = f"{index:03d}"
        lattice, positions = perturbed_silicon(index, recipe)
        result = run_silicon(lattice, positions, recipe)
        comment = f"hamflow demo Si {sid}: PySCF KRKS {recipe.xc}/{recipe.basis}/{recipe.pseudo}"
        figures = publish_structure(
            out / "silicon" / "dft" / sid,
            sid,
            result,
            comment,
            (recipe.band_tolerance_eV, recipe.electron_tolerance),
            extra_files={"K_PATH": k_path_text()},
        )
        references[sid] = {**result.reference, "num_electrons": result.num_electrons}
        rows.append(
            Row(
                f"si/{sid}",
                len(result.elements),
                int(result.atom_orbitals[-1]),
                len(result.pairs),
                result.seconds,
                figures,
            )
        )
        print_row(rows[-1])
    write_references(out / "silicon" / REFERENCE_FILE, asdict(recipe), references)
    return rows


def write_references(path: Path, recipe: dict, structures: dict[str, dict]) -> None:
    """The energies each structure's files must reproduce, and the recipe that made them."""
    import pyscf

    document = {
        "units": {"energies": "eV", "k_points_frac": "reciprocal-lattice coordinates"},
        "pyscf_version": pyscf.__version__,
        "recipe": recipe,
        "structures": structures,
    }
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


HEADER = (
    f"{'structure':<14}{'atoms':>6}{'orbs':>6}{'pairs':>7}{'time s':>9}"
    f"{'max|dE| eV':>13}{'|TrPS-N|':>11}{'herm eV':>10}"
)


def print_row(row: Row) -> None:
    f = row.figures
    print(
        f"{row.name:<14}{row.atoms:>6}{row.orbitals:>6}{row.pairs:>7}{row.seconds:>9.1f}"
        f"{f['max_energy_error_eV']:>13.2e}{f['electron_error']:>11.1e}{f['hermiticity_eV']:>10.1e}",
        flush=True,
    )


def written_size(out: Path) -> int:
    """Bytes of what this script writes below ``out`` (<dataset>/dft/** and the reference files);
    other stages' outputs there (e.g. graph stores) are not counted."""
    files = [*out.glob("*/dft/**/*"), *out.glob(f"*/{REFERENCE_FILE}")]
    return sum(file.stat().st_size for file in files if file.is_file())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("molecules", "silicon"), help="make one of the two datasets")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "demo", help="output folder")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (one H2O in sto-3g, one Si cell on small grids)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import pyscf  # noqa: F401
    except ImportError:
        print("make_demo_dataset.py needs PySCF: pip install 'pyscf>=2.14,<3'", file=sys.stderr)
        return 1
    molecules, silicon = (
        (QUICK_MOLECULES, QUICK_SILICON) if args.quick else (MoleculeRecipe(), SiliconRecipe())
    )
    start = time.perf_counter()
    print(HEADER, flush=True)
    rows: list[Row] = []
    try:
        if args.only in (None, "molecules"):
            rows += make_molecules(args.out, molecules)
        if args.only in (None, "silicon"):
            rows += make_silicon(args.out, silicon)
    except HamflowError as error:
        print(f"make_demo_dataset: error: {error}", file=sys.stderr)
        return 1
    worst = max(row.figures["max_energy_error_eV"] for row in rows)
    print(
        f"{len(rows)} structures in {time.perf_counter() - start:.0f} s; "
        f"worst eigenvalue error {worst:.2e} eV; "
        f"{args.out} holds {written_size(args.out) / 1e6:.2f} MB of data"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
