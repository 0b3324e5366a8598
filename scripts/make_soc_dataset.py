"""Generate spin-orbit-coupled DFT Hamiltonians (two-component X2C, PySCF) in DeepH's spinful layout.

Four bromine molecules: HBr, BrCl, Br2 and CH3Br, PBE / def2-SVP all electron (no ECP for Br), with
the spin-orbit coupling of the one-electron X2C Hamiltonian (X2C-1e: scalar and spin-dependent terms).
Each geometry is the kind's equilibrium geometry with the bond to Br stretched by a seeded random
factor (uniform in ``stretch_range``), Gaussian displacements (sigma ``displacement_sigma_angstrom``),
a uniformly random rotation, centred in a 20 Angstrom box that only the POSCAR carries. R = (0, 0, 0)
and every atom pair (i, j), on-site pairs included (the demo molecules' layout).

Two-component SCF, two equivalent routes (the same X2C-1e Hamiltonian, the same collinear PBE at zero
spin magnetisation; their Fock matrices agree to ~1e-9 eV, tests/data/test_soc_data.py):

- ``spin-orbital`` (default, 4-10x faster): ``dft.GKS(mol).x2c1e()``, PySCF's X2C in the GHF
  spin-orbital basis: rows and columns [all AOs spin up (alpha), all AOs spin down (beta)].
- ``spinor``: ``x2c.UKS(mol)``, X2C in the j-adapted spinor basis; the Fock matrix F_j and the density
  P_j are brought to the spin-orbital basis with U = vstack(mol.sph2spinor_coeff()) (2n, 2n), unitary,
  whose column k holds the (alpha, beta) AO coefficients of spinor k: F = U F_j U^H, P = U P_j U^H.

Then the DeepH orbital order of the spinless demo (scripts/make_demo_dataset.py: shells sorted by l,
p as (py, pz, px)) is applied to each spin half, so the stored (2n, 2n) matrix is [[uu, ud], [du, dd]]
with each quadrant in the spinless order, and each stored block (2 ni, 2 nj) = [[uu, ud], [du, dd]]
of its atom pair (hamflow.data.kspace's layout). Spin up = alpha = +1/2 along z.

Files per structure (complex128 H and Rho, real S, info.json ``spinful: true``): ``hamiltonian.h5``
(eV, the Fock matrix PySCF diagonalised last, so the generalized eigenvalues of the stored (H, S)
are PySCF's two-component orbital energies), ``overlap.h5`` (spinless: S is spin-diagonal,
kron(I2, S) in the two-component basis), ``density_matrix.h5`` (P = C_occ C_occ^H, electrons; Tr(P
kron(I2, S)) = N). ``DIR/reference_energies.json`` records per structure the two-component orbital
energies, the scalar-relativistic (spin-free X2C-1e, ``dft.RKS(mol).sfx2c1e()``) orbital energies of
the same geometry, and the total energies. Every structure is read back with hamflow's reader and
verified before its folder is published (atomically): hamflow validation (complex blocks, mirror
pairs conjugate-transposed), eigenvalues vs PySCF, Tr(P S) = N, time reversal (H_dd = conj(H_uu),
H_ud = -conj(H_du)) and Kramers-degenerate eigenvalue pairs (the molecules are closed shell).

Reproducible: structure (kind, k) depends only on (kind, k). Resumable: a structure whose folder and
reference entry exist is skipped. Parallel: ``--workers`` processes, one BLAS thread each::

    nice -n 19 python scripts/make_soc_dataset.py --out ~/.cache/hamflow/soc --workers 1
    python scripts/make_soc_dataset.py --out data/soc --count hbr=2 --count brcl=1   # the committed slice
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import make_demo_dataset as demo  # noqa: E402

from hamflow.atomic import atomic_dir  # noqa: E402
from hamflow.data.kspace import dense_at_k, generalized_eigenvalues  # noqa: E402
from hamflow.data.split import write_split  # noqa: E402
from hamflow.data.structure import Structure, load_structure  # noqa: E402
from hamflow.data.validate import validate_structure  # noqa: E402
from hamflow.errors import DataError, HamflowError  # noqa: E402

REFERENCE_FILE = demo.REFERENCE_FILE
ROUTES = ("spin-orbital", "spinor")

# Equilibrium geometries, Angstrom, atoms grouped by element (POSCAR order); experimental bond lengths.
# ``stretch``: (anchor, moving atoms): the moving atoms are shifted along the anchor -> first-moving
# bond so that this bond length is scaled by the structure's random stretch factor.
SOC_MOLECULES: dict[str, list[tuple[str, tuple[float, float, float]]]] = {
    "hbr": [("Br", (0.0, 0.0, 0.0)), ("H", (0.0, 0.0, 1.4145))],
    "brcl": [("Br", (0.0, 0.0, 0.0)), ("Cl", (0.0, 0.0, 2.1361))],
    "br2": [("Br", (0.0, 0.0, 0.0)), ("Br", (0.0, 0.0, 2.2811))],
    # C3v, C-Br 1.934, C-H 1.082, H-C-Br 107.7 degrees.
    "ch3br": [
        ("C", (0.0, 0.0, 0.0)),
        ("Br", (0.0, 0.0, 1.934)),
        ("H", (1.0306, 0.0, -0.3290)),
        ("H", (-0.5153, 0.8925, -0.3290)),
        ("H", (-0.5153, -0.8925, -0.3290)),
    ],
}
STRETCHED_BOND: dict[str, tuple[int, tuple[int, ...]]] = {
    "hbr": (0, (1,)),
    "brcl": (0, (1,)),
    "br2": (0, (1,)),
    "ch3br": (0, (1,)),
}
DEFAULT_COUNTS: dict[str, int] = {"hbr": 48, "brcl": 40, "br2": 40, "ch3br": 32}


@dataclass(frozen=True)
class SocRecipe:
    """How the SOC molecules are computed; energies in eV, lengths in Angstrom."""

    basis: str = "def2-svp"
    xc: str = "pbe"
    conv_tol_hartree: float = 1e-11
    box_angstrom: float = 20.0
    stretch_range: tuple[float, float] = (0.92, 1.12)
    displacement_sigma_angstrom: float = 0.03
    energy_tolerance_eV: float = 1e-6
    electron_tolerance: float = 1e-8
    time_reversal_tolerance_eV: float = 1e-6  # max |H_dd - conj(H_uu)|, |H_ud + conj(H_du)|
    kramers_tolerance_eV: float = 1e-6  # max |e_2k - e_2k+1|
    counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COUNTS))


def perturbed_soc_molecule(kind: str, index: int, recipe: SocRecipe) -> tuple[tuple[str, ...], np.ndarray]:
    """Elements and (n_atoms, 3) Cartesian positions (Angstrom): the equilibrium geometry with its Br
    bond stretched (uniform factor in ``stretch_range``), displaced by Gaussian noise, randomly
    rotated and centred in the box. Fixed by (seed, kind, index) through the demo's generator."""
    rng = demo.structure_rng(kind, index)
    elements = tuple(element for element, _ in SOC_MOLECULES[kind])
    positions = np.array([xyz for _, xyz in SOC_MOLECULES[kind]], dtype=np.float64)
    anchor, moving = STRETCHED_BOND[kind]
    bond = positions[moving[0]] - positions[anchor]
    factor = rng.uniform(*recipe.stretch_range)
    positions[list(moving)] += (factor - 1.0) * bond
    positions += rng.normal(0.0, recipe.displacement_sigma_angstrom, size=positions.shape)
    positions -= positions.mean(axis=0)
    positions = Rotation.random(random_state=rng).apply(positions)
    positions += 0.5 * recipe.box_angstrom - positions.mean(axis=0)
    return elements, positions


def spinor_to_spin_orbital(mol, matrix_spinor: np.ndarray) -> np.ndarray:
    """A (2n, 2n) matrix in PySCF's j-adapted spinor basis, in the spin-orbital basis [alpha AOs, beta AOs].

    U = vstack(sph2spinor_coeff()) holds each spinor's alpha and beta AO coefficients in a column;
    it is unitary (per shell, Clebsch-Gordan times the real-to-complex harmonic transform), so an
    operator M_j = U^H M U becomes M = U M_j U^H, and a density P_j = C_j C_j^H becomes U P_j U^H.
    """
    alpha, beta = mol.sph2spinor_coeff()
    unitary = np.vstack([alpha, beta])
    if unitary.shape != (2 * mol.nao_nr(), mol.nao_2c()) or unitary.shape[0] != unitary.shape[1]:
        raise DataError(f"spinor transform has shape {unitary.shape}; expected square (2n, 2n)", key="basis")
    return unitary @ matrix_spinor @ unitary.conj().T


def two_component_scf(mol, recipe: SocRecipe, route: str):
    """Converged two-component X2C-1e KS of ``mol``: (mf, Fock diagonalised last, density), both
    (2n, 2n) in the spin-orbital basis [alpha AOs, beta AOs], Hartree and electrons."""
    from pyscf import dft, x2c

    if route == "spin-orbital":
        mf = dft.GKS(mol, xc=recipe.xc).x2c1e()
    elif route == "spinor":
        mf = x2c.UKS(mol, xc=recipe.xc)
    else:
        raise DataError(f"unknown route {route!r} (allowed: {', '.join(ROUTES)})", key="route")
    fock = demo.converged_fock(
        mf, recipe.conv_tol_hartree, f"PySCF two-component X2C {recipe.xc}/{recipe.basis}"
    )
    density = np.asarray(mf.make_rdm1())
    if route == "spinor":
        fock, density = spinor_to_spin_orbital(mol, fock), spinor_to_spin_orbital(mol, density)
    return mf, fock, density


def scalar_scf(mol, recipe: SocRecipe):
    """Converged spin-free (scalar) X2C-1e RKS of the same molecule, for the no-SOC comparison."""
    from pyscf import dft

    mf = dft.RKS(mol, xc=recipe.xc).sfx2c1e()
    mf.conv_tol = recipe.conv_tol_hartree
    mf.kernel()
    if not mf.converged:
        raise DataError(f"PySCF scalar X2C {recipe.xc}/{recipe.basis} did not converge", key="scf")
    return mf


def run_soc_molecule(
    elements: Sequence[str],
    positions: np.ndarray,
    recipe: SocRecipe,
    *,
    route: str = "spin-orbital",
    scalar: bool = True,
) -> demo.DenseResult:
    """Two-component X2C KS of one molecule in the DeepH spinful order (the demo's DenseResult with
    H (eV) and Rho (electrons) complex (2n, 2n), S real (n, n)); ``scalar`` also runs the spin-free
    X2C RKS and records its orbital energies as ``reference["scalar_mo_energy_eV"]``."""
    from pyscf import gto

    start = time.perf_counter()
    mol = gto.M(
        atom=[(element, tuple(xyz)) for element, xyz in zip(elements, positions, strict=True)],
        basis=recipe.basis,
        unit="Angstrom",
        verbose=0,
    )
    mf, fock, density = two_component_scf(mol, recipe, route)
    perm, orbital_map, offsets = demo.deeph_orbital_order(mol)
    n_orb = mol.nao_nr()
    spin_perm = np.concatenate([perm, perm + n_orb])  # [up block, down block], each in DeepH order
    mo_energy = np.asarray(mf.mo_energy) * demo.HARTREE_TO_EV
    n_occupied = mol.nelectron  # spin orbitals
    reference = {"mo_energy_eV": mo_energy.tolist(), "e_tot_hartree": float(mf.e_tot)}
    if scalar:
        sf = scalar_scf(mol, recipe)
        reference["scalar_mo_energy_eV"] = (np.asarray(sf.mo_energy) * demo.HARTREE_TO_EV).tolist()
        reference["scalar_e_tot_hartree"] = float(sf.e_tot)
    zero = (0, 0, 0)
    return demo.DenseResult(
        elements=tuple(elements),
        lattice=np.eye(3) * recipe.box_angstrom,
        positions=np.asarray(positions, dtype=np.float64),
        orbital_map=orbital_map,
        atom_orbitals=offsets,
        matrices={
            "H": {zero: demo.permute(fock, spin_perm) * demo.HARTREE_TO_EV},
            "S": {zero: demo.permute(mol.intor("int1e_ovlp"), perm)},
            "Rho": {zero: demo.permute(density, spin_perm)},
        },
        pairs=[(0, 0, 0, i, j) for i in range(mol.natm) for j in range(mol.natm)],
        num_electrons=int(mol.nelectron),
        fermi_energy_eV=float(0.5 * (mo_energy[n_occupied - 1] + mo_energy[n_occupied])),
        reference=reference,
        seconds=time.perf_counter() - start,
    )


# ------------------------------------------------------------------------------------------------
# Figures of a stored structure (read back with hamflow)
# ------------------------------------------------------------------------------------------------


def gamma_matrices(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(H (2n, 2n) eV, S = kron(I2, S) (2n, 2n), Rho (2n, 2n) or None) at Gamma, complex128."""
    if not structure.info.spinful:
        raise DataError("info.json has spinful = false", file=structure.path, structure=structure.sid)
    offsets, gamma = structure.orbital_offsets, np.zeros(3)
    h, s = (dense_at_k(structure.matrices[key], offsets, gamma, spinful=True) for key in ("H", "S"))
    rho = structure.matrices.get("Rho")
    return h, s, None if rho is None else dense_at_k(rho, offsets, gamma, spinful=True)


def time_reversal_error(h: np.ndarray) -> float:
    """max over |H_dd - conj(H_uu)| and |H_ud + conj(H_du)| (eV): zero for a time-reversal-invariant H
    (T = -i sigma_y K on real orbitals)."""
    n = h.shape[0] // 2
    uu, ud, du, dd = h[:n, :n], h[:n, n:], h[n:, :n], h[n:, n:]
    return float(max(np.abs(dd - uu.conj()).max(), np.abs(ud + du.conj()).max()))


def kramers_error(energies: np.ndarray) -> float:
    """max |e_2k - e_2k+1| (eV) of ascending two-component eigenvalues: Kramers pairs are degenerate."""
    return float(np.abs(energies[0::2] - energies[1::2]).max())


def spin_free_part(h: np.ndarray) -> np.ndarray:
    """(n, n) real symmetric Re(H_uu + H_dd) / 2: the spin-independent part of a time-reversal-invariant
    H = H0 x I2 + i sum_k H_k x sigma_k (H0 real symmetric, H_k real antisymmetric)."""
    n = h.shape[0] // 2
    return 0.5 * (h[:n, :n] + h[n:, n:]).real


def homo_splitting_eV(energies: np.ndarray, num_electrons: int) -> float:
    """E(HOMO pair) - E(next pair below) of ascending two-component energies (eV): the spin-orbit
    splitting of the Br lone-pair (pi-like) level, which without SOC is one fourfold level."""
    return float(energies[num_electrons - 1] - energies[num_electrons - 3])


def shell_splitting_eV(energies: np.ndarray, first: int, n_low: int, n_high: int) -> float:
    """mean(energies[first + n_low : first + n_low + n_high]) - mean(energies[first : first + n_low]):
    e.g. Br 3d (two-component indices 18-27 of HBr): 3d3/2 (4 states) below 3d5/2 (6 states)."""
    low = energies[first : first + n_low]
    high = energies[first + n_low : first + n_low + n_high]
    return float(high.mean() - low.mean())


def soc_figures(structure: Structure, reference: Mapping) -> dict[str, float]:
    """Read-back figures of one stored structure against its reference (energies eV)."""
    h, s, rho = gamma_matrices(structure)
    energies = generalized_eigenvalues(h, s)
    num_electrons = int(reference["num_electrons"])
    n = h.shape[0] // 2
    figures = {
        "max_energy_error_eV": float(np.abs(energies - np.asarray(reference["mo_energy_eV"])).max()),
        "hermiticity_eV": float(np.abs(h - h.conj().T).max()),
        "time_reversal_eV": time_reversal_error(h),
        "kramers_eV": kramers_error(energies),
        "homo_splitting_eV": homo_splitting_eV(energies, num_electrons),
        "spin_orbit_norm_eV": float(np.abs(h[:n, n:]).max()),
    }
    if rho is not None:
        figures["electron_error"] = float(abs(np.trace(rho @ s).real - num_electrons))
    if "scalar_mo_energy_eV" in reference:
        scalar = np.asarray(reference["scalar_mo_energy_eV"])
        half = num_electrons // 2
        figures["scalar_homo_splitting_eV"] = float(scalar[half - 1] - scalar[half - 2])
    return figures


def verify_soc_structure(folder: Path, sid: str, reference: Mapping, recipe: SocRecipe) -> dict[str, float]:
    """Validate and read one written folder with hamflow; DataError naming the check on failure."""
    problems = validate_structure(folder, sid, quantities=("H", "S", "Rho"))
    if problems:
        problem = problems[0]
        raise DataError(
            f"validation: {problem.reason}", file=folder / problem.file, structure=sid, key=problem.key
        )
    structure = load_structure(folder, sid=sid, quantities=("H", "S", "Rho"))
    figures = soc_figures(structure, reference)
    limits = {
        "max_energy_error_eV": (
            recipe.energy_tolerance_eV,
            "hamiltonian.h5",
            "eigenvalues differ from PySCF's",
        ),
        "electron_error": (recipe.electron_tolerance, "density_matrix.h5", "Tr(P S) misses the electrons"),
        "hermiticity_eV": (1e-9, "hamiltonian.h5", "H is not Hermitian"),
        "time_reversal_eV": (recipe.time_reversal_tolerance_eV, "hamiltonian.h5", "H breaks time reversal"),
        "kramers_eV": (recipe.kramers_tolerance_eV, "hamiltonian.h5", "eigenvalues are not Kramers pairs"),
    }
    for key, (limit, file, what) in limits.items():
        if not figures[key] <= limit:
            raise DataError(
                f"{what}: {key} = {figures[key]:.3e} (allowed {limit:.1e})",
                file=folder,
                structure=sid,
                key=file,
            )
    return figures


def publish_soc_structure(
    folder: Path, sid: str, result: demo.DenseResult, comment: str, recipe: SocRecipe
) -> dict[str, float]:
    """Write with the demo's writer and verify in a temporary folder, then move it onto ``folder``."""
    reference = {**result.reference, "num_electrons": result.num_electrons}
    with atomic_dir(folder) as tmp:
        demo.write_structure(tmp, result, comment)
        return verify_soc_structure(tmp, sid, reference, recipe)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def compute_one(job: tuple[Path, str, int, str]) -> tuple[str, float, dict[str, float], dict]:
    """Compute, write and verify one geometry: (id, seconds, figures, reference entry)."""
    out, kind, index, route = job
    sid = f"{kind}/{index:03d}"
    recipe = SocRecipe()
    elements, positions = perturbed_soc_molecule(kind, index, recipe)
    result = run_soc_molecule(elements, positions, recipe, route=route)
    comment = f"hamflow soc {sid}: PySCF two-component X2C-1e {recipe.xc}/{recipe.basis}"
    figures = publish_soc_structure(out / "dft" / kind / f"{index:03d}", sid, result, comment, recipe)
    return sid, result.seconds, figures, {**result.reference, "num_electrons": result.num_electrons}


def read_references(path: Path) -> dict[str, dict]:
    """The per-structure entries of an existing reference file ({} when there is none)."""
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text())["structures"])


def split_per_kind(counts: Mapping[str, int]) -> dict[str, list[str]]:
    """Stratified split: of each kind's geometries (independent draws), the last 1/8 (at least 1) test,
    the 1/8 before validate, the rest train."""
    parts: dict[str, list[str]] = {"train": [], "validate": [], "test": []}
    for kind, count in counts.items():
        held = max(1, round(count / 8))
        ids = [f"{kind}/{k:03d}" for k in range(count)]
        parts["train"] += ids[: count - 2 * held]
        parts["validate"] += ids[count - 2 * held : count - held]
        parts["test"] += ids[count - held :]
    return parts


def parse_counts(items: Sequence[str] | None) -> dict[str, int]:
    """``["hbr=2", "brcl=1"]`` -> {"hbr": 2, "brcl": 1}; None -> DEFAULT_COUNTS."""
    if not items:
        return dict(DEFAULT_COUNTS)
    counts: dict[str, int] = {}
    for item in items:
        kind, _, number = item.partition("=")
        if kind not in SOC_MOLECULES or not number.isdigit():
            raise SystemExit(f"--count {item!r}: expected KIND=N with KIND one of {', '.join(SOC_MOLECULES)}")
        counts[kind] = int(number)
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (a cache outside the repo)")
    parser.add_argument(
        "--count",
        action="append",
        metavar="KIND=N",
        help=f"geometries of one kind (repeatable); default {DEFAULT_COUNTS}",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes, one BLAS thread each")
    parser.add_argument(
        "--route", choices=ROUTES, default="spin-orbital", help="two-component basis of the SCF"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = parse_counts(args.count)
    try:
        import pyscf
    except ImportError:
        print("make_soc_dataset.py needs PySCF: pip install 'pyscf>=2.14,<3'", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    reference_path = args.out / REFERENCE_FILE
    references = read_references(reference_path)
    jobs = [
        (args.out, kind, k, args.route)
        for kind, count in counts.items()
        for k in range(count)
        if not (f"{kind}/{k:03d}" in references and (args.out / "dft" / kind / f"{k:03d}").is_dir())
    ]
    total = sum(counts.values())
    print(f"{total - len(jobs)} of {total} structures already there; computing {len(jobs)}", flush=True)
    recipe = {**asdict(SocRecipe()), "counts": counts, "route": args.route}
    start = time.perf_counter()
    seconds: list[float] = []
    worst = 0.0
    try:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for sid, elapsed, figures, entry in pool.map(compute_one, jobs):
                references[sid] = entry
                demo.write_references(reference_path, recipe, dict(sorted(references.items())))
                seconds.append(elapsed)
                worst = max(worst, figures["max_energy_error_eV"])
                print(
                    f"{sid}: {elapsed:.1f} s, max|dE| {figures['max_energy_error_eV']:.1e} eV, "
                    f"Kramers {figures['kramers_eV']:.1e} eV, "
                    f"time reversal {figures['time_reversal_eV']:.1e} eV, "
                    f"HOMO SO splitting {1e3 * figures['homo_splitting_eV']:.1f} meV "
                    f"(scalar {1e3 * figures['scalar_homo_splitting_eV']:.1f} meV)",
                    flush=True,
                )
    except HamflowError as error:
        print(f"make_soc_dataset: error: {error}", file=sys.stderr)
        return 1
    if all(count >= 3 for count in counts.values()):
        write_split(args.out / "dataset_split.json", split_per_kind(counts))
    wall = time.perf_counter() - start
    median = f"{np.median(seconds):.1f}" if seconds else "-"
    print(
        f"{total} structures in {args.out} (PySCF {pyscf.__version__}); "
        f"computed {len(seconds)} in {wall:.0f} s wall, median {median} s per structure; "
        f"worst eigenvalue error {worst:.1e} eV"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
