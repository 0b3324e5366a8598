"""One DeepH-format structure folder loaded into memory: POSCAR + info.json + matrix files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamflow.data.info import StructureInfo, read_info
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, read_matrix_h5
from hamflow.data.orbitals import atom_orbital_offsets, atomic_number
from hamflow.data.poscar import Poscar, read_poscar
from hamflow.errors import DataError

POSCAR_FILE = "POSCAR"
INFO_FILE = "info.json"


@dataclass
class Structure:
    """A structure and the matrices that were loaded for it.

    sid:      structure id (as used in dataset_split.json).
    path:     the structure's folder.
    matrices: {quantity: BlockMatrix} for the quantities (keys of MATRIX_FILES) that were loaded.
    """

    sid: str
    path: Path
    poscar: Poscar
    info: StructureInfo
    matrices: dict[str, BlockMatrix] = field(default_factory=dict)

    @property
    def elements(self) -> tuple[str, ...]:
        return self.poscar.elements

    @property
    def atomic_numbers(self) -> np.ndarray:
        """(n_atoms,) int64 atomic numbers in POSCAR order."""
        return np.array([atomic_number(el) for el in self.poscar.elements], dtype=np.int64)

    @property
    def orbital_offsets(self) -> np.ndarray:
        """(n_atoms+1,) int64 start of each atom's (spinless) orbitals; the last is the orbital count."""
        return atom_orbital_offsets(self.poscar.elements, self.info.elements_orbital_map)


def _check_quantities(names: Sequence[str], what: str) -> None:
    for name in names:
        if name not in MATRIX_FILES:
            raise DataError(f"unknown {what} {name!r}; allowed: {', '.join(MATRIX_FILES)}", key=what)


def load_structure(
    path: str | Path,
    *,
    sid: str | None = None,
    quantities: Sequence[str] = ("H", "S"),
    required: Sequence[str] | None = None,
) -> Structure:
    """Read POSCAR, info.json and the matrix files of ``quantities`` that exist in ``path``.

    ``required`` (default: all of ``quantities``) must exist, else DataError naming the missing file.
    ``sid`` defaults to the folder name. Each file's own integrity is checked by its reader; the
    consistency between files is checked by :mod:`hamflow.data` validation, not here.
    """
    path = Path(path)
    sid = path.name if sid is None else sid
    required = tuple(quantities) if required is None else tuple(required)
    _check_quantities(quantities, "quantities")
    _check_quantities(required, "required")
    if not path.is_dir():
        raise DataError("structure folder not found", file=path, structure=sid)
    poscar = read_poscar(path / POSCAR_FILE, structure=sid)
    info = read_info(path / INFO_FILE, structure=sid)
    matrices: dict[str, BlockMatrix] = {}
    for name in dict.fromkeys((*quantities, *required)):
        file = path / MATRIX_FILES[name]
        if file.is_file():
            matrices[name] = read_matrix_h5(file, structure=sid)
        elif name in required:
            raise DataError(f"required {name} file is missing", file=file, structure=sid)
    return Structure(sid=sid, path=path, poscar=poscar, info=info, matrices=matrices)
