"""A corpus of deliberately broken DeepH-format structures, each paired with its expected message.

:func:`build_corpus` writes, under ``root/dft/<case>/`` (data_dir_depth 0):

- valid structures: a tiny synthetic one (O H H in a 3 Angstrom periodic cell, pairs for R = 0 and
  R = +-a1, H / S / Rho blocks of a Hermitian random matrix), its spinful twin (complex H and Rho of
  shape (2 n_i, 2 n_j)), and, when the DeepH-dock data is present, a copy of one real H2O;
- broken variants of them, one fault each (:data:`CASES` lists each case's broken file, key and a
  fragment of the reason that :func:`hamflow.data.validate.validate_structure` must report),
  including structure folders that are not folders (a looping and a broken symlink);
- a regular file, :data:`STRAY_FILE`, where a structure folder belongs (a stray: reported by the
  walk as a warning, never a structure).

The ``broken_corpus`` fixture builds the corpus once per test session in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from hamflow.data.info import StructureInfo, write_info
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, read_matrix_h5, write_matrix_h5
from hamflow.data.orbitals import atom_orbital_offsets
from hamflow.data.poscar import Poscar, write_poscar

ELEMENTS = ("O", "H", "H")
ORBITAL_MAP = {"O": (0, 1), "H": (0,)}  # O: 1 + 3 orbitals, H: 1 -> 6 orbitals in all
CELL_SHIFTS = ((0, 0, 0), (1, 0, 0), (-1, 0, 0))
REAL_H2O = "h2o/dft/1009"


@dataclass(frozen=True)
class Case:
    """One broken structure: folder name, base structure, the fault, and the expected report."""

    name: str
    base: str  # "synthetic", "spinful" or "real"
    breaks: Callable[[Path], None]
    file: str
    key: str | None
    fragment: str


@dataclass(frozen=True)
class Corpus:
    root: Path  # the inputs_dir; structures under root/dft/<name>
    valid: list[str]
    cases: list[Case]

    def path(self, name: str) -> Path:
        return self.root / "dft" / name


# --------------------------------------------------------------------------- the valid structures


def _hermitian_blocks(
    rng: np.random.Generator, offsets: np.ndarray, *, spinful: bool, onsite: float, coupling: float
) -> BlockMatrix:
    """Blocks of M(R) for R in CELL_SHIFTS with M(-R) = M(R)^dagger and M(0) Hermitian.

    Spinful: the (2N, 2N) matrix is ordered [all up orbitals, all down orbitals]; each pair's block
    is [[uu, ud], [du, dd]] of shape (2 n_i, 2 n_j).
    """
    size = int(offsets[-1]) * (2 if spinful else 1)

    def draw() -> np.ndarray:
        real = rng.normal(size=(size, size))
        return real + 1j * rng.normal(size=(size, size)) if spinful else real

    m0 = draw() * coupling
    m0 = 0.5 * (m0 + m0.conj().T) + onsite * np.eye(size)
    m1 = draw() * coupling
    full = {(0, 0, 0): m0, (1, 0, 0): m1, (-1, 0, 0): m1.conj().T}
    n_orbitals = int(offsets[-1])
    pairs, blocks = [], []
    for shift in CELL_SHIFTS:
        for i in range(len(offsets) - 1):
            for j in range(len(offsets) - 1):
                rows = np.arange(offsets[i], offsets[i + 1])
                cols = np.arange(offsets[j], offsets[j + 1])
                if spinful:
                    rows = np.concatenate([rows, rows + n_orbitals])
                    cols = np.concatenate([cols, cols + n_orbitals])
                pairs.append([*shift, i, j])
                blocks.append(full[shift][np.ix_(rows, cols)])
    return BlockMatrix.from_blocks(pairs, blocks)


def write_valid_structure(folder: Path, *, spinful: bool = False, seed: int = 0) -> None:
    """POSCAR, info.json, overlap.h5, hamiltonian.h5, density_matrix.h5 of the tiny test structure."""
    rng = np.random.default_rng(seed)
    positions = np.array([[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]]) + 1.0
    write_poscar(
        folder / "POSCAR",
        Poscar(comment="broken-corpus base", lattice=np.eye(3) * 3.0, elements=ELEMENTS, positions=positions),
    )
    offsets = atom_orbital_offsets(ELEMENTS, ORBITAL_MAP)
    write_info(
        folder / "info.json",
        StructureInfo(
            atoms_quantity=len(ELEMENTS),
            orbits_quantity=int(offsets[-1]),
            orthogonal_basis=False,
            spinful=spinful,
            fermi_energy_eV=-3.5,
            elements_orbital_map=dict(ORBITAL_MAP),
            occupation=8.0,
        ),
    )
    write_matrix_h5(
        folder / MATRIX_FILES["S"],
        _hermitian_blocks(rng, offsets, spinful=False, onsite=1.0, coupling=0.02),
    )
    write_matrix_h5(
        folder / MATRIX_FILES["H"],
        _hermitian_blocks(rng, offsets, spinful=spinful, onsite=-5.0, coupling=1.0),
    )
    write_matrix_h5(
        folder / MATRIX_FILES["Rho"],
        _hermitian_blocks(rng, offsets, spinful=spinful, onsite=1.0, coupling=0.1),
    )


# ------------------------------------------------------------------------------------- the faults


def _edit_matrix(file: str, change: Callable[[BlockMatrix], BlockMatrix]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / file
        write_matrix_h5(path, change(read_matrix_h5(path)))

    return apply


def _edit_blocks(
    file: str, change: Callable[[list[list[int]], list[np.ndarray]], None]
) -> Callable[[Path], None]:
    """Rebuild a matrix file from its (pairs, blocks) lists after ``change`` edits them in place."""

    def rebuild(matrix: BlockMatrix) -> BlockMatrix:
        pairs = matrix.atom_pairs.tolist()
        blocks = [matrix.block(n).copy() for n in range(matrix.num_pairs)]
        change(pairs, blocks)
        return BlockMatrix.from_blocks(pairs, blocks)

    return _edit_matrix(file, rebuild)


def _edit_h5(file: str, change: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        with h5py.File(folder / file, "r+") as handle:
            change(handle)

    return apply


def _replace_dataset(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        data = handle[name][()]
        del handle[name]
        handle.create_dataset(name, data=make(data))

    return change


def _edit_info(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "info.json"
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))

    return apply


def _edit_poscar_lines(change: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "POSCAR"
        path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")

    return apply


def _truncate(file: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / file
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return apply


def _write_text(file: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_text(text)


def _delete(file: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).unlink()


def _empty_folder(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()


def _looping_symlink(folder: Path) -> None:
    """The structure folder replaced by a symlink to itself (ELOOP on every access)."""
    shutil.rmtree(folder)
    folder.symlink_to(folder.name)


def _broken_symlink(folder: Path) -> None:
    """The structure folder replaced by a symlink to a folder that does not exist."""
    shutil.rmtree(folder)
    folder.symlink_to(folder.parent / ".gone" / folder.name)


def _row(pairs: list[list[int]], pair: list[int]) -> int:
    return pairs.index(pair)


def _set_entry(pair: list[int], value: float) -> Callable[[list[list[int]], list[np.ndarray]], None]:
    def change(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
        blocks[_row(pairs, pair)][0, 0] = value

    return change


def _remove_pairs(*remove: list[int]) -> Callable[[list[list[int]], list[np.ndarray]], None]:
    def change(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
        for pair in remove:
            row = _row(pairs, pair)
            del pairs[row], blocks[row]

    return change


def _widen_block(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    row = _row(pairs, [0, 0, 0, 0, 1])
    blocks[row] = np.concatenate([blocks[row], blocks[row]], axis=1)  # (4, 1) -> (4, 2)


def _index_out_of_range(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    pairs[_row(pairs, [1, 0, 0, 1, 2])][4] = 7


def _duplicate_pair(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    row = _row(pairs, [0, 0, 0, 1, 2])
    pairs.append(list(pairs[row]))
    blocks.append(blocks[row].copy())


def _perturb_offsite(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    blocks[_row(pairs, [1, 0, 0, 0, 1])][2, 0] += 0.1


def _negative_overlap_diagonal(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    blocks[_row(pairs, [0, 0, 0, 1, 1])][0, 0] = -0.5


def _indefinite_overlap(pairs: list[list[int]], blocks: list[np.ndarray]) -> None:
    block = blocks[_row(pairs, [0, 0, 0, 0, 0])]
    block[0, 1] = block[1, 0] = 2.0


def _real_spinful_entries(folder: Path) -> None:
    path = folder / MATRIX_FILES["H"]
    matrix = read_matrix_h5(path)
    matrix.entries = matrix.entries.real.copy()
    write_matrix_h5(path, matrix)


def _complex_overlap(folder: Path) -> None:
    path = folder / MATRIX_FILES["S"]
    matrix = read_matrix_h5(path)
    matrix.entries = matrix.entries.astype(np.complex128)
    write_matrix_h5(path, matrix)


H, S, RHO = MATRIX_FILES["H"], MATRIX_FILES["S"], MATRIX_FILES["Rho"]

CASES: list[Case] = [
    # -- matrix files: their own integrity (the reader's checks) --
    Case("truncated_h5", "synthetic", _truncate(H), H, None, "cannot open as HDF5 (truncated or corrupt"),
    Case(
        "not_an_h5", "synthetic", _write_text(S, "these are not the blocks\n"), S, None, "cannot open as HDF5"
    ),
    Case(
        "missing_dataset",
        "synthetic",
        _edit_h5(H, lambda handle: handle.__delitem__("chunk_shapes")),
        H,
        "chunk_shapes",
        "dataset missing",
    ),
    Case(
        "atom_pairs_float_dtype",
        "synthetic",
        _edit_h5(H, _replace_dataset("atom_pairs", lambda a: a.astype(np.float64))),
        H,
        "atom_pairs",
        "expected integers",
    ),
    Case(
        "chunk_boundaries_inconsistent",
        "synthetic",
        _edit_h5(
            RHO, _replace_dataset("chunk_boundaries", lambda b: np.concatenate([b[:3], b[3:4] + 1, b[4:]]))
        ),
        RHO,
        "chunk_boundaries",
        "block 2 spans",
    ),
    # -- matrix files: values and consistency with POSCAR / info.json --
    Case("overlap_complex_dtype", "synthetic", _complex_overlap, S, "entries", "the overlap must be real"),
    Case(
        "spinful_real_entries",
        "spinful",
        _real_spinful_entries,
        H,
        "entries",
        "a spinful structure needs complex blocks",
    ),
    Case(
        "nan_entries",
        "synthetic",
        _edit_blocks(H, _set_entry([0, 0, 0, 1, 2], np.nan)),
        H,
        "entries",
        "NaN in the block of pair [0, 0, 0, 1, 2]",
    ),
    Case(
        "inf_entries",
        "synthetic",
        _edit_blocks(RHO, _set_entry([1, 0, 0, 2, 0], np.inf)),
        RHO,
        "entries",
        "Inf in the block of pair [1, 0, 0, 2, 0]",
    ),
    Case(
        "atom_index_out_of_range",
        "synthetic",
        _edit_blocks(H, _index_out_of_range),
        H,
        "atom_pairs",
        "atom index 7 out of range, the structure has 3 atoms (0..2)",
    ),
    Case(
        "duplicate_pair",
        "synthetic",
        _edit_blocks(S, _duplicate_pair),
        S,
        "atom_pairs",
        "repeats the pair [0, 0, 0, 1, 2]",
    ),
    Case(
        "block_shape_wrong",
        "synthetic",
        _edit_blocks(H, _widen_block),
        H,
        "chunk_shapes",
        "has shape [4, 2]; expected [4, 1]",
    ),
    Case(
        "missing_onsite_pair",
        "synthetic",
        _edit_blocks(H, _remove_pairs([0, 0, 0, 2, 2])),
        H,
        "atom_pairs",
        "no on-site pair [0, 0, 0, 2, 2] for atom 2",
    ),
    Case(
        "non_mirrored_pair",
        "synthetic",
        _edit_blocks(H, _remove_pairs([-1, 0, 0, 1, 0])),
        H,
        "atom_pairs",
        "pair [1, 0, 0, 0, 1] (row 10) has no mirror pair [-1, 0, 0, 1, 0]",
    ),
    Case(
        "mirror_values_disagree",
        "synthetic",
        _edit_blocks(H, _perturb_offsite),
        H,
        "entries",
        "block of pair [1, 0, 0, 0, 1] differs from the transpose of its mirror [-1, 0, 0, 1, 0] by 0.1",
    ),
    Case(
        "atom_pairs_differ_between_h_and_s",
        "synthetic",
        _edit_blocks(H, _remove_pairs([1, 0, 0, 0, 2], [-1, 0, 0, 2, 0])),
        H,
        "atom_pairs",
        "differs from overlap.h5: 2 pair(s) of overlap.h5 missing here (first [-1, 0, 0, 2, 0])",
    ),
    Case(
        "overlap_onsite_negative",
        "synthetic",
        _edit_blocks(S, _negative_overlap_diagonal),
        S,
        "entries",
        "on-site overlap block of atom 1 has diagonal entry -0.5",
    ),
    Case(
        "overlap_onsite_indefinite",
        "synthetic",
        _edit_blocks(S, _indefinite_overlap),
        S,
        "entries",
        "on-site overlap block of atom 0 is not positive definite",
    ),
    Case(
        "missing_hamiltonian",
        "synthetic",
        _delete(H),
        H,
        None,
        "file not found (required: hamiltonian.h5, overlap.h5)",
    ),
    # -- info.json --
    Case("missing_info_json", "synthetic", _delete("info.json"), "info.json", None, "file not found"),
    Case(
        "info_json_not_json",
        "synthetic",
        _write_text("info.json", '{"atoms_quantity": 3,'),
        "info.json",
        None,
        "not valid JSON",
    ),
    Case(
        "info_missing_key",
        "synthetic",
        _edit_info(lambda d: d.pop("spinful")),
        "info.json",
        "spinful",
        "missing",
    ),
    Case(
        "info_wrong_type",
        "synthetic",
        _edit_info(lambda d: d.update(atoms_quantity="3")),
        "info.json",
        "atoms_quantity",
        "= '3'; expected a positive integer",
    ),
    Case(
        "wrong_orbital_count",
        "synthetic",
        _edit_info(lambda d: d.update(orbits_quantity=7)),
        "info.json",
        "orbits_quantity",
        "= 7 but elements_orbital_map gives 6 orbitals",
    ),
    Case(
        "atoms_quantity_vs_poscar",
        "synthetic",
        _edit_info(lambda d: d.update(atoms_quantity=4)),
        "info.json",
        "atoms_quantity",
        "= 4 but the POSCAR has 3 atoms",
    ),
    Case(
        "element_missing_from_map",
        "synthetic",
        _edit_info(lambda d: d["elements_orbital_map"].pop("H")),
        "info.json",
        "elements_orbital_map",
        "has no entry for POSCAR element(s) H (it lists: O)",
    ),
    # -- POSCAR --
    Case(
        "poscar_non_numeric",
        "synthetic",
        _edit_poscar_lines(lambda lines: [*lines[:3], "  3.0 zero 0.0", *lines[4:]]),
        "POSCAR",
        "line 4 (lattice vector)",
        "expected 3 numbers, got '3.0 zero 0.0'",
    ),
    Case(
        "poscar_missing_lines",
        "synthetic",
        _edit_poscar_lines(lambda lines: lines[:9]),
        "POSCAR",
        "line 10 (position)",
        "file ends after 9 lines",
    ),
    Case(
        "poscar_counts_mismatch",
        "synthetic",
        _edit_poscar_lines(lambda lines: [*lines[:6], "1 2 1", *lines[7:]]),
        "POSCAR",
        "line 7 (atom counts)",
        "3 counts for 2 element symbols",
    ),
    Case(
        "poscar_unknown_element",
        "synthetic",
        _edit_poscar_lines(lambda lines: [*lines[:5], "O Xx", *lines[6:]]),
        "POSCAR",
        "line 6 (element symbols)",
        "'Xx' is not an element symbol",
    ),
    Case("missing_poscar", "synthetic", _delete("POSCAR"), "POSCAR", None, "file not found"),
    Case("empty_folder", "synthetic", _empty_folder, ".", None, "empty folder (expected POSCAR, info.json"),
    # -- the structure folder itself is not one (discover counts these as incomplete folders) --
    Case("looping_symlink", "synthetic", _looping_symlink, ".", None, "a symlink that leads to no folder"),
    Case("broken_symlink", "synthetic", _broken_symlink, ".", None, "a symlink that leads to no folder"),
    # -- faults in a copy of real DFT data (DeepH-dock's H2O; only when ../shared is present) --
    Case(
        "real_nan_entries",
        "real",
        _edit_blocks(H, _set_entry([0, 0, 0, 0, 1], np.nan)),
        H,
        "entries",
        "NaN in the block of pair [0, 0, 0, 0, 1]",
    ),
    Case("real_truncated_overlap", "real", _truncate(S), S, None, "cannot open as HDF5"),
    Case(
        "real_mirror_values_disagree",
        "real",
        _edit_blocks(RHO, _set_entry([0, 0, 0, 2, 0], 0.25)),
        RHO,
        "entries",
        "block of pair [0, 0, 0, 0, 2] differs from the transpose of its mirror [0, 0, 0, 2, 0]",
    ),
]

STRAY_FILE = "stray_file.txt"
"""A regular file beside the structure folders: not a structure, reported as a warning by the walk."""

VALID_BASES = {"synthetic": "valid_synthetic", "spinful": "valid_spinful", "real": "valid_real_h2o"}


def build_corpus(root: Path, deeph_dock: Path | None) -> Corpus:
    """Write the valid structures and every case (the "real" ones only with ``deeph_dock``)."""
    dft = root / "dft"
    bases: dict[str, Path] = {}
    for base, name in VALID_BASES.items():
        folder = dft / name
        if base == "real":
            if deeph_dock is None:
                continue
            shutil.copytree(deeph_dock / REAL_H2O, folder)
        else:
            folder.mkdir(parents=True)
            write_valid_structure(folder, spinful=base == "spinful", seed=len(bases))
        bases[base] = folder
    cases = [case for case in CASES if case.base in bases]
    for case in cases:
        folder = dft / case.name
        shutil.copytree(bases[case.base], folder)
        case.breaks(folder)
    (dft / STRAY_FILE).write_text("a regular file where a structure folder belongs\n")
    return Corpus(root=root, valid=[VALID_BASES[base] for base in bases], cases=cases)


@pytest.fixture(scope="session", name="broken_corpus")
def broken_corpus_fixture(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Corpus:
    """The corpus in a session temp folder; real-data cases only when the DeepH-dock data is present."""
    try:
        deeph_dock = request.getfixturevalue("deeph_dock")
    except pytest.skip.Exception:
        deeph_dock = None
    return build_corpus(tmp_path_factory.mktemp("broken-corpus"), deeph_dock)
