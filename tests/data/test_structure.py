"""load_structure over every DeepH-dock folder; required/optional quantities; orbital layout helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hamflow.data.orbitals import (
    atom_orbital_counts,
    atom_orbital_offsets,
    atomic_number,
    element_symbol,
    shell_ls,
)
from hamflow.data.structure import load_structure
from hamflow.errors import DataError

FOLDERS = {
    "molecules/dft": 13,
    "h2o/dft": 6,
    "periodic/dft": 1,
    "rotated/dft": 4,
    "legacy/upgraded": 1,
}


def _structure_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_loads_every_structure(deeph_dock: Path, folder: str) -> None:
    dirs = _structure_dirs(deeph_dock / folder)
    assert len(dirs) == FOLDERS[folder]
    for path in dirs:
        structure = load_structure(path, sid=f"{folder}/{path.name}")
        n_atoms = structure.info.atoms_quantity
        assert structure.poscar.num_atoms == n_atoms
        assert structure.atomic_numbers.shape == (n_atoms,)
        assert structure.orbital_offsets[-1] == structure.info.orbits_quantity
        assert set(structure.matrices) == {"H", "S"}
        for matrix in structure.matrices.values():
            assert matrix.atom_pairs[:, 3:].max() < n_atoms
            sizes = np.diff(structure.orbital_offsets)
            np.testing.assert_array_equal(
                matrix.chunk_shapes,
                np.stack([sizes[matrix.atom_pairs[:, 3]], sizes[matrix.atom_pairs[:, 4]]], 1),
            )


def test_h2o_with_density_matrix(deeph_dock: Path) -> None:
    for path in _structure_dirs(deeph_dock / "h2o/dft"):
        structure = load_structure(path, quantities=("H", "S", "Rho"))
        assert set(structure.matrices) == {"H", "S", "Rho"}
        rho = structure.matrices["Rho"]
        np.testing.assert_array_equal(rho.atom_pairs, structure.matrices["H"].atom_pairs)
        np.testing.assert_array_equal(structure.atomic_numbers, [8, 1, 1])
        # Tr(Rho S) = sum over pairs of Rho(R)_ij S(R)_ij (S symmetric): the 8 valence electrons of water.
        s = structure.matrices["S"]
        s_index = s.pair_index()
        electrons = sum(
            float(np.sum(rho.block(n) * s.block(s_index[tuple(int(v) for v in rho.atom_pairs[n])])))
            for n in range(rho.num_pairs)
        )
        assert electrons == pytest.approx(8.0, abs=1e-6)


def test_optional_and_required_quantities(deeph_dock: Path, tmp_path: Path) -> None:
    molecule = deeph_dock / "molecules/dft/1000"
    with pytest.raises(DataError) as info:
        load_structure(molecule, sid="m/1000", quantities=("H", "S", "Rho"))
    assert (
        str(info.value) == f"structure m/1000: {molecule / 'density_matrix.h5'}: required Rho file is missing"
    )
    loaded = load_structure(molecule, quantities=("H", "S", "Rho"), required=("H", "S"))
    assert set(loaded.matrices) == {"H", "S"}
    only_s = load_structure(molecule, quantities=("S",))
    assert set(only_s.matrices) == {"S"} and only_s.sid == "1000"
    with pytest.raises(DataError, match="unknown quantities 'X'"):
        load_structure(molecule, quantities=("X",))
    copy = tmp_path / "7"
    shutil.copytree(molecule, copy)
    (copy / "POSCAR").unlink()
    with pytest.raises(DataError, match=f"structure 7: {copy / 'POSCAR'}: file not found"):
        load_structure(copy)


def test_orbital_helpers() -> None:
    orbital_map = {"Mo": (0, 0, 0, 1, 1, 2, 2), "Te": (0, 1)}
    assert shell_ls("Te", orbital_map) == (0, 1)
    np.testing.assert_array_equal(atom_orbital_counts(["Te", "Te", "Mo"], orbital_map), [4, 4, 19])
    np.testing.assert_array_equal(atom_orbital_offsets(["Te", "Te", "Mo"], orbital_map), [0, 4, 8, 27])
    with pytest.raises(DataError, match="element 'O' has no entry in elements_orbital_map"):
        shell_ls("O", orbital_map)
    assert atomic_number("Mo") == 42 and element_symbol(52) == "Te" and element_symbol(118) == "Og"
    assert all(element_symbol(z) and atomic_number(element_symbol(z)) == z for z in range(1, 119))
    for bad in (0, 119, True, 1.5):
        with pytest.raises(DataError, match="invalid atomic number"):
            element_symbol(bad)
    with pytest.raises(DataError, match="unknown element symbol 'Xx'"):
        atomic_number("Xx")
