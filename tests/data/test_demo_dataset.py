"""The bundled demo dataset (data/demo/, real PySCF DFT) and its generator scripts/make_demo_dataset.py.

The data tests need no PySCF: each committed structure is read with hamflow's reader and must
reproduce the energies PySCF computed when it was generated (recorded in reference_energies.json).
The generator tests run PySCF (skipped with the reason when it is not installed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hamflow.data.kspace import band_eigenvalues, dense_at_k, generalized_eigenvalues, read_k_path
from hamflow.data.poscar import read_poscar
from hamflow.data.structure import Structure, load_structure

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_demo_dataset.py"
MOLECULE_COUNTS = {"h2o": 10, "nh3": 8, "ch4": 8, "ethanol": 4}
# molecules 1.8 MB + silicon 1.0 MB + water 2.1 MB (the README demo's 80 structures, H and S only)
MAX_DEMO_BYTES = 5_500_000
NO_PYSCF = "PySCF is not installed (pip install 'pyscf>=2.14,<3', part of the [dev] extra)"


def _references(dataset_dir: Path) -> dict[str, dict]:
    return json.loads((dataset_dir / "reference_energies.json").read_text())["structures"]


def _electrons(structure: Structure) -> float:
    """sum over stored pairs of P(R)_ij S(R)_ij = Tr(P S) per cell (electrons)."""
    overlap = structure.matrices["S"]
    density = structure.matrices["Rho"]
    index = overlap.pair_index()
    return sum(
        float(np.sum(density.block(n) * overlap.block(index[tuple(int(v) for v in pair)])))
        for n, pair in enumerate(density.atom_pairs)
    )


def _load_script():
    """The generator as a module (registered in sys.modules, which its dataclasses need)."""
    if "make_demo_dataset" in sys.modules:
        return sys.modules["make_demo_dataset"]
    spec = importlib.util.spec_from_file_location("make_demo_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_demo_dataset"] = module
    spec.loader.exec_module(module)
    return module


def test_molecules_reproduce_pyscf_orbital_energies(demo_dir: Path) -> None:
    dataset = demo_dir / "molecules"
    references = _references(dataset)
    folders = sorted(path for path in (dataset / "dft").glob("*/*") if path.is_dir())
    names = [f"{folder.parent.name}/{folder.name}" for folder in folders]
    assert sorted(names) == sorted(references)
    assert {kind: sum(n.startswith(kind + "/") for n in names) for kind in MOLECULE_COUNTS} == MOLECULE_COUNTS

    gamma = np.zeros(3)
    for folder, name in zip(folders, names, strict=True):
        structure = load_structure(folder, sid=name, quantities=("H", "S", "Rho"))
        info = structure.info
        assert not info.orthogonal_basis and not info.spinful, name
        num_atoms = info.atoms_quantity
        pairs = {tuple(row) for row in structure.matrices["H"].atom_pairs.tolist()}
        assert pairs == {(0, 0, 0, i, j) for i in range(num_atoms) for j in range(num_atoms)}, name

        offsets = structure.orbital_offsets
        h = dense_at_k(structure.matrices["H"], offsets, gamma).real
        s = dense_at_k(structure.matrices["S"], offsets, gamma).real
        p = dense_at_k(structure.matrices["Rho"], offsets, gamma).real
        assert np.abs(h - h.T).max() < 1e-10, name
        energies = generalized_eigenvalues(h, s)
        reference = np.asarray(references[name]["mo_energy_eV"])
        assert np.abs(energies - reference).max() < 1e-6, name
        assert abs(np.trace(p @ s) - info.occupation) < 1e-8, name
        homo = reference[int(info.occupation) // 2 - 1]
        assert homo < info.fermi_energy_eV < reference[int(info.occupation) // 2], name


def test_silicon_reproduces_pyscf_bands_off_the_grid(demo_dir: Path) -> None:
    dataset = demo_dir / "silicon"
    references = _references(dataset)
    folders = sorted(path for path in (dataset / "dft").iterdir() if path.is_dir())
    assert [folder.name for folder in folders] == sorted(references)
    assert len(folders) >= 2

    for folder in folders:
        structure = load_structure(folder, quantities=("H", "S", "Rho"))
        reference = references[folder.name]
        bands = band_eigenvalues(structure, np.asarray(reference["k_points_frac"]))
        assert np.abs(bands - np.asarray(reference["bands_eV"])).max() < 5e-5, folder.name
        assert abs(_electrons(structure) - structure.info.occupation) < 1e-4, folder.name

        hamiltonian = structure.matrices["H"]
        pairs = hamiltonian.atom_pairs
        assert (pairs[:, :3] != 0).any(axis=1).sum() > 100, folder.name
        index = hamiltonian.pair_index()
        for n, (a, b, c, i, j) in enumerate(pairs.tolist()):
            partner = index.get((-a, -b, -c, j, i))
            assert partner is not None, (folder.name, [a, b, c, i, j])
            assert np.abs(hamiltonian.block(n) - hamiltonian.block(partner).T).max() < 1e-10, folder.name

        k_points, labels = read_k_path(folder / "K_PATH")
        assert len(k_points) > 50 and "GAMMA" in {label for _, label in labels}


def test_committed_geometries_come_from_the_generator_seeds(demo_dir: Path) -> None:
    """The script regenerates exactly these structures (fixed seeds, geometries in the script)."""
    script = _load_script()
    molecules = script.MoleculeRecipe()
    assert molecules.counts == MOLECULE_COUNTS
    for kind, count in molecules.counts.items():
        for index in range(count):
            poscar = read_poscar(demo_dir / "molecules" / "dft" / kind / f"{index:03d}" / "POSCAR")
            elements, positions = script.perturbed_molecule(kind, index, molecules)
            assert poscar.elements == elements, (kind, index)
            assert np.abs(poscar.positions - positions).max() < 1e-12, (kind, index)
            assert np.allclose(poscar.lattice, np.eye(3) * molecules.box_angstrom)
    silicon = script.SiliconRecipe()
    for index in range(silicon.num_cells):
        poscar = read_poscar(demo_dir / "silicon" / "dft" / f"{index:03d}" / "POSCAR")
        lattice, positions = script.perturbed_silicon(index, silicon)
        assert np.abs(poscar.lattice - lattice).max() < 1e-12, index
        assert np.abs(poscar.positions - positions).max() < 1e-12, index


def test_demo_dataset_stays_small(demo_dir: Path) -> None:
    """The committed part (structures, reference files, README), not stage outputs such as graph/."""
    files = [
        *demo_dir.glob("*/dft/**/*"),
        *demo_dir.glob("*/reference_energies.json"),
        demo_dir / "README.md",
    ]
    size = sum(path.stat().st_size for path in files if path.is_file())
    assert size < MAX_DEMO_BYTES, f"data/demo holds {size} bytes of data; keep it under {MAX_DEMO_BYTES}"


def _wigner_real(l: int, rotation: np.ndarray) -> np.ndarray:
    """(2l+1, 2l+1) D with Y_l(R u) = D Y_l(u), real spherical harmonics in DeepH order (l <= 2)."""

    def harmonics(u: np.ndarray) -> np.ndarray:
        x, y, z = u.T
        if l == 0:
            return np.ones((len(u), 1))
        if l == 1:
            return np.stack([y, z, x], axis=1)
        return np.stack([x * y, y * z, (3 * z**2 - 1) / (2 * np.sqrt(3)), x * z, (x**2 - y**2) / 2], axis=1)

    points = np.random.default_rng(0).normal(size=(40, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    solution, *_ = np.linalg.lstsq(harmonics(points), harmonics(points @ rotation.T), rcond=None)
    return solution.T


def test_generator_orbital_order_is_deeph_real_spherical_harmonics() -> None:
    """Rotating the molecule rotates the stored blocks with DeepH's Wigner matrices (p as y, z, x)."""
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    from scipy.spatial.transform import Rotation

    script = _load_script()
    recipe = script.MoleculeRecipe(counts={"h2o": 1}, basis="def2-svp")
    elements, positions = script.perturbed_molecule("h2o", 0, recipe)
    rotation = Rotation.from_euler("zyx", [0.7, -1.1, 0.4]).as_matrix()
    centre = positions.mean(axis=0)
    rotated_positions = (positions - centre) @ rotation.T + centre

    original = script.run_molecule(elements, positions, recipe)
    rotated = script.run_molecule(elements, rotated_positions, recipe)
    assert original.orbital_map == {"O": (0, 0, 0, 1, 1, 2), "H": (0, 0, 1)}
    blocks = [_wigner_real(l, rotation) for el in elements for l in original.orbital_map[el]]
    size = sum(len(block) for block in blocks)
    wigner = np.zeros((size, size))
    start = 0
    for block in blocks:
        wigner[start : start + len(block), start : start + len(block)] = block
        start += len(block)
    for name in ("H", "S", "Rho"):
        expected = wigner @ original.matrices[name][(0, 0, 0)] @ wigner.T
        scale = np.abs(expected).max()
        assert np.abs(rotated.matrices[name][(0, 0, 0)] - expected).max() < 1e-5 * scale, name


def test_generator_quick_mode_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 structures" in result.stdout

    molecule = load_structure(tmp_path / "molecules" / "dft" / "h2o" / "000", quantities=("H", "S", "Rho"))
    mo_energy = _references(tmp_path / "molecules")["h2o/000"]["mo_energy_eV"]
    offsets = molecule.orbital_offsets
    h = dense_at_k(molecule.matrices["H"], offsets, np.zeros(3))
    s = dense_at_k(molecule.matrices["S"], offsets, np.zeros(3))
    assert np.abs(generalized_eigenvalues(h, s) - mo_energy).max() < 1e-6

    silicon = load_structure(tmp_path / "silicon" / "dft" / "000", quantities=("H", "S", "Rho"))
    assert (silicon.matrices["H"].atom_pairs[:, :3] != 0).any()
    assert abs(_electrons(silicon) - 8) < 0.05
    assert (tmp_path / "silicon" / "dft" / "000" / "K_PATH").is_file()
    leftovers = [path.name for path in tmp_path.rglob(".*")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_generator_reports_a_failed_check_in_one_line(tmp_path: Path) -> None:
    """A verification failure stops the run with one line naming the structure, and publishes nothing."""
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    script = _load_script()
    recipe = script.MoleculeRecipe(counts={"h2o": 1}, basis="sto-3g")
    elements, positions = script.perturbed_molecule("h2o", 0, recipe)
    result = script.run_molecule(elements, positions, recipe)
    result.reference["mo_energy_eV"][0] += 1e-3
    folder = tmp_path / "h2o" / "000"
    with pytest.raises(script.DataError, match=r"structure h2o/000: .*differ from PySCF's by 1\.0\d+e-03 eV"):
        script.publish_structure(folder, "h2o/000", result, "test", (1e-6, 1e-8))
    assert not folder.exists()
    assert not list(tmp_path.rglob("*.tmp"))
