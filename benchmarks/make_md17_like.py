"""Generate an MD17-class benchmark in DeepH format with PySCF: water and ethanol at 500 K.

MD17 (and QHNet / PhiSNet / SchNOrb, which report on it) holds geometries of one molecule from
classical molecular dynamics at 500 K, with the PBE/def2-SVP Hamiltonian of each. This script makes
the same kind of set without an MD code: it samples the **classical Boltzmann distribution of the
harmonic normal modes at T = 500 K**, built from the PBE/def2-SVP Hessian at the PBE/def2-SVP
equilibrium geometry. That is what a 500 K classical MD samples in the harmonic limit (each mode
amplitude Q_k ~ N(0, kT / omega_k^2) in mass-weighted coordinates); it costs one Hessian instead of
tens of thousands of force calls, and every geometry is independent (no correlated neighbours between
the training and test parts, which MD17's random splits of one trajectory do have). Each geometry is
also randomly rotated (an exactly equivariant model must not care; the data tests that it does not).

The recipe per geometry is the demo data's (scripts/make_demo_dataset.py): RKS PBE / def2-SVP, all
electron, conv_tol 1e-12 Ha, PySCF's default integration grid (level 3), the molecule centred in a
20 Angstrom box (only R = 0, all atom pairs), the Fock matrix PySCF diagonalised last, read back and
verified (generalized eigenvalues of (H, S) = PySCF's orbital energies to 1e-6 eV, Tr(P S) = N).

Layout (``--out DIR``, a cache folder outside the repository; never commit it)::

    DIR/<molecule>/dft/<00000>/   POSCAR info.json hamiltonian.h5 overlap.h5 density_matrix.h5
    DIR/<molecule>/dataset_split.json   QHNet's MD17 split sizes (see SPLITS)
    DIR/<molecule>/reference.json       equilibrium geometry, frequencies (cm^-1), recipe, timings

Reproducible: geometry k depends only on (seed, molecule, k). Resumable: finished structures are
kept (each is written atomically) and skipped on a rerun. Parallel: ``--workers`` processes with one
BLAS thread each. Run in the background, e.g.::

    nohup python benchmarks/make_md17_like.py --out ~/.cache/hamflow/md17 --molecule water \\
        --count 1200 --workers 2 > md17_water.log 2>&1 &
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import make_demo_dataset as demo  # noqa: E402

from hamflow.atomic import atomic_write_text  # noqa: E402
from hamflow.data.split import write_split  # noqa: E402

BOHR_TO_ANGSTROM = 0.529177249
HARTREE_TO_EV = demo.HARTREE_TO_EV
KB_HARTREE_PER_K = 3.166811563e-6
AMU_TO_ME = 1822.888486
HARTREE_BOHR2_AMU_TO_CM1 = 5140.48  # sqrt(Ha / (Bohr^2 amu)) in cm^-1
SEED = 20261201

START_GEOMETRIES: dict[str, list[tuple[str, tuple[float, float, float]]]] = {
    "water": list(demo.EQUILIBRIUM_MOLECULES["h2o"]),
    "ethanol": list(demo.EQUILIBRIUM_MOLECULES["ethanol"]),
}
# QHNet's MD17 splits: water 500 / 500 / rest; ethanol 25,000 / 500 / 4,500 of 30,000, i.e. the same
# proportions (83.3% / 1.7% / 15%) of however many are made, with at least 10 to validate on.
SPLITS: dict[str, tuple[float | int, float | int]] = {
    "water": (500, 500),
    "ethanol": (25000 / 30000, 500 / 30000),
}


def make_recipe() -> demo.MoleculeRecipe:
    """The demo's molecular recipe (PBE/def2-SVP, 1e-12 Ha, 20 A box)."""
    return demo.MoleculeRecipe()


def _mol(elements: Sequence[str], positions_angstrom: np.ndarray, recipe: demo.MoleculeRecipe):
    from pyscf import gto

    return gto.M(
        atom=[(e, tuple(x)) for e, x in zip(elements, positions_angstrom, strict=True)],
        basis=recipe.basis,
        unit="Angstrom",
        verbose=0,
    )


def _rks(mol, recipe: demo.MoleculeRecipe):
    from pyscf import dft

    mf = dft.RKS(mol, xc=recipe.xc)
    mf.conv_tol = recipe.conv_tol_hartree
    return mf


def optimise(elements: Sequence[str], start: np.ndarray, recipe: demo.MoleculeRecipe) -> np.ndarray:
    """PBE/def2-SVP equilibrium geometry (Angstrom, (n, 3)) by BFGS on the analytic gradient
    (gradient norm below 1e-6 Ha/Bohr)."""

    def energy_and_gradient(flat_bohr: np.ndarray) -> tuple[float, np.ndarray]:
        mol = _mol(elements, flat_bohr.reshape(-1, 3) * BOHR_TO_ANGSTROM, recipe)
        mf = _rks(mol, recipe)
        energy = mf.kernel()
        gradient = mf.nuc_grad_method().kernel()
        return float(energy), np.asarray(gradient).ravel()

    result = minimize(
        energy_and_gradient,
        np.asarray(start).ravel() / BOHR_TO_ANGSTROM,
        jac=True,
        method="BFGS",
        options={"gtol": 1e-6, "maxiter": 200},
    )
    return result.x.reshape(-1, 3) * BOHR_TO_ANGSTROM


def normal_modes(
    elements: Sequence[str], positions: np.ndarray, recipe: demo.MoleculeRecipe
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(omega2, modes, masses): the 3n - 6 vibrational eigenvalues of the mass-weighted Hessian
    (Ha / (Bohr^2 amu)), their mass-weighted eigenvectors (3n, 3n - 6) and atomic masses (amu)."""
    mol = _mol(elements, positions, recipe)
    mf = _rks(mol, recipe)
    mf.kernel()
    hessian = np.asarray(mf.Hessian().kernel())  # (n, n, 3, 3) Ha / Bohr^2
    n = len(elements)
    hess = hessian.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    masses = np.asarray(mol.atom_mass_list(isotope_avg=True), dtype=np.float64)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    weighted = hess * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    omega2, vectors = np.linalg.eigh(0.5 * (weighted + weighted.T))
    order = np.argsort(np.abs(omega2))
    keep = np.sort(order[6:])  # drop the 6 translations / rotations (the smallest |omega^2|)
    if np.any(omega2[keep] <= 0):
        raise RuntimeError(f"imaginary frequency at the optimised geometry: {omega2[keep]}")
    return omega2[keep], vectors[:, keep], masses


def sample_geometry(reference: dict, index: int, seed: int, molecule: str) -> np.ndarray:
    """Geometry ``index`` (Angstrom, (n, 3)): classical harmonic Boltzmann sample at the reference's
    temperature, randomly rotated, centred in the box."""
    rng = np.random.default_rng([seed, zlib.crc32(molecule.encode()), index])
    omega2 = np.asarray(reference["omega2"])
    modes = np.asarray(reference["modes"])
    masses = np.asarray(reference["masses_amu"])
    kt = KB_HARTREE_PER_K * reference["temperature_K"]
    amplitudes = rng.normal(0.0, 1.0, size=omega2.shape) * np.sqrt(kt / omega2)  # sqrt(amu) Bohr
    displacement_bohr = (modes @ amplitudes) / np.repeat(np.sqrt(masses), 3)
    positions = (
        np.asarray(reference["equilibrium_angstrom"]) + displacement_bohr.reshape(-1, 3) * BOHR_TO_ANGSTROM
    )
    positions -= positions.mean(axis=0)
    positions = Rotation.random(random_state=rng).apply(positions)
    return positions + 0.5 * reference["box_angstrom"]


def reference_for(molecule: str, out: Path, temperature: float, recipe: demo.MoleculeRecipe) -> dict:
    """The molecule's equilibrium geometry and normal modes, computed once and cached in
    ``out/reference.json``."""
    path = out / "reference.json"
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    elements = [e for e, _ in START_GEOMETRIES[molecule]]
    guess = np.array([xyz for _, xyz in START_GEOMETRIES[molecule]], dtype=np.float64)
    equilibrium = optimise(elements, guess, recipe)
    omega2, modes, masses = normal_modes(elements, equilibrium, recipe)
    reference = {
        "molecule": molecule,
        "elements": elements,
        "equilibrium_angstrom": equilibrium.tolist(),
        "omega2": omega2.tolist(),
        "frequencies_cm-1": (np.sqrt(omega2) * HARTREE_BOHR2_AMU_TO_CM1).tolist(),
        "modes": modes.tolist(),
        "masses_amu": masses.tolist(),
        "temperature_K": temperature,
        "box_angstrom": recipe.box_angstrom,
        "sampling": "classical Boltzmann distribution of the harmonic normal modes, random rotation",
        "recipe": {"xc": recipe.xc, "basis": recipe.basis, "conv_tol_Ha": recipe.conv_tol_hartree, "grid": 3},
        "reference_seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(reference, indent=1))
    return reference


def compute_one(job: tuple[str, Path, dict, int, int]) -> tuple[str, float, float]:
    """Compute, write and verify one geometry; returns (sid, seconds, max eigenvalue error eV)."""
    molecule, out, reference, index, seed = job
    recipe = make_recipe()
    sid = f"{index:05d}"
    folder = out / "dft" / sid
    if (folder / "hamiltonian.h5").is_file():
        return sid, 0.0, float("nan")
    positions = sample_geometry(reference, index, seed, molecule)
    result = demo.run_molecule(reference["elements"], positions, recipe)
    comment = f"hamflow md17-like {molecule} {sid}: PySCF RKS {recipe.xc}/{recipe.basis}, 500 K normal modes"
    figures = demo.publish_structure(
        folder, sid, result, comment, (recipe.energy_tolerance_eV, recipe.electron_tolerance)
    )
    return sid, result.seconds, figures["max_energy_error_eV"]


def split_sizes(molecule: str, count: int) -> tuple[int, int, int]:
    """(train, validate, test) sizes: QHNet's MD17 split for water (500 / 500 / rest; scaled down
    proportionally when fewer than 1,100 are made), its proportions for ethanol."""
    train, validate = SPLITS[molecule]
    if isinstance(train, int):
        if count < 1100:
            train = validate = int(count * 500 / 1100)
        return int(train), int(validate), count - int(train) - int(validate)
    n_validate = max(10, round(count * validate))
    n_train = round(count * train)
    return n_train, n_validate, count - n_train - n_validate


def write_dataset_split(molecule: str, out: Path, count: int, seed: int) -> dict[str, int]:
    """Write ``out/dataset_split.json`` over the first ``count`` structures (seeded permutation)."""
    ids = [f"{k:05d}" for k in range(count)]
    n_train, n_validate, _ = split_sizes(molecule, count)
    order = np.random.default_rng([seed, 7]).permutation(count)
    parts = {
        "train": sorted(ids[k] for k in order[:n_train]),
        "validate": sorted(ids[k] for k in order[n_train : n_train + n_validate]),
        "test": sorted(ids[k] for k in order[n_train + n_validate :]),
    }
    write_split(out / "dataset_split.json", parts)
    return {part: len(v) for part, v in parts.items()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cache folder (outside the repository)")
    parser.add_argument("--molecule", choices=sorted(START_GEOMETRIES), required=True)
    parser.add_argument("--count", type=int, required=True, help="number of geometries")
    parser.add_argument("--temperature", type=float, default=500.0, help="kelvin (MD17: 500)")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=SEED)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out / args.molecule
    recipe = make_recipe()
    start = time.perf_counter()
    reference = reference_for(args.molecule, out, args.temperature, recipe)
    print(
        f"{args.molecule}: reference geometry and Hessian in {reference['reference_seconds']:.1f} s; "
        f"frequencies (cm^-1) {', '.join(f'{f:.0f}' for f in reference['frequencies_cm-1'])}",
        flush=True,
    )
    jobs = [(args.molecule, out, reference, k, args.seed) for k in range(args.count)]
    seconds: list[float] = []
    worst = 0.0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, (sid, took, error) in enumerate(pool.map(compute_one, jobs, chunksize=4), start=1):
            if took > 0:
                seconds.append(took)
                worst = max(worst, error)
            if done % 50 == 0 or done == args.count:
                print(f"  {done}/{args.count} done ({sid}), {len(seconds)} computed now", flush=True)
    sizes = write_dataset_split(args.molecule, out, args.count, args.seed)
    wall = time.perf_counter() - start
    print(
        f"{args.molecule}: {args.count} structures in {out / 'dft'}; computed {len(seconds)} this run, "
        f"median {np.median(seconds) if seconds else 0:.2f} s per structure on one core, wall {wall:.0f} s "
        f"with {args.workers} workers; worst eigenvalue check {worst:.2e} eV; split {sizes}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
