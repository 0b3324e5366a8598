"""Legacy DeepH/DeepH-E3 -> DeepH format: MoTe2 against DeepH-dock's own conversion, regrouping,
OpenMX orbital order, spinful blocks, errors and the ``hamflow convert legacy`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hamflow.cli import main
from hamflow.data.info import read_info
from hamflow.data.kspace import band_eigenvalues
from hamflow.data.legacy import convert_legacy, convert_legacy_tree, openmx_to_standard
from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.data.poscar import read_poscar
from hamflow.data.structure import load_structure
from hamflow.errors import DataError

K_POINTS = np.array([[0, 0, 0], [0.5, 0, 0], [1 / 3, 1 / 3, 0], [0.137, -0.291, 0.42], [0.25, 0.6, 0.0]])

# Orbital names per shell, written out independently of the library.
OPENMX = {0: ["s"], 1: ["x", "y", "z"], 2: ["z2", "x2-y2", "xy", "xz", "yz"]}
STANDARD = {0: ["s"], 1: ["y", "z", "x"], 2: ["xy", "yz", "z2", "xz", "x2-y2"]}


@pytest.fixture(scope="module")
def legacy_dir(deeph_dock: Path) -> Path:
    return deeph_dock / "legacy"


def test_mote2_matches_deeph_dock_conversion(legacy_dir: Path, tmp_path: Path) -> None:
    convert_legacy(legacy_dir / "original/MoTe2", tmp_path / "MoTe2")
    ours = load_structure(tmp_path / "MoTe2")
    theirs = load_structure(legacy_dir / "upgraded/MoTe2")
    # POSCAR: same lattice, elements (regrouped) and positions.
    assert ours.poscar.elements == theirs.poscar.elements == ("Te", "Te", "Mo")
    np.testing.assert_allclose(ours.poscar.lattice, theirs.poscar.lattice, atol=1e-12)
    np.testing.assert_allclose(ours.poscar.positions, theirs.poscar.positions, atol=1e-12)
    # info.json: every field DeepH-dock writes, equal.
    assert ours.info == theirs.info
    # Every block equal, pair by pair.
    for key in ("H", "S"):
        mine, ref = ours.matrices[key], theirs.matrices[key]
        index = ref.pair_index()
        assert set(mine.pair_index()) == set(index)
        assert mine.entries.dtype == ref.entries.dtype
        for n, pair in enumerate(map(tuple, mine.atom_pairs.tolist())):
            np.testing.assert_array_equal(mine.block(n), ref.block(index[pair]))
    # Generalized eigenvalues at several k, to 1e-6 eV.
    np.testing.assert_allclose(
        band_eigenvalues(ours, K_POINTS), band_eigenvalues(theirs, K_POINTS), atol=1e-6
    )


def _legacy_copy_reordered(src: Path, dst: Path, order: list[int]) -> None:
    """Write the legacy MoTe2 with its atoms listed in ``order`` (new legacy atom a = old order[a])."""
    dst.mkdir(parents=True)
    shutil.copy(src / "lat.dat", dst / "lat.dat")
    shutil.copy(src / "info.json", dst / "info.json")
    elements = (src / "element.dat").read_text().split()
    (dst / "element.dat").write_text("\n".join(elements[a] for a in order) + "\n")
    positions = np.loadtxt(src / "site_positions.dat", ndmin=2)
    np.savetxt(dst / "site_positions.dat", positions[:, order], fmt="%.17g")
    orbital_lines = (src / "orbital_types.dat").read_text().splitlines()
    (dst / "orbital_types.dat").write_text("\n".join(orbital_lines[a] for a in order) + "\n")
    position_of = {old: new for new, old in enumerate(order)}
    for name in ("hamiltonians.h5", "overlaps.h5"):
        with h5py.File(src / name, "r") as old, h5py.File(dst / name, "w") as new:
            for key in old:
                r1, r2, r3, i, j = json.loads(key)
                new_key = f"[{r1}, {r2}, {r3}, {position_of[i - 1] + 1}, {position_of[j - 1] + 1}]"
                new.create_dataset(new_key, data=old[key][()])


def test_atoms_are_regrouped_by_element(legacy_dir: Path, tmp_path: Path) -> None:
    """Legacy atoms Te, Mo, Te (not grouped) come out as Te, Te, Mo with the same physics."""
    _legacy_copy_reordered(legacy_dir / "original/MoTe2", tmp_path / "shuffled", [0, 2, 1])
    convert_legacy(tmp_path / "shuffled", tmp_path / "out")
    ours = load_structure(tmp_path / "out")
    theirs = load_structure(legacy_dir / "upgraded/MoTe2")
    assert ours.poscar.elements == ("Te", "Te", "Mo")
    np.testing.assert_allclose(ours.poscar.positions, theirs.poscar.positions, atol=1e-12)
    index = theirs.matrices["H"].pair_index()
    for n, pair in enumerate(map(tuple, ours.matrices["H"].atom_pairs.tolist())):
        np.testing.assert_array_equal(ours.matrices["H"].block(n), theirs.matrices["H"].block(index[pair]))
    np.testing.assert_allclose(
        band_eigenvalues(ours, K_POINTS[2:4]), band_eigenvalues(theirs, K_POINTS[2:4]), atol=1e-6
    )


def test_openmx_permutation_per_shell() -> None:
    for l in (0, 1, 2):
        expected = [OPENMX[l].index(name) for name in STANDARD[l]]
        np.testing.assert_array_equal(openmx_to_standard(l), expected)
    # l = 3, OpenMX m = 0, +1, -1, +2, -2, +3, -3 -> standard m = -3..3.
    np.testing.assert_array_equal(openmx_to_standard(3), [6, 4, 2, 0, 1, 3, 5])


def _names(ls: list[int]) -> list[str]:
    return [f"{shell}{name}" for shell, l in enumerate(ls) for name in STANDARD[l]]


def _write_synthetic_legacy(folder: Path, spinful: bool, rng: np.random.Generator) -> dict:
    """O, H, O with shells O: s p d, H: s p. Returns {new pair: expected standard-order block}."""
    folder.mkdir(parents=True)
    numbers, shells = [8, 1, 8], {8: [0, 1, 2], 1: [0, 1]}
    lattice = np.array([[6.0, 0, 0], [0, 7.0, 0], [0.5, 0, 8.0]])
    positions = np.array([[0.0, 0.0, 0.0], [0.9, 0.1, 0.0], [2.0, 0.5, 0.3]])
    (folder / "element.dat").write_text("".join(f"{z}\n" for z in numbers))
    np.savetxt(folder / "lat.dat", lattice.T)
    np.savetxt(folder / "site_positions.dat", positions.T)
    (folder / "orbital_types.dat").write_text("".join("  ".join(map(str, shells[z])) + "\n" for z in numbers))
    (folder / "info.json").write_text(
        json.dumps({"nsites": 3, "isorthogonal": False, "isspinful": spinful, "fermi_level": -2.5})
    )
    new_index = {0: 0, 2: 1, 1: 2}  # O, O, H
    expected = {}
    with h5py.File(folder / "hamiltonians.h5", "w") as handle:
        for r in (-1, 0, 1):
            for i in range(3):
                for j in range(3):
                    names_i, names_j = _names(shells[numbers[i]]), _names(shells[numbers[j]])
                    openmx_i = [f"{s}{n}" for s, l in enumerate(shells[numbers[i]]) for n in OPENMX[l]]
                    openmx_j = [f"{s}{n}" for s, l in enumerate(shells[numbers[j]]) for n in OPENMX[l]]
                    spins = 2 if spinful else 1
                    shape = (spins * len(names_i), spins * len(names_j))
                    standard = rng.normal(size=shape) + (1j * rng.normal(size=shape) if spinful else 0)
                    rows = [names_i.index(n) for n in openmx_i]
                    cols = [names_j.index(n) for n in openmx_j]
                    if spinful:
                        rows = rows + [len(names_i) + v for v in rows]
                        cols = cols + [len(names_j) + v for v in cols]
                    handle.create_dataset(f"[{r}, 0, 0, {i + 1}, {j + 1}]", data=standard[np.ix_(rows, cols)])
                    expected[(r, 0, 0, new_index[i], new_index[j])] = standard
    return expected


@pytest.mark.parametrize("spinful", [False, True])
def test_synthetic_orbital_order_and_spin_blocks(tmp_path: Path, spinful: bool) -> None:
    expected = _write_synthetic_legacy(tmp_path / "legacy", spinful, np.random.default_rng(1))
    convert_legacy(tmp_path / "legacy", tmp_path / "new")
    poscar = read_poscar(tmp_path / "new/POSCAR")
    assert poscar.elements == ("O", "O", "H")
    np.testing.assert_allclose(poscar.positions, [[0, 0, 0], [2.0, 0.5, 0.3], [0.9, 0.1, 0.0]])
    np.testing.assert_allclose(poscar.lattice, [[6.0, 0, 0], [0, 7.0, 0], [0.5, 0, 8.0]])
    info = read_info(tmp_path / "new/info.json")
    assert (info.atoms_quantity, info.orbits_quantity, info.spinful, info.fermi_energy_eV) == (
        3,
        22,
        spinful,
        -2.5,
    )
    assert info.elements_orbital_map == {"O": (0, 1, 2), "H": (0, 1)}
    matrix = read_matrix_h5(tmp_path / "new/hamiltonian.h5")
    assert matrix.entries.dtype == (np.complex128 if spinful else np.float64)
    assert matrix.atom_pairs.tolist() == sorted(matrix.atom_pairs.tolist())
    assert not (tmp_path / "new/overlap.h5").exists()
    index = matrix.pair_index()
    assert set(index) == set(expected)
    for pair, block in expected.items():
        np.testing.assert_array_equal(matrix.block(index[pair]), block)


def _break(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("orbital_types.dat", "0 1 2\n0 1\n0 1\n", "an earlier O [0, 1, 2]"),
        ("orbital_types.dat", "0 1 2\n0 1\n", "2 lines but element.dat lists 3 atoms"),
        ("element.dat", "8\n1\n999\n", "invalid atomic number 999"),
        ("site_positions.dat", "0 0\n0 0\n0 0\n", "2 positions (columns) but element.dat lists 3 atoms"),
        ("lat.dat", "1 0 0\n0 1 0\n", "expected 3 rows"),
        ("info.json", '{"nsites": 4}', "key 'nsites': = 4 but element.dat lists 3 atoms"),
        ("info.json", '{"isspinful": "no"}', "key 'isspinful'"),
    ],
)
def test_bad_structure_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    _write_synthetic_legacy(tmp_path / "s7", False, np.random.default_rng(0))
    _break(tmp_path / "s7", name, text)
    with pytest.raises(DataError) as info:
        convert_legacy(tmp_path / "s7", tmp_path / "out", sid="set/s7")
    assert str(info.value).startswith(f"structure set/s7: {tmp_path / 's7'}"), str(info.value)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "data", "message"),
    [
        ("[0, 0, 0, 4, 1]", np.zeros((14, 9)), "atom index outside 1..3"),
        ("[0, 0, 0, 1, 1]x", np.zeros((9, 9)), "expected a dataset keyed '[Rx, Ry, Rz, i, j]'"),
        ("[2, 0, 0, 1, 2]", np.zeros((9, 9)), "block shape (9, 9); orbital_types.dat gives (9, 4)"),
    ],
)
def test_bad_matrix_keys(tmp_path: Path, key: str, data: np.ndarray, message: str) -> None:
    _write_synthetic_legacy(tmp_path / "s", False, np.random.default_rng(0))
    with h5py.File(tmp_path / "s/hamiltonians.h5", "a") as handle:
        handle.create_dataset(key, data=data)
    with pytest.raises(DataError) as info:
        convert_legacy(tmp_path / "s", tmp_path / "out")
    assert f"{tmp_path / 's/hamiltonians.h5'}: key '{key}'" in str(info.value)
    assert message in str(info.value)


def test_tree_conversion_with_depth(tmp_path: Path) -> None:
    for sid in ("a/1", "a/2", "b/3"):
        _write_synthetic_legacy(tmp_path / "src" / sid, False, np.random.default_rng(0))
    assert convert_legacy_tree(tmp_path / "src", tmp_path / "dst", depth=1) == ["a/1", "a/2", "b/3"]
    assert read_poscar(tmp_path / "dst/b/3/POSCAR").elements == ("O", "O", "H")
    with pytest.raises(DataError, match="structure a: .*no element.dat: not a legacy structure folder"):
        convert_legacy_tree(tmp_path / "src", tmp_path / "dst2", depth=0)


def test_cli(legacy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "legacy", str(legacy_dir / "original/MoTe2"), str(tmp_path / "one")]) == 0
    assert "converted 1 structure" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "POSCAR",
        "hamiltonian.h5",
        "info.json",
        "overlap.h5",
    ]
    assert main(["convert", "legacy", str(legacy_dir / "original"), str(tmp_path / "tree")]) == 0
    assert (tmp_path / "tree/MoTe2/hamiltonian.h5").is_file()
    assert main(["convert", "legacy", str(tmp_path / "absent"), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("hamflow: error: ") and err.count("\n") == 1 and "legacy data folder not found" in err
    )
