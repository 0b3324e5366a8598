"""Eigenvalue errors: where k is taken, which states count as occupied / near E_F, the gauge shift."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from hamflow.data.matrix_h5 import BlockMatrix
from hamflow.data.structure import load_structure
from hamflow.infer.bands import eigenvalue_errors, k_points_for, save_bands


def _plus(matrix: BlockMatrix, other: BlockMatrix, factor: float) -> BlockMatrix:
    np.testing.assert_array_equal(matrix.atom_pairs, other.atom_pairs)
    return dataclasses.replace(matrix, entries=matrix.entries + factor * other.entries)


def test_molecule_at_gamma_and_the_gauge_shift(deeph_dock: Path) -> None:
    structure = load_structure(deeph_dock / "h2o" / "dft" / "138")
    assert k_points_for(structure).kind == "gamma"
    h, s = structure.matrices["H"], structure.matrices["S"]
    shifted = _plus(h, s, 5.0)  # H + 5 S: every eigenvalue moves up by exactly 5 eV
    raw = eigenvalue_errors(structure, shifted)
    np.testing.assert_allclose(raw.predicted - raw.dft, 5.0, atol=1e-9)
    corrected = eigenvalue_errors(structure, shifted, mu=5.0)
    assert corrected.occupied_stats[0] == pytest.approx(0.0, abs=1e-9)
    # fermi_energy_eV = 0 and no occupation: occupied = states at or below 0 eV (4 for this H2O)
    assert corrected.occupied_stats[2] == int((corrected.dft <= 0.0).sum()) == 4
    assert corrected.fermi_energy == 0.0
    assert corrected.near_fermi is not None
    # near the Fermi level: occupied within 2 eV of the HOMO (-6.94, -6.28 eV) and the LUMO (2.51 eV),
    # the next empty state (5.19 eV) is more than 2 eV above the LUMO
    assert np.nonzero(corrected.near_fermi[0])[0].tolist() == [2, 3, 4]
    assert corrected.near_fermi_stats[2] == 3


def test_occupation_gives_the_occupied_count_and_mid_gap_fermi(deeph_dock: Path, tmp_path: Path) -> None:
    folder = tmp_path / "h2o"
    shutil.copytree(deeph_dock / "h2o" / "dft" / "138", folder)
    info = (folder / "info.json").read_text().replace('"fermi_energy_eV": 0.00', '"fermi_energy_eV": null')
    (folder / "info.json").write_text(info.replace("}}", '}, "occupation": 8}'))
    structure = load_structure(folder)
    assert structure.info.occupation == 8 and structure.info.fermi_energy_eV is None
    result = eigenvalue_errors(structure, structure.matrices["H"])
    assert result.occupied.sum() == 4
    homo, lumo = result.dft[0, 3], result.dft[0, 4]
    assert result.fermi_energy == pytest.approx(0.5 * (homo + lumo))
    assert result.occupied_stats[0] == pytest.approx(0.0, abs=1e-9)


def test_periodic_k_path_and_grid(deeph_dock: Path, tmp_path: Path) -> None:
    source = deeph_dock / "periodic" / "dft" / "MoTe2"
    structure = load_structure(source)
    k_path = k_points_for(structure)
    assert k_path.kind == "k_path" and k_path.k_frac.shape == (140, 3)
    assert [name for _, name in k_path.labels][:2] == ["GAMMA", "M"]
    folder = tmp_path / "MoTe2"
    folder.mkdir()
    for name in ("POSCAR", "info.json", "hamiltonian.h5", "overlap.h5"):
        shutil.copy(source / name, folder / name)
    no_path = load_structure(folder)
    grid = k_points_for(no_path, k_grid=(3, 2, 5))
    periodic = no_path.matrices["H"].atom_pairs[:, :3].any(axis=0)
    expected = int(np.prod([n if p else 1 for n, p in zip((3, 2, 5), periodic, strict=True)]))
    assert grid.kind == "grid" and grid.k_frac.shape == (expected, 3)

    noise = dataclasses.replace(
        structure.matrices["H"],
        entries=np.random.default_rng(0).normal(0, 1e-3, structure.matrices["H"].entries.shape),
    )
    perturbed = _plus(structure.matrices["H"], noise, 1.0)
    result = eigenvalue_errors(structure, perturbed)
    assert result.occupied.sum(axis=1).tolist() == [23] * 140  # occupation 46, spinless
    mae, worst, count = result.occupied_stats
    assert 0 < mae < worst < 0.1 and count == 23 * 140
    save_bands(tmp_path / "bands" / "MoTe2.npz", result)
    with np.load(tmp_path / "bands" / "MoTe2.npz") as data:
        np.testing.assert_array_equal(data["dft"], result.dft)
        assert data["label_names"].tolist()[:2] == ["GAMMA", "M"]
        assert float(data["fermi_energy"]) == pytest.approx(structure.info.fermi_energy_eV)
