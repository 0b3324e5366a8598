"""The spin-orbit-coupled slice (data/soc/, two-component X2C PySCF DFT) and its generator
scripts/make_soc_dataset.py.

The data tests need no PySCF: each committed structure is validated and read with hamflow's reader,
and its (H, S) must reproduce PySCF's two-component orbital energies (reference_energies.json),
respect time reversal, and show the spin-orbit splittings that the scalar-relativistic (spin-free
X2C) run of the same geometry lacks. The generator tests run PySCF (skipped when it is absent).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hamflow.data.kspace import generalized_eigenvalues
from hamflow.data.structure import Structure, load_structure
from hamflow.data.validate import validate_structure

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_soc_dataset.py"
SOC_DIR = REPO / "data" / "soc"
SLICE = ("brcl/000", "hbr/000", "hbr/001")
MAX_SLICE_BYTES = 900_000  # 2 HBr (216 kB each) + 1 BrCl (368 kB) + references
NO_PYSCF = "PySCF is not installed (pip install 'pyscf>=2.14,<3', part of the [dev] extra)"
# HBr (Br first): two-component indices of Br 3d (10 spin orbitals after 1s 2s 2p 3s 3p = 18).
HBR_3D_FIRST = 18


def _script():
    """The generator as a module (registered in sys.modules, which its dataclasses need)."""
    if "make_soc_dataset" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_soc_dataset", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_soc_dataset"] = module
        spec.loader.exec_module(module)
    return sys.modules["make_soc_dataset"]


def _references() -> dict[str, dict]:
    return json.loads((SOC_DIR / "reference_energies.json").read_text())["structures"]


def _load(sid: str) -> Structure:
    return load_structure(SOC_DIR / "dft" / sid, sid=sid, quantities=("H", "S", "Rho"))


def test_slice_is_valid_spinful_deeph_data() -> None:
    """hamflow validation passes (complex (2 ni, 2 nj) blocks, conjugate-transposed mirrors, real S)."""
    folders = sorted(f"{p.parent.name}/{p.name}" for p in (SOC_DIR / "dft").glob("*/*") if p.is_dir())
    assert folders == sorted(SLICE) == sorted(_references())
    for sid in SLICE:
        assert validate_structure(SOC_DIR / "dft" / sid, sid, quantities=("H", "S", "Rho")) == [], sid
        structure = _load(sid)
        assert structure.info.spinful and not structure.info.orthogonal_basis, sid
        assert np.iscomplexobj(structure.matrices["H"].entries), sid
        assert np.iscomplexobj(structure.matrices["Rho"].entries), sid
        assert not np.iscomplexobj(structure.matrices["S"].entries), sid
        counts = np.diff(structure.orbital_offsets)
        for n, (_, _, _, i, j) in enumerate(structure.matrices["H"].atom_pairs.tolist()):
            assert structure.matrices["H"].block(n).shape == (2 * counts[i], 2 * counts[j]), sid
            assert structure.matrices["S"].block(n).shape == (counts[i], counts[j]), sid
    hbr = _load("hbr/000")
    assert hbr.info.elements_orbital_map == {"Br": (0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2), "H": (0, 0, 1)}
    assert hbr.info.orbits_quantity == 37  # 74 spin orbitals


def test_slice_reproduces_pyscf_two_component_energies() -> None:
    script = _script()
    references = _references()
    for sid in SLICE:
        h, s, rho = script.gamma_matrices(_load(sid))
        assert np.abs(h - h.conj().T).max() < 1e-9, sid
        energies = generalized_eigenvalues(h, s)
        assert np.abs(energies - references[sid]["mo_energy_eV"]).max() < 1e-6, sid  # generated: 4e-11
        assert abs(np.trace(rho @ s).real - references[sid]["num_electrons"]) < 1e-8, sid


def test_slice_respects_time_reversal_and_carries_spin_orbit_coupling() -> None:
    """Closed shell: H_dd = conj(H_uu), H_ud = -conj(H_du), eigenvalues in Kramers pairs; the
    spin-flip blocks are far from zero (the spin-orbit coupling)."""
    script = _script()
    for sid in SLICE:
        h, s, _ = script.gamma_matrices(_load(sid))
        n = h.shape[0] // 2
        assert script.time_reversal_error(h) < 1e-6, sid  # generated: <= 1.5e-8 eV
        energies = generalized_eigenvalues(h, s)
        assert script.kramers_error(energies) < 1e-6, sid  # generated: <= 1.7e-9 eV
        assert np.abs(energies[2::2] - energies[1:-1:2]).min() > 1e-4, sid  # pairs, not quartets
        assert np.abs(h[:n, n:]).max() > 1.0, sid  # eV; Br 2p on-site spin-orbit terms
        assert np.abs(h[:n, :n].imag).max() > 1.0, sid  # i L_z S_z part


def test_hbr_spin_orbit_splitting_against_the_scalar_relativistic_run() -> None:
    """HBr: SOC splits the Br lone-pair pi level (pi 1/2 below pi 3/2) by ~275 meV and Br 3d into
    3d3/2 below 3d5/2 by ~1.45 eV; the scalar X2C levels of the same geometry, and the eigenvalues of
    the stored H with its spin-orbit part removed, keep the pi doublet degenerate."""
    script = _script()
    references = _references()
    for sid in ("hbr/000", "hbr/001"):
        h, s, _ = script.gamma_matrices(_load(sid))
        n, electrons = h.shape[0] // 2, references[sid]["num_electrons"]
        energies = generalized_eigenvalues(h, s)
        pi_split = script.homo_splitting_eV(energies, electrons)
        assert 0.25 < pi_split < 0.30, (sid, pi_split)
        d_split = script.shell_splitting_eV(energies, HBR_3D_FIRST, 4, 6)
        assert 1.3 < d_split < 1.6, (sid, d_split)

        scalar = np.asarray(references[sid]["scalar_mo_energy_eV"])
        assert len(scalar) == n
        half = electrons // 2
        assert abs(scalar[half - 1] - scalar[half - 2]) < 1e-4, sid  # pi_x, pi_y of a linear molecule
        assert scalar[half - 3] < scalar[half - 2] - 3.0, sid  # sigma well below
        # The pi doublet of the scalar run lies between the two SOC pi levels.
        assert energies[electrons - 3] < scalar[half - 1] < energies[electrons - 1], sid

        spin_free = generalized_eigenvalues(script.spin_free_part(h), s[:n, :n].real)
        assert abs(spin_free[half - 1] - spin_free[half - 2]) < 1e-4, sid
        assert abs(spin_free[half - 1] - scalar[half - 1]) < 0.05, sid


def test_slice_stays_small() -> None:
    files = [*(SOC_DIR / "dft").glob("**/*"), SOC_DIR / "reference_energies.json", SOC_DIR / "README.md"]
    size = sum(path.stat().st_size for path in files if path.is_file())
    assert size < MAX_SLICE_BYTES, f"data/soc holds {size} bytes; keep it under {MAX_SLICE_BYTES}"


def test_generated_geometries_have_stretched_bonds() -> None:
    script = _script()
    recipe = script.SocRecipe()
    for kind, (anchor, moving) in script.STRETCHED_BOND.items():
        atoms = script.SOC_MOLECULES[kind]
        equilibrium = np.linalg.norm(np.subtract(atoms[moving[0]][1], atoms[anchor][1]))
        ratios = []
        for k in range(12):
            elements, positions = script.perturbed_soc_molecule(kind, k, recipe)
            assert elements == tuple(element for element, _ in atoms)
            assert np.abs(positions.mean(axis=0) - 0.5 * recipe.box_angstrom).max() < 1e-9
            ratios.append(np.linalg.norm(positions[moving[0]] - positions[anchor]) / equilibrium)
        assert min(ratios) < 0.97 and max(ratios) > 1.05, (kind, ratios)
        again = script.perturbed_soc_molecule(kind, 3, recipe)[1]
        assert np.array_equal(again, script.perturbed_soc_molecule(kind, 3, recipe)[1])


# ------------------------------------------------------------------------------------------------
# The generator (PySCF)
# ------------------------------------------------------------------------------------------------


def test_generator_spin_layout_rotates_with_su2_x_real_wigner() -> None:
    """Rotating the molecule rotates the stored two-component H and Rho by U x D, U in SU(2) acting on
    (up, down) and D the real-spherical Wigner matrices in DeepH order: the spin layout [all up, all
    down], the orbital order and the spin quantisation axis z are the conventions claimed."""
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    from scipy.spatial.transform import Rotation

    from hamflow.nn.wigner import basis_rotation, spin_rotation, spinful_basis_rotation

    script = _script()
    recipe = script.SocRecipe()
    elements, positions = script.perturbed_soc_molecule("hbr", 0, recipe)
    rotation = Rotation.from_euler("zyx", [0.7, -1.1, 0.4]).as_matrix()
    centre = positions.mean(axis=0)
    original = script.run_soc_molecule(elements, positions, recipe, scalar=False)
    rotated = script.run_soc_molecule(
        elements, (positions - centre) @ rotation.T + centre, recipe, scalar=False
    )
    shells = [l for element in elements for l in original.orbital_map[element]]
    orbital = basis_rotation(shells, rotation)
    # the network's convention (hamflow.nn.wigner, tests/nn/test_spin_orbit.py) is the data's
    full = spinful_basis_rotation(shells, rotation)
    for name, transform in (("H", full), ("Rho", full), ("S", orbital)):
        matrix = original.matrices[name][(0, 0, 0)]
        expected = transform @ matrix @ transform.conj().T
        scale = np.abs(expected).max()
        error = np.abs(rotated.matrices[name][(0, 0, 0)] - expected).max()
        assert error < 1e-5 * scale, (name, error, scale)  # the DFT grid does not rotate exactly
    # The wrong spin rotation (U^H, i.e. the opposite sense) fails: the test can tell.
    wrong = np.kron(spin_rotation(rotation).conj().T, orbital)
    matrix = original.matrices["H"][(0, 0, 0)]
    assert np.abs(rotated.matrices["H"][(0, 0, 0)] - wrong @ matrix @ wrong.conj().T).max() > 1e-2


def test_generator_regenerates_a_committed_structure_and_resumes(tmp_path: Path) -> None:
    """The driver remakes hbr/000 (spin-orbital X2C, GKS.x2c1e) as committed; a rerun computes nothing."""
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    script = _script()
    assert script.main(["--out", str(tmp_path), "--count", "hbr=1"]) == 0
    folder = tmp_path / "dft" / "hbr" / "000"
    fresh = load_structure(folder, sid="hbr/000", quantities=("H", "S", "Rho"))
    committed = _load("hbr/000")
    for name in ("H", "S", "Rho"):
        difference = np.abs(fresh.matrices[name].entries - committed.matrices[name].entries).max()
        assert difference < 1e-6, (name, difference)
    reference = json.loads((tmp_path / "reference_energies.json").read_text())["structures"]["hbr/000"]
    committed_energies = _references()["hbr/000"]["mo_energy_eV"]
    assert np.abs(np.subtract(reference["mo_energy_eV"], committed_energies)).max() < 1e-6
    stamp = (folder / "hamiltonian.h5").stat().st_mtime_ns
    assert script.main(["--out", str(tmp_path), "--count", "hbr=1"]) == 0
    assert (folder / "hamiltonian.h5").stat().st_mtime_ns == stamp  # kept, not recomputed
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_spinor_route_gives_the_committed_spin_orbital_matrices() -> None:
    """x2c.UKS in the j-adapted spinor basis, converted by U = vstack(sph2spinor_coeff()), gives the
    committed (GKS.x2c1e spin-orbital) H and Rho: the spinor -> (AO x spin) conversion is right.
    ~15 s on 2 shared cores (the spinor SCF is 4-10x slower than the spin-orbital one)."""
    pytest.importorskip("pyscf", reason=NO_PYSCF)
    script = _script()
    recipe = script.SocRecipe()
    elements, positions = script.perturbed_soc_molecule("hbr", 0, recipe)
    spinor = script.run_soc_molecule(elements, positions, recipe, route="spinor", scalar=False)
    h_committed, _, rho_committed = script.gamma_matrices(_load("hbr/000"))
    # eV. Two different SCFs, each converged to the recipe's conv_tol: measured 1e-9 on an Intel guest,
    # 8.2e-6 on an AMD one (entries up to 1.3e4 eV: 6e-10 relative); a wrong conversion is O(1) eV.
    assert np.abs(spinor.matrices["H"][(0, 0, 0)] - h_committed).max() < 1e-4
    assert np.abs(spinor.matrices["Rho"][(0, 0, 0)] - rho_committed).max() < 1e-5  # 1.8e-7 on AMD
    committed_energies = _references()["hbr/000"]["mo_energy_eV"]
    assert np.abs(np.subtract(spinor.reference["mo_energy_eV"], committed_energies)).max() < 1e-4
