"""info.json reader/writer: every DeepH-dock file round-trips; bad keys give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hamflow.data.info import StructureInfo, info_to_dict, read_info, write_info
from hamflow.errors import DataError

GOOD = {
    "atoms_quantity": 3,
    "orbits_quantity": 23,
    "orthogonal_basis": False,
    "spinful": False,
    "fermi_energy_eV": -1.5,
    "elements_orbital_map": {"O": [0, 0, 1, 1, 2], "H": [0, 0, 1]},
}


def _infos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("info.json") if "original" not in p.parts)


def test_every_deeph_dock_info_round_trips(deeph_dock: Path, tmp_path: Path) -> None:
    paths = _infos(deeph_dock)
    assert len(paths) == 13 + 6 + 1 + 4 + 1
    for n, path in enumerate(paths):
        info = read_info(path)
        write_info(tmp_path / f"{n}.json", info)
        assert json.loads((tmp_path / f"{n}.json").read_text()) == json.loads(path.read_text()), path
        assert read_info(tmp_path / f"{n}.json") == info


def test_mote2_fields(deeph_dock: Path) -> None:
    info = read_info(deeph_dock / "periodic/dft/MoTe2/info.json")
    assert (info.atoms_quantity, info.orbits_quantity, info.spinful, info.orthogonal_basis) == (
        3,
        57,
        False,
        False,
    )
    assert info.fermi_energy_eV == pytest.approx(8.894647969025222)
    assert info.occupation == 46
    assert info.elements_orbital_map["Mo"] == (0, 0, 0, 1, 1, 2, 2)
    molecule = read_info(deeph_dock / "molecules/dft/1000/info.json")
    assert molecule.fermi_energy_eV is None


def test_unknown_keys_are_kept(tmp_path: Path) -> None:
    raw = {**GOOD, "occupation": 8.5, "hamiltonian_storage": "full", "note": {"a": [1, 2]}}
    (tmp_path / "in.json").write_text(json.dumps(raw))
    info = read_info(tmp_path / "in.json")
    assert info.extra == {"hamiltonian_storage": "full", "note": {"a": [1, 2]}}
    assert info_to_dict(info) == raw


def test_write_is_valid_for_constructed_info(tmp_path: Path) -> None:
    info = StructureInfo(2, 8, True, True, None, {"Si": (0, 1)})
    write_info(tmp_path / "info.json", info)
    assert read_info(tmp_path / "info.json") == info


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"spinful": None}, "spinful", "expected true or false"),
        ({"atoms_quantity": True}, "atoms_quantity", "expected a positive integer"),
        ({"orbits_quantity": 0}, "orbits_quantity", "expected a positive integer"),
        ({"fermi_energy_eV": "1.0"}, "fermi_energy_eV", "expected a number (eV) or null"),
        ({"elements_orbital_map": {"O": [0, -1]}}, "elements_orbital_map.O", "integers l >= 0"),
        ({"elements_orbital_map": []}, "elements_orbital_map", "expected {element: [l, ...]}"),
        ({"occupation": "x"}, "occupation", "expected a number"),
    ],
)
def test_bad_values(tmp_path: Path, change: dict, key: str, reason: str) -> None:
    path = tmp_path / "info.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(DataError) as info:
        read_info(path, structure="h2o/3")
    assert str(info.value).startswith(f"structure h2o/3: {path}: key '{key}': "), str(info.value)
    assert reason in str(info.value)


def test_missing_key_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "elements_orbital_map"}))
    with pytest.raises(DataError, match="key 'elements_orbital_map': missing"):
        read_info(path)
    path.write_text('{"atoms_quantity": 3,')
    with pytest.raises(DataError, match="not valid JSON"):
        read_info(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        read_info(path)
    with pytest.raises(DataError, match="file not found"):
        read_info(tmp_path / "absent.json")
