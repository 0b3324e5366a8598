"""POSCAR reader/writer: real DeepH-dock files, Direct/Cartesian, scale factors, element lines, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hamflow.data.poscar import Poscar, read_poscar, write_poscar
from hamflow.errors import DataError

LATTICE = np.array([[3.0, 0.0, 0.0], [0.5, 4.0, 0.0], [0.2, 0.3, 5.0]])
FRAC = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.9, 0.05, 0.7]])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "POSCAR"
    path.write_text(text)
    return path


def _poscar_text(scale: str, lattice: np.ndarray, species: str, mode: str, coords: np.ndarray) -> str:
    rows = "\n".join(" ".join(f"{v:.15f}" for v in row) for row in lattice)
    pos = "\n".join(" ".join(f"{v:.15f}" for v in row) for row in coords)
    return f"test structure\n{scale}\n{rows}\n{species}\n{mode}\n{pos}\n"


def _all_poscars(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("POSCAR") if "original" not in p.parts)


def test_reads_every_deeph_dock_poscar(deeph_dock: Path) -> None:
    paths = _all_poscars(deeph_dock)
    folders = {p.relative_to(deeph_dock).parts[0] for p in paths}
    assert folders == {"molecules", "h2o", "periodic", "rotated", "legacy"}
    for path in paths:
        poscar = read_poscar(path)
        assert poscar.lattice.shape == (3, 3)
        assert poscar.positions.shape == (poscar.num_atoms, 3)
        assert len({el for el, _ in poscar.groups}) == len(poscar.groups), path


def test_mote2_values(deeph_dock: Path) -> None:
    poscar = read_poscar(deeph_dock / "periodic/dft/MoTe2/POSCAR")
    assert poscar.elements == ("Te", "Te", "Mo")
    np.testing.assert_array_equal(poscar.lattice[2], [0.0, 0.0, 300.0])
    np.testing.assert_array_equal(poscar.positions[2], [1.7828272796542224, 1.029315809826974, 3.6619446025])


def test_rotated_copies_keep_interatomic_distances(deeph_dock: Path) -> None:
    """Lowercase 'cartesian' with trailing labels; copies 1-3 are rotations (+ shift) of copy 0."""

    def distances(poscar: Poscar) -> np.ndarray:
        return np.linalg.norm(poscar.positions[:, None] - poscar.positions[None], axis=-1)

    reference = read_poscar(deeph_dock / "rotated/dft/0/POSCAR")
    for copy in (1, 2, 3):
        rotated = read_poscar(deeph_dock / f"rotated/dft/{copy}/POSCAR")
        assert rotated.elements == ("O", "H", "H")
        np.testing.assert_allclose(distances(rotated), distances(reference), atol=1e-4)


@pytest.mark.parametrize("path", ["molecules/dft/1000", "h2o/dft/138", "periodic/dft/MoTe2", "rotated/dft/2"])
def test_round_trip_is_exact(deeph_dock: Path, tmp_path: Path, path: str) -> None:
    original = read_poscar(deeph_dock / path / "POSCAR")
    write_poscar(tmp_path / "POSCAR", original)
    again = read_poscar(tmp_path / "POSCAR")
    assert again.comment == original.comment
    assert again.elements == original.elements
    np.testing.assert_array_equal(again.lattice, original.lattice)
    np.testing.assert_array_equal(again.positions, original.positions)


def test_direct_and_cartesian_agree(tmp_path: Path) -> None:
    direct = read_poscar(_write(tmp_path, _poscar_text("1.0", LATTICE, "Mo Te\n1 2", "Direct", FRAC)))
    cart = read_poscar(
        _write(tmp_path, _poscar_text("1.0", LATTICE, "Mo Te\n1 2", "Cartesian", FRAC @ LATTICE))
    )
    np.testing.assert_allclose(direct.positions, FRAC @ LATTICE, atol=1e-12)
    np.testing.assert_allclose(cart.positions, direct.positions, atol=1e-12)
    np.testing.assert_allclose(direct.fractional_positions, FRAC, atol=1e-12)
    assert direct.elements == ("Mo", "Te", "Te")


def test_scale_factor_applies_to_lattice_and_cartesian_positions(tmp_path: Path) -> None:
    cart = FRAC @ LATTICE
    direct = read_poscar(_write(tmp_path, _poscar_text("2.0", LATTICE, "Mo Te\n1 2", "Direct", FRAC)))
    np.testing.assert_allclose(direct.lattice, 2 * LATTICE)
    np.testing.assert_allclose(direct.positions, 2 * cart, atol=1e-12)
    scaled = read_poscar(_write(tmp_path, _poscar_text("2.0", LATTICE, "Mo Te\n1 2", "Cartesian", cart)))
    np.testing.assert_allclose(scaled.positions, 2 * cart, atol=1e-12)


def test_negative_scale_is_the_cell_volume(tmp_path: Path) -> None:
    volume = float(abs(np.linalg.det(LATTICE)))
    poscar = read_poscar(
        _write(tmp_path, _poscar_text(f"-{8 * volume!r}", LATTICE, "Mo Te\n1 2", "Direct", FRAC))
    )
    np.testing.assert_allclose(abs(np.linalg.det(poscar.lattice)), 8 * volume)
    np.testing.assert_allclose(poscar.lattice, 2 * LATTICE)
    np.testing.assert_allclose(poscar.positions, 2 * FRAC @ LATTICE, atol=1e-12)


def test_three_scale_factors_scale_cartesian_components(tmp_path: Path) -> None:
    cart = FRAC @ LATTICE
    poscar = read_poscar(
        _write(tmp_path, _poscar_text("1.0 2.0 3.0", LATTICE, "Mo Te\n1 2", "Cartesian", cart))
    )
    np.testing.assert_allclose(poscar.lattice, LATTICE * [1.0, 2.0, 3.0])
    np.testing.assert_allclose(poscar.positions, cart * [1.0, 2.0, 3.0], atol=1e-12)


@pytest.mark.parametrize(
    "species",
    ["Mo_pv Te\n1 2", "Mo/5a1f3c Te_GW\n1 2", "mo TE\n1 2", "\tMo   Te  \n 1  2 ", "Mo Te\n1 2 ! counts"],
)
def test_element_line_variants(tmp_path: Path, species: str) -> None:
    poscar = read_poscar(_write(tmp_path, _poscar_text("1.0", LATTICE, species, "Direct", FRAC)))
    assert poscar.elements == ("Mo", "Te", "Te")


def test_vasp4_symbols_from_comment_line_and_selective_dynamics(tmp_path: Path) -> None:
    text = _poscar_text("1.0", LATTICE, "1 2\nSelective dynamics", "Direct", FRAC)
    text = text.replace("test structure", "Mo Te", 1)
    lines = text.splitlines()
    lines[-3:] = [line + " T T F" for line in lines[-3:]]
    poscar = read_poscar(_write(tmp_path, "\n".join(lines) + "\n"))
    assert poscar.elements == ("Mo", "Te", "Te")
    np.testing.assert_allclose(poscar.positions, FRAC @ LATTICE, atol=1e-12)


def test_write_requires_contiguous_groups(tmp_path: Path) -> None:
    poscar = Poscar("x", LATTICE, ("Te", "Mo", "Te"), FRAC @ LATTICE)
    with pytest.raises(DataError, match="not contiguous"):
        write_poscar(tmp_path / "POSCAR", poscar)
    assert not (tmp_path / "POSCAR").exists()


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "line 11 (position)", "file ends after 10 lines"),
        (lambda t: t.replace("\n1.0\n", "\nabc\n", 1), "line 2 (scaling factor)", "expected 1 or 3 numbers"),
        (lambda t: t.replace("\n1.0\n", "\n0.0\n", 1), "line 2 (scaling factor)", "not allowed"),
        (lambda t: t.replace("Mo Te\n", "Mo Xx\n", 1), "line 6 (element symbols)", "'Xx' is not an element"),
        (lambda t: t.replace("Mo Te\n1 2", "Mo Te\n1", 1), "line 7 (atom counts)", "1 counts for 2 element"),
        (lambda t: t.replace("Mo Te\n1 2", "Mo Te\n1 -2", 1), "line 7 (atom counts)", "positive integers"),
        (lambda t: t.replace("Mo Te\n1 2", "1 2", 1), "line 6 (element symbols)", "VASP 4"),
        (
            lambda t: t.replace("0.500000000000000 0.500000000000000", "0.5 x", 1),
            "line 10 (position)",
            "3 numbers",
        ),
    ],
)
def test_errors_name_file_structure_and_line(tmp_path: Path, edit, key: str, reason: str) -> None:
    path = _write(tmp_path, edit(_poscar_text("1.0", LATTICE, "Mo Te\n1 2", "Direct", FRAC)))
    with pytest.raises(DataError) as info:
        read_poscar(path, structure="set/7")
    message = str(info.value)
    assert message.startswith(f"structure set/7: {path}: key '{key}'"), message
    assert reason in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_poscar(tmp_path / "POSCAR", structure="a")
