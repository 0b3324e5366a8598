"""Convert the legacy DeepH / DeepH-E3 data format into the current DeepH format.

Legacy structure folder:
  element.dat          atomic number of each atom, one a line;
  lat.dat              (3, 3) lattice vectors as COLUMNS, Angstrom;
  site_positions.dat   (3, n_atoms) Cartesian positions as columns, Angstrom;
  orbital_types.dat    one line per atom: l of each shell;
  info.json            {"nsites", "isorthogonal", "isspinful", "fermi_level" (eV)}, optionally
                       "elements_orbital_map";
  hamiltonians.h5, overlaps.h5, density_matrices.h5 (each optional): one dataset per atom pair,
                       keyed "[Rx, Ry, Rz, i, j]" with 1-based atoms, orbitals in OpenMX order
                       (p: x, y, z; d: z^2, x^2-y^2, xy, xz, yz; l >= 3: m = 0, +1, -1, +2, -2, ...).

The conversion regroups atoms by element (elements in order of first appearance, atoms in their
original order inside an element), reorders every shell to the standard m = -l..l order (a pure
permutation, as DeepH-dock does), makes atoms 0-based and writes POSCAR, info.json and the
block-sparse matrix files with pairs sorted by (R1, R2, R3, i, j).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from hamflow.data.info import StructureInfo, write_info
from hamflow.data.matrix_h5 import BlockMatrix, write_matrix_h5
from hamflow.data.orbitals import element_symbol
from hamflow.data.poscar import Poscar, write_poscar
from hamflow.errors import DataError

LEGACY_REQUIRED_FILES = ("element.dat", "lat.dat", "site_positions.dat", "orbital_types.dat", "info.json")
LEGACY_MATRIX_FILES = {
    "hamiltonians.h5": "hamiltonian.h5",
    "overlaps.h5": "overlap.h5",
    "density_matrices.h5": "density_matrix.h5",
}
CONVERTED_COMMENT = "converted from the legacy DeepH format by hamflow"


def openmx_to_standard(l: int) -> np.ndarray:
    """(2l+1,) permutation p with standard[m] = openmx[p[m]] for one shell of angular momentum l."""
    if l == 1:
        return np.array([1, 2, 0])
    if l == 2:
        return np.array([2, 4, 0, 3, 1])
    return np.concatenate([np.arange(2 * l, -1, -2), np.arange(1, 2 * l, 2)]).astype(np.int64)


def _atom_permutation(ls: Sequence[int]) -> np.ndarray:
    """Permutation of one atom's orbitals (all shells) from OpenMX to standard order."""
    parts, start = [], 0
    for l in ls:
        parts.append(openmx_to_standard(l) + start)
        start += 2 * l + 1
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _read_rows(path: Path, sid: str, what: str) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"file not found ({what})", file=path, structure=sid) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read: {error}", file=path, structure=sid) from None
    return [line.split() for line in text.splitlines() if line.strip()]


def _float_table(path: Path, sid: str, what: str, rows: int) -> np.ndarray:
    table = _read_rows(path, sid, what)
    try:
        values = np.array([[float(token) for token in row] for row in table], dtype=np.float64)
    except ValueError:
        raise DataError(f"{what}: non-numeric value", file=path, structure=sid) from None
    if len(table) != rows or len({len(row) for row in table}) != 1:
        raise DataError(
            f"{what}: expected {rows} rows of equal length, got {[len(row) for row in table]}",
            file=path,
            structure=sid,
        )
    if not np.all(np.isfinite(values)):
        raise DataError(f"{what}: non-finite value", file=path, structure=sid)
    return values


def _int_value(token: str, path: Path, sid: str, what: str) -> int:
    try:
        value = float(token)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or not value.is_integer():
        raise DataError(f"{what}: {token!r} is not an integer", file=path, structure=sid)
    return int(value)


class _LegacyStructure:
    """The legacy folder's structure part, read and checked; atoms in the legacy order."""

    def __init__(self, src: Path, sid: str) -> None:
        self.src, self.sid = src, sid
        for name in LEGACY_REQUIRED_FILES:
            if not (src / name).is_file():
                raise DataError("required legacy file is missing", file=src / name, structure=sid)
        element_path = src / "element.dat"
        tokens = [token for row in _read_rows(element_path, sid, "atomic numbers") for token in row]
        self.numbers = [_int_value(t, element_path, sid, "atomic number") for t in tokens]
        try:
            self.elements = [element_symbol(z) for z in self.numbers]
        except DataError as error:
            raise DataError(error.reason, file=element_path, structure=sid) from None
        n_atoms = len(self.elements)
        if n_atoms == 0:
            raise DataError("no atoms listed", file=element_path, structure=sid)

        self.lattice = _float_table(src / "lat.dat", sid, "lattice vectors as columns", 3).T
        if self.lattice.shape != (3, 3):
            raise DataError(
                f"expected 3 columns (lattice vectors), got {self.lattice.shape[0]}",
                file=src / "lat.dat",
                structure=sid,
            )
        positions = _float_table(src / "site_positions.dat", sid, "Cartesian positions as columns", 3).T
        if positions.shape[0] != n_atoms:
            raise DataError(
                f"{positions.shape[0]} positions (columns) but element.dat lists {n_atoms} atoms",
                file=src / "site_positions.dat",
                structure=sid,
            )
        self.positions = positions

        orbital_path = src / "orbital_types.dat"
        rows = _read_rows(orbital_path, sid, "orbital types")
        if len(rows) != n_atoms:
            raise DataError(
                f"{len(rows)} lines but element.dat lists {n_atoms} atoms", file=orbital_path, structure=sid
            )
        self.atom_ls = [tuple(_int_value(t, orbital_path, sid, "orbital l") for t in row) for row in rows]
        self.orbital_map: dict[str, tuple[int, ...]] = {}
        for atom, (element, ls) in enumerate(zip(self.elements, self.atom_ls, strict=True)):
            if any(l < 0 for l in ls):
                raise DataError(
                    f"atom {atom + 1}: negative l in {list(ls)}", file=orbital_path, structure=sid
                )
            known = self.orbital_map.setdefault(element, ls)
            if known != ls:
                raise DataError(
                    f"atom {atom + 1} ({element}) has shells {list(ls)}, an earlier {element} {list(known)}",
                    file=orbital_path,
                    structure=sid,
                )
        self._read_info(src / "info.json")

        # Regroup by element: elements by first appearance, atoms stable inside an element.
        order = list(dict.fromkeys(self.elements))
        self.new_to_old = [a for element in order for a in range(n_atoms) if self.elements[a] == element]
        self.old_to_new = np.empty(n_atoms, dtype=np.int64)
        self.old_to_new[self.new_to_old] = np.arange(n_atoms)
        self.permutations = {el: _atom_permutation(ls) for el, ls in self.orbital_map.items()}

    def _read_info(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read as JSON: {error}", file=path, structure=self.sid) from None
        if not isinstance(raw, dict):
            raise DataError("expected a JSON object", file=path, structure=self.sid)
        nsites = raw.get("nsites", len(self.elements))
        if nsites != len(self.elements):
            raise DataError(
                f"= {nsites!r} but element.dat lists {len(self.elements)} atoms",
                file=path,
                structure=self.sid,
                key="nsites",
            )
        for key in ("isorthogonal", "isspinful"):
            if not isinstance(raw.get(key, False), bool):
                raise DataError(
                    f"= {raw[key]!r}; expected true or false", file=path, structure=self.sid, key=key
                )
        self.orthogonal = raw.get("isorthogonal", False)
        self.spinful = raw.get("isspinful", False)
        fermi = raw.get("fermi_level")
        if fermi is not None and (isinstance(fermi, bool) or not isinstance(fermi, int | float)):
            raise DataError(
                f"= {fermi!r}; expected a number (eV)", file=path, structure=self.sid, key="fermi_level"
            )
        self.fermi = None if fermi is None else float(fermi)
        given = raw.get("elements_orbital_map")
        if given is not None:
            for element, ls in self.orbital_map.items():
                if not isinstance(given, dict) or tuple(given.get(element, ())) != ls:
                    raise DataError(
                        f"disagrees with orbital_types.dat for {element} ({list(ls)})",
                        file=path,
                        structure=self.sid,
                        key="elements_orbital_map",
                    )

    def poscar(self) -> Poscar:
        return Poscar(
            comment=CONVERTED_COMMENT,
            lattice=self.lattice.copy(),
            elements=tuple(self.elements[a] for a in self.new_to_old),
            positions=self.positions[self.new_to_old].copy(),
        )

    def info(self) -> StructureInfo:
        return StructureInfo(
            atoms_quantity=len(self.elements),
            orbits_quantity=int(sum(2 * l + 1 for ls in self.atom_ls for l in ls)),
            orthogonal_basis=self.orthogonal,
            spinful=self.spinful,
            fermi_energy_eV=self.fermi,
            elements_orbital_map={el: self.orbital_map[el] for el in dict.fromkeys(self.elements)},
        )

    def _reorder(self, block: np.ndarray, old_i: int, old_j: int, key: str, path: Path) -> np.ndarray:
        perm_i = self.permutations[self.elements[old_i]]
        perm_j = self.permutations[self.elements[old_j]]
        ni, nj = len(perm_i), len(perm_j)
        if block.shape == (ni, nj):
            return block[np.ix_(perm_i, perm_j)]
        if self.spinful and block.shape == (2 * ni, 2 * nj):
            rows = np.concatenate([perm_i, perm_i + ni])
            cols = np.concatenate([perm_j, perm_j + nj])
            return block[np.ix_(rows, cols)]
        allowed = f"({ni}, {nj})" + (f" or ({2 * ni}, {2 * nj})" if self.spinful else "")
        raise DataError(
            f"block shape {block.shape}; orbital_types.dat gives {allowed}",
            file=path,
            structure=self.sid,
            key=key,
        )

    def matrix(self, path: Path) -> BlockMatrix:
        """Read one legacy matrix file and return it in the current format (pairs sorted)."""
        n_atoms = len(self.elements)
        converted: dict[tuple[int, ...], np.ndarray] = {}
        try:
            with h5py.File(path, "r") as handle:
                for key in handle:
                    node = handle[key]
                    try:
                        parsed = json.loads(key)
                    except json.JSONDecodeError:
                        parsed = None
                    ok = isinstance(parsed, list) and len(parsed) == 5
                    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in parsed):
                        raise DataError(
                            "expected a dataset keyed '[Rx, Ry, Rz, i, j]'",
                            file=path,
                            structure=self.sid,
                            key=key,
                        )
                    r1, r2, r3, i1, j1 = parsed
                    if not (1 <= i1 <= n_atoms and 1 <= j1 <= n_atoms):
                        raise DataError(
                            f"atom index outside 1..{n_atoms} (legacy atoms are 1-based)",
                            file=path,
                            structure=self.sid,
                            key=key,
                        )
                    if not isinstance(node, h5py.Dataset):
                        raise DataError(
                            "is a group, expected a dataset", file=path, structure=self.sid, key=key
                        )
                    try:
                        block = np.asarray(node[()])
                    except (OSError, ValueError, TypeError) as error:
                        raise DataError(
                            f"cannot read dataset: {error}", file=path, structure=self.sid, key=key
                        ) from None
                    if block.ndim != 2 or not (
                        np.issubdtype(block.dtype, np.floating)
                        or np.issubdtype(block.dtype, np.complexfloating)
                    ):
                        raise DataError(
                            f"expected a 2-D float or complex block, got {block.dtype} {block.shape}",
                            file=path,
                            structure=self.sid,
                            key=key,
                        )
                    new_i, new_j = int(self.old_to_new[i1 - 1]), int(self.old_to_new[j1 - 1])
                    pair = (r1, r2, r3, new_i, new_j)
                    if pair in converted:
                        raise DataError("duplicate atom pair", file=path, structure=self.sid, key=key)
                    converted[pair] = self._reorder(block, i1 - 1, j1 - 1, key, path)
        except DataError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise DataError(
                f"cannot open as HDF5 (truncated or corrupt file?): {error}", file=path, structure=self.sid
            ) from None
        pairs = sorted(converted)
        return BlockMatrix.from_blocks([list(p) for p in pairs], [converted[p] for p in pairs])


def convert_legacy(src: str | Path, dst: str | Path, *, sid: str | None = None) -> None:
    """Convert one legacy structure folder ``src`` into a DeepH-format folder ``dst``.

    Everything is read and checked before anything is written; each output file is written
    atomically. DataError (naming file, structure and key) on bad input.
    """
    src, dst = Path(src), Path(dst)
    sid = src.name if sid is None else sid
    if not src.is_dir():
        raise DataError("legacy structure folder not found", file=src, structure=sid)
    if dst.resolve() == src.resolve():
        raise DataError("destination is the source folder; choose another DST", file=dst, structure=sid)
    legacy = _LegacyStructure(src, sid)
    matrices = {
        new_name: legacy.matrix(src / old_name)
        for old_name, new_name in LEGACY_MATRIX_FILES.items()
        if (src / old_name).is_file()
    }
    dst.mkdir(parents=True, exist_ok=True)
    write_poscar(dst / "POSCAR", legacy.poscar())
    write_info(dst / "info.json", legacy.info())
    for new_name, matrix in matrices.items():
        write_matrix_h5(dst / new_name, matrix)


def is_legacy_structure(path: str | Path) -> bool:
    """True when ``path`` is a folder holding the legacy structure files (element.dat etc.)."""
    path = Path(path)
    return path.is_dir() and (path / "element.dat").is_file()


def convert_legacy_tree(src_root: str | Path, dst_root: str | Path, *, depth: int = 0) -> list[str]:
    """Convert every structure folder ``src_root/<t1>/.../<t_depth>/<sid>`` into the same place under
    ``dst_root``; returns the converted structure ids (paths relative to ``src_root``), sorted.

    Hidden folders are skipped; a folder at the structure level lacking a legacy file is an error.
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise DataError("legacy data folder not found", file=src_root)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise DataError(f"depth = {depth!r}; expected an integer >= 0", key="depth")
    level = [src_root]
    for _ in range(depth + 1):
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir())
        level = [folder for folder in level if not folder.name.startswith(".")]
    if not level:
        raise DataError(f"no structure folders {depth + 1} level(s) below", file=src_root)
    converted = []
    for folder in level:
        sid = folder.relative_to(src_root).as_posix()
        if not is_legacy_structure(folder):
            raise DataError(
                f"no element.dat: not a legacy structure folder (depth = {depth}; depth counts the "
                "folder levels between the data folder and the structure folders)",
                file=folder,
                structure=sid,
            )
        convert_legacy(folder, dst_root / sid, sid=sid)
        converted.append(sid)
    return converted
