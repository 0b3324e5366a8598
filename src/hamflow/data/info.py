"""``info.json`` of a DeepH-format structure: sizes, basis flags, Fermi energy, orbital map.

Keys (DeepH-pack): ``atoms_quantity``, ``orbits_quantity`` (sum of 2l+1 over atoms, no spin),
``orthogonal_basis``, ``spinful``, ``fermi_energy_eV`` (eV, may be null), ``elements_orbital_map``
({element: [l of each shell]}), optional ``occupation`` (electrons). Unknown keys are kept in
``extra`` and written back unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hamflow.atomic import atomic_write_text
from hamflow.errors import DataError

_KNOWN_KEYS = (
    "atoms_quantity",
    "orbits_quantity",
    "orthogonal_basis",
    "spinful",
    "fermi_energy_eV",
    "elements_orbital_map",
    "occupation",
)


@dataclass(frozen=True)
class StructureInfo:
    """The content of ``info.json``; energies in eV."""

    atoms_quantity: int
    orbits_quantity: int
    orthogonal_basis: bool
    spinful: bool
    fermi_energy_eV: float | None
    elements_orbital_map: dict[str, tuple[int, ...]]
    occupation: float | None = None
    extra: dict = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def info_from_dict(
    raw: Any, *, file: str | Path | None = None, structure: str | None = None
) -> StructureInfo:
    """Validate the decoded JSON object and build a StructureInfo (DataError naming the key)."""

    def fail(key: str | None, reason: str) -> DataError:
        return DataError(reason, file=file, structure=structure, key=key)

    if not isinstance(raw, dict):
        raise fail(None, f"expected a JSON object, got {type(raw).__name__}")
    for key in ("atoms_quantity", "orbits_quantity", "orthogonal_basis", "spinful", "elements_orbital_map"):
        if key not in raw:
            raise fail(key, "missing")
    for key in ("atoms_quantity", "orbits_quantity"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(key, f"= {value!r}; expected a positive integer")
    for key in ("orthogonal_basis", "spinful"):
        if not isinstance(raw[key], bool):
            raise fail(key, f"= {raw[key]!r}; expected true or false")
    fermi = raw.get("fermi_energy_eV")
    if fermi is not None and not _number(fermi):
        raise fail("fermi_energy_eV", f"= {fermi!r}; expected a number (eV) or null")
    occupation = raw.get("occupation")
    if occupation is not None and not _number(occupation):
        raise fail("occupation", f"= {occupation!r}; expected a number or null")

    orbital_map = raw["elements_orbital_map"]
    if not isinstance(orbital_map, dict) or not orbital_map:
        raise fail("elements_orbital_map", f"= {orbital_map!r}; expected {{element: [l, ...]}}")
    shells: dict[str, tuple[int, ...]] = {}
    for element, ls in orbital_map.items():
        ok = isinstance(ls, list) and ls and all(isinstance(l, int) and not isinstance(l, bool) for l in ls)
        if not ok or any(l < 0 for l in ls):
            raise fail(
                f"elements_orbital_map.{element}", f"= {ls!r}; expected a non-empty list of integers l >= 0"
            )
        shells[element] = tuple(ls)

    return StructureInfo(
        atoms_quantity=raw["atoms_quantity"],
        orbits_quantity=raw["orbits_quantity"],
        orthogonal_basis=raw["orthogonal_basis"],
        spinful=raw["spinful"],
        fermi_energy_eV=None if fermi is None else float(fermi),
        elements_orbital_map=shells,
        occupation=None if occupation is None else float(occupation),
        extra={key: value for key, value in raw.items() if key not in _KNOWN_KEYS},
    )


def read_info(path: str | Path, *, structure: str | None = None) -> StructureInfo:
    """Read ``info.json``; DataError naming the file, structure and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=path, structure=structure) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read: {error}", file=path, structure=structure) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON: {error}", file=path, structure=structure) from None
    return info_from_dict(raw, file=path, structure=structure)


def _json_number(value: float) -> int | float:
    """Integral values are written as JSON integers (``46``, as DeepH-pack writes occupations)."""
    return int(value) if float(value).is_integer() else float(value)


def info_to_dict(info: StructureInfo) -> dict[str, Any]:
    """The JSON object written to ``info.json`` (known keys first, then ``extra``)."""
    out: dict[str, Any] = {
        "atoms_quantity": int(info.atoms_quantity),
        "orbits_quantity": int(info.orbits_quantity),
        "orthogonal_basis": bool(info.orthogonal_basis),
        "spinful": bool(info.spinful),
        "fermi_energy_eV": None if info.fermi_energy_eV is None else float(info.fermi_energy_eV),
        "elements_orbital_map": {el: [int(l) for l in ls] for el, ls in info.elements_orbital_map.items()},
    }
    if info.occupation is not None:
        out["occupation"] = _json_number(info.occupation)
    for key, value in info.extra.items():
        if key not in out:
            out[key] = value
    return out


def write_info(path: str | Path, info: StructureInfo) -> None:
    """Write ``info.json`` atomically."""
    atomic_write_text(path, json.dumps(info_to_dict(info)))
