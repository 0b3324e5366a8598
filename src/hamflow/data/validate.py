"""Validation of DeepH-format structure folders: every file present, parseable and consistent.

Per structure (:func:`validate_structure`), in this order:

1. the folder exists and is not empty;
2. ``POSCAR`` and ``info.json`` parse (their readers' checks);
3. ``info.json`` agrees with the POSCAR: ``atoms_quantity`` = number of atoms, every POSCAR element
   has an ``elements_orbital_map`` entry, ``orbits_quantity`` = sum over atoms of 2l+1;
4. each matrix file (required ones must exist) reads with its own integrity checks, then: dtype
   (overlap real; H / Rho real, or complex when ``spinful``), no NaN / Inf, atom indices inside the
   POSCAR, no repeated atom pair, block shapes = (n_i, n_j) orbitals of the two atoms (doubled for
   spinful H / Rho), an on-site block (0, 0, 0, i, i) for every atom, every pair's mirror
   (-R, j, i) present with ``M(R)_ij = M(-R)_ji^T`` (conjugate transpose for complex blocks), and for
   the overlap, on-site blocks with a positive diagonal that are positive definite;
5. ``atom_pairs`` is the same set of pairs in every matrix file (compared with ``overlap.h5``).

Mirror tolerance: ``max |M(R)_ij - M(-R)_ji^T| <= mirror_atol * max(1, s)`` with ``s`` the largest
absolute entry of the two blocks; with the default ``mirror_atol = 1e-6`` that is 1e-6 eV for H blocks
below 1 eV and a relative 1e-6 above. Real DFT data is far inside it: DeepH-dock's example files
(PySCF, OpenMX, ABACUS) are symmetric to 1.5e-8 eV at most (relative 5e-10).

Each file is reported once, by its first problem; a problem in one file does not cascade into others
(a file that failed its own checks is left out of the cross-file comparison, shape checks are skipped
when the orbital layout is unknown). Required matrix files: ``H`` and ``S`` by default (training
data); every other matrix file present among ``density_matrix.h5`` is checked too. Pass
``quantities`` to require and check exactly those (e.g. ``("S",)`` for inference inputs).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_write_text
from hamflow.data.discover import scan_dft_dir, structure_path
from hamflow.data.info import StructureInfo, read_info
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, read_matrix_h5
from hamflow.data.orbitals import atom_orbital_counts
from hamflow.data.poscar import Poscar, read_poscar
from hamflow.data.structure import INFO_FILE, POSCAR_FILE
from hamflow.errors import ConfigError, DataError, HamflowError

LOG = logging.getLogger(__name__)

DEFAULT_REQUIRED: tuple[str, ...] = ("H", "S")
"""Matrix files a training structure must have when no ``quantities`` are given."""
OPTIONAL_CHECKED: tuple[str, ...] = ("Rho",)
"""Matrix files checked when present (and no ``quantities`` are given)."""
SPIN_DOUBLED: frozenset[str] = frozenset({"H", "Rho", "H_pred", "Rho_pred"})
"""Quantities whose blocks are (2 n_i, 2 n_j) complex for spinful structures (S stays real)."""
BAD_STRUCTURE_POLICIES: tuple[str, ...] = ("fail", "skip")
FOLDER = "."
"""``StructureProblem.file`` of a problem with the folder itself."""
REPORT_FORMAT = "hamflow-validation-1"


@dataclass(frozen=True)
class StructureProblem:
    """One problem of one structure.

    sid:    structure id.
    file:   file name relative to the structure folder (``"."`` for the folder itself).
    key:    dataset / JSON key / POSCAR line at fault, or None.
    reason: what is wrong, with the bad value and what is expected.
    """

    sid: str
    file: str
    key: str | None
    reason: str

    def line(self) -> str:
        """The one-line message: ``structure <sid>: <file>: key '<key>': <reason>``."""
        return str(DataError(self.reason, file=self.file, structure=self.sid, key=self.key))


@dataclass
class ValidationReport:
    """Outcome of validating a set of structures.

    ok:       ids that passed every check, in the order validated.
    problems: every problem found, grouped by structure in the order validated.
    """

    ok: list[str] = field(default_factory=list)
    problems: list[StructureProblem] = field(default_factory=list)

    @property
    def bad(self) -> list[str]:
        """Ids with at least one problem, in order, each once."""
        return list(dict.fromkeys(problem.sid for problem in self.problems))

    @property
    def num_structures(self) -> int:
        return len(self.ok) + len(self.bad)

    def bad_lines(self) -> list[str]:
        """One line per bad structure: its first problem, plus how many more it has."""
        by_sid: dict[str, list[StructureProblem]] = {}
        for problem in self.problems:
            by_sid.setdefault(problem.sid, []).append(problem)
        lines = []
        for problems in by_sid.values():
            more = len(problems) - 1
            suffix = f" (+{more} more problem{'s' if more > 1 else ''} in this structure)" if more else ""
            lines.append(problems[0].line() + suffix)
        return lines

    def summary(self) -> str:
        """``validated 42 structures: 40 ok, 2 bad`` (``: 42 ok`` when all pass)."""
        bad = len(self.bad)
        noun = "structure" if self.num_structures == 1 else "structures"
        tail = f", {bad} bad" if bad else ""
        return f"validated {self.num_structures} {noun}: {len(self.ok)} ok{tail}"

    def to_json(self) -> str:
        document = {
            "format": REPORT_FORMAT,
            "summary": self.summary(),
            "ok": self.ok,
            "bad": self.bad,
            "problems": [
                {"sid": p.sid, "file": p.file, "key": p.key, "reason": p.reason, "line": p.line()}
                for p in self.problems
            ],
        }
        return json.dumps(document, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str | Path | None = None) -> ValidationReport:
        """Parse :meth:`to_json` output; :class:`DataError` naming ``source`` if it is not a report."""
        try:
            document = json.loads(text)
            if document.get("format") != REPORT_FORMAT:
                raise ValueError(f'expected "format": "{REPORT_FORMAT}"')
            ok = [str(sid) for sid in document["ok"]]
            problems = [
                StructureProblem(str(p["sid"]), str(p["file"]), p["key"], str(p["reason"]))
                for p in document["problems"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"not a hamflow validation report ({error})", file=source) from None
        return cls(ok=ok, problems=problems)

    def write(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> ValidationReport:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read the validation report: {error}", file=path) from None
        return cls.from_json(text, source=path)

    @classmethod
    def merge(cls, reports: Iterable[ValidationReport]) -> ValidationReport:
        """One report from several (e.g. one per shard), in the given order."""
        merged = cls()
        for report in reports:
            merged.ok.extend(report.ok)
            merged.problems.extend(report.problems)
        return merged


# ----------------------------------------------------------------------------- one structure


class _Found(Exception):
    """A problem of the file being checked (internal: carries key and reason)."""

    def __init__(self, key: str | None, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def _pair_text(row: np.ndarray) -> str:
    r1, r2, r3, i, j = (int(v) for v in row)
    return f"[{r1}, {r2}, {r3}, {i}, {j}]"


def _check_quantities(quantities: Sequence[str]) -> None:
    for name in quantities:
        if name not in MATRIX_FILES:
            raise ConfigError(
                "quantities", f"{name!r} is not a matrix quantity; allowed: {', '.join(MATRIX_FILES)}"
            )


def _check_info_against_poscar(info: StructureInfo, poscar: Poscar) -> tuple[str, str] | None:
    if info.atoms_quantity != poscar.num_atoms:
        return "atoms_quantity", f"= {info.atoms_quantity} but the POSCAR has {poscar.num_atoms} atoms"
    missing = sorted(set(poscar.elements) - set(info.elements_orbital_map))
    if missing:
        listed = ", ".join(sorted(info.elements_orbital_map))
        return (
            "elements_orbital_map",
            f"has no entry for POSCAR element(s) {', '.join(missing)} (it lists: {listed})",
        )
    orbitals = int(atom_orbital_counts(poscar.elements, info.elements_orbital_map).sum())
    if info.orbits_quantity != orbitals:
        return (
            "orbits_quantity",
            f"= {info.orbits_quantity} but elements_orbital_map gives {orbitals} orbitals for the POSCAR "
            "atoms (sum of 2l+1)",
        )
    return None


def _check_dtype(matrix: BlockMatrix, quantity: str, spinful: bool | None) -> None:
    is_complex = np.issubdtype(matrix.entries.dtype, np.complexfloating)
    if quantity not in SPIN_DOUBLED:
        if is_complex:
            raise _Found("entries", f"dtype {matrix.entries.dtype}; the overlap must be real (float)")
        return
    if spinful is None:
        return
    if spinful and not is_complex:
        raise _Found("entries", f"dtype {matrix.entries.dtype}; a spinful structure needs complex blocks")
    if not spinful and is_complex:
        raise _Found(
            "entries", f"dtype {matrix.entries.dtype}; info.json has spinful = false, expected real (float)"
        )


def _row_of_entry(matrix: BlockMatrix, position: int) -> int:
    return int(np.searchsorted(matrix.chunk_boundaries, position, side="right") - 1)


def _check_finite(matrix: BlockMatrix) -> None:
    finite = np.isfinite(matrix.entries)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    first = int(bad[0])
    value = matrix.entries[first]
    kind = "NaN" if np.isnan(value) else "Inf"
    row = _row_of_entry(matrix, first)
    raise _Found(
        "entries",
        f"{kind} in the block of pair {_pair_text(matrix.atom_pairs[row])} (row {row}); "
        f"{bad.size} non-finite entr{'y' if bad.size == 1 else 'ies'} in all",
    )


def _check_atom_indices(matrix: BlockMatrix, num_atoms: int | None) -> None:
    if num_atoms is None or matrix.num_pairs == 0:
        return
    atoms = matrix.atom_pairs[:, 3:]
    outside = np.flatnonzero((atoms >= num_atoms).any(axis=1))
    if outside.size:
        row = int(outside[0])
        index = int(atoms[row].max())
        raise _Found(
            "atom_pairs",
            f"row {row} {_pair_text(matrix.atom_pairs[row])}: atom index {index} out of range, "
            f"the structure has {num_atoms} atoms (0..{num_atoms - 1})",
        )


def _mirror_rows(matrix: BlockMatrix) -> np.ndarray:
    """(N,) int64: the row of each pair's mirror (-R, j, i), -1 when absent; _Found on duplicates."""
    rows = [tuple(row) for row in matrix.atom_pairs.tolist()]
    index: dict[tuple, int] = {}
    for n, key in enumerate(rows):
        first = index.setdefault(key, n)
        if first != n:
            raise _Found(
                "atom_pairs", f"row {n} repeats the pair {_pair_text(matrix.atom_pairs[n])} of row {first}"
            )
    return np.array(
        [index.get((-r1, -r2, -r3, j, i), -1) for r1, r2, r3, i, j in rows], dtype=np.int64
    ).reshape(len(rows))


def _check_shapes(matrix: BlockMatrix, counts: np.ndarray | None, factor: int) -> None:
    if counts is None or matrix.num_pairs == 0:
        return
    expected = np.stack([counts[matrix.atom_pairs[:, 3]], counts[matrix.atom_pairs[:, 4]]], axis=1) * factor
    wrong = np.flatnonzero((matrix.chunk_shapes != expected).any(axis=1))
    if wrong.size:
        row = int(wrong[0])
        spin = " x 2 (spinful)" if factor == 2 else ""
        raise _Found(
            "chunk_shapes",
            f"block of pair {_pair_text(matrix.atom_pairs[row])} (row {row}) has shape "
            f"{matrix.chunk_shapes[row].tolist()}; expected {expected[row].tolist()} "
            f"(sum of 2l+1 over the shells of atoms {int(matrix.atom_pairs[row, 3])} and "
            f"{int(matrix.atom_pairs[row, 4])}{spin}, wrong in {wrong.size} block(s))",
        )


def _onsite_rows(matrix: BlockMatrix, num_atoms: int | None) -> dict[int, int]:
    """{atom: row of its on-site pair}; _Found when an atom has none."""
    pairs = matrix.atom_pairs
    onsite = np.flatnonzero((pairs[:, :3] == 0).all(axis=1) & (pairs[:, 3] == pairs[:, 4]))
    rows = {int(pairs[n, 3]): int(n) for n in onsite}
    atoms = range(num_atoms) if num_atoms is not None else sorted(set(pairs[:, 3:].ravel().tolist()))
    for atom in atoms:
        if atom not in rows:
            raise _Found("atom_pairs", f"no on-site pair [0, 0, 0, {atom}, {atom}] for atom {atom}")
    return rows


def _check_mirrors(matrix: BlockMatrix, mirror: np.ndarray, atol: float) -> None:
    missing = np.flatnonzero(mirror < 0)
    if missing.size:
        row = int(missing[0])
        r1, r2, r3, i, j = (int(v) for v in matrix.atom_pairs[row])
        raise _Found(
            "atom_pairs",
            f"pair {_pair_text(matrix.atom_pairs[row])} (row {row}) has no mirror pair "
            f"[{-r1}, {-r2}, {-r3}, {j}, {i}] ({missing.size} pair(s) without a mirror)",
        )
    shapes, starts, entries = matrix.chunk_shapes, matrix.chunk_boundaries[:-1], matrix.entries
    mirrored_shape = shapes[mirror][:, ::-1]
    wrong = np.flatnonzero((shapes != mirrored_shape).any(axis=1))
    if wrong.size:
        row = int(wrong[0])
        raise _Found(
            "chunk_shapes",
            f"block of pair {_pair_text(matrix.atom_pairs[row])} has shape {shapes[row].tolist()} but its "
            f"mirror {_pair_text(matrix.atom_pairs[mirror[row]])} has {shapes[mirror[row]].tolist()}",
        )
    first_bad: tuple[int, float, float] | None = None
    for rows_n, cols_n in np.unique(shapes, axis=0).tolist():
        if rows_n * cols_n == 0:
            continue
        rows = np.flatnonzero((shapes[:, 0] == rows_n) & (shapes[:, 1] == cols_n))
        own = (np.arange(rows_n)[:, None] * cols_n + np.arange(cols_n)[None, :])[None]
        transposed = (np.arange(cols_n)[None, :] * rows_n + np.arange(rows_n)[:, None])[None]
        block = entries[starts[rows][:, None, None] + own]
        partner = np.conj(entries[starts[mirror[rows]][:, None, None] + transposed])
        diff = np.abs(block - partner).max(axis=(1, 2))
        scale = np.maximum(1.0, np.maximum(np.abs(block).max(axis=(1, 2)), np.abs(partner).max(axis=(1, 2))))
        bad = np.flatnonzero(diff > atol * scale)
        if bad.size and (first_bad is None or rows[bad[0]] < first_bad[0]):
            first_bad = (int(rows[bad[0]]), float(diff[bad[0]]), float(atol * scale[bad[0]]))
    if first_bad is not None:
        row, diff_max, tolerance = first_bad
        raise _Found(
            "entries",
            f"block of pair {_pair_text(matrix.atom_pairs[row])} differs from the transpose of its mirror "
            f"{_pair_text(matrix.atom_pairs[mirror[row]])} by {diff_max:.3g} (tolerance {tolerance:.3g}); "
            "expected M(R)_ij = M(-R)_ji^T",
        )


def _check_overlap_onsite(matrix: BlockMatrix, onsite: dict[int, int]) -> None:
    for atom, row in sorted(onsite.items()):
        block = matrix.block(row)
        if block.size == 0:
            continue
        diagonal = np.diag(block).real
        if (diagonal <= 0).any():
            orbital = int(np.flatnonzero(diagonal <= 0)[0])
            raise _Found(
                "entries",
                f"on-site overlap block of atom {atom} has diagonal entry {diagonal[orbital]:.6g} at orbital "
                f"{orbital}; <phi|phi> must be > 0",
            )
        lowest = float(np.linalg.eigvalsh(0.5 * (block + block.T)).min())
        if lowest <= 0:
            raise _Found(
                "entries",
                f"on-site overlap block of atom {atom} is not positive definite "
                f"(lowest eigenvalue {lowest:.6g})",
            )


def _check_matrix(
    matrix: BlockMatrix,
    quantity: str,
    *,
    num_atoms: int | None,
    counts: np.ndarray | None,
    spinful: bool | None,
    mirror_atol: float,
) -> None:
    """Raise _Found with the first problem of one matrix file (after its reader's own checks)."""
    _check_dtype(matrix, quantity, spinful)
    _check_finite(matrix)
    _check_atom_indices(matrix, num_atoms)
    mirror = _mirror_rows(matrix)
    factor = 2 if (spinful and quantity in SPIN_DOUBLED) else 1
    _check_shapes(matrix, counts, factor)
    onsite = _onsite_rows(matrix, num_atoms)
    _check_mirrors(matrix, mirror, mirror_atol)
    if quantity == "S":
        _check_overlap_onsite(matrix, onsite)


def _compare_pairs(matrix: BlockMatrix, reference: BlockMatrix, reference_file: str) -> None:
    here = {tuple(row) for row in matrix.atom_pairs.tolist()}
    there = {tuple(row) for row in reference.atom_pairs.tolist()}
    if here == there:
        return
    only_there = sorted(there - here)
    only_here = sorted(here - there)
    parts = []
    if only_there:
        parts.append(
            f"{len(only_there)} pair(s) of {reference_file} missing here (first {list(only_there[0])})"
        )
    if only_here:
        parts.append(f"{len(only_here)} pair(s) not in {reference_file} (first {list(only_here[0])})")
    raise _Found("atom_pairs", f"differs from {reference_file}: {'; '.join(parts)}")


def validate_structure(
    path: str | Path,
    sid: str,
    *,
    quantities: Sequence[str] | None = None,
    mirror_atol: float = 1e-6,
) -> list[StructureProblem]:
    """Check one structure folder; returns its problems (empty when it is sound).

    ``quantities`` (keys of ``MATRIX_FILES``): matrix files that must exist and are checked; None
    means H and S required, density_matrix.h5 checked when present. ``mirror_atol``: see the module
    docstring (eV for H). Never raises for bad data; :class:`ConfigError` for unknown quantities.
    """
    if quantities is not None:
        _check_quantities(quantities)
    path = Path(path)
    problems: list[StructureProblem] = []

    def report(file: str, key: str | None, reason: str) -> None:
        problems.append(StructureProblem(sid=sid, file=file, key=key, reason=reason))

    if not path.is_dir():
        if path.is_symlink():
            report(FOLDER, None, f"a symlink that leads to no folder (broken or looping): {path}")
        else:
            report(FOLDER, None, f"structure folder not found ({path})")
        return problems
    try:
        present = set(os.listdir(path))
    except OSError as error:
        report(FOLDER, None, f"cannot list the folder: {error}")
        return problems
    if not present:
        required = DEFAULT_REQUIRED if quantities is None else tuple(quantities)
        files = ", ".join([POSCAR_FILE, INFO_FILE, *(MATRIX_FILES[q] for q in required)])
        report(FOLDER, None, f"empty folder (expected {files})")
        return problems

    poscar: Poscar | None = None
    info: StructureInfo | None = None
    try:
        poscar = read_poscar(path / POSCAR_FILE, structure=sid)
    except DataError as error:
        report(POSCAR_FILE, error.key, error.reason)
    try:
        info = read_info(path / INFO_FILE, structure=sid)
    except DataError as error:
        report(INFO_FILE, error.key, error.reason)

    counts: np.ndarray | None = None
    if poscar is not None and info is not None:
        mismatch = _check_info_against_poscar(info, poscar)
        if mismatch is not None:
            report(INFO_FILE, *mismatch)
        if set(poscar.elements) <= set(info.elements_orbital_map):
            counts = atom_orbital_counts(poscar.elements, info.elements_orbital_map)
    num_atoms = poscar.num_atoms if poscar is not None else (info.atoms_quantity if info else None)
    spinful = info.spinful if info is not None else None

    if quantities is None:
        required = DEFAULT_REQUIRED
        checked = DEFAULT_REQUIRED + tuple(q for q in OPTIONAL_CHECKED if MATRIX_FILES[q] in present)
    else:
        required = checked = tuple(dict.fromkeys(quantities))
    sound: dict[str, BlockMatrix] = {}
    for quantity in checked:
        file = MATRIX_FILES[quantity]
        if file not in present:
            if quantity in required:
                report(
                    file, None, f"file not found (required: {', '.join(MATRIX_FILES[q] for q in required)})"
                )
            continue
        try:
            matrix = read_matrix_h5(path / file, structure=sid)
            _check_matrix(
                matrix, quantity, num_atoms=num_atoms, counts=counts, spinful=spinful, mirror_atol=mirror_atol
            )
        except DataError as error:
            report(file, error.key, error.reason)
            continue
        except _Found as found:
            report(file, found.key, found.reason)
            continue
        sound[quantity] = matrix

    if len(sound) > 1:
        reference_quantity = "S" if "S" in sound else next(iter(sound))
        reference_file = MATRIX_FILES[reference_quantity]
        for quantity, matrix in sound.items():
            if quantity == reference_quantity:
                continue
            try:
                _compare_pairs(matrix, sound[reference_quantity], reference_file)
            except _Found as found:
                report(MATRIX_FILES[quantity], found.key, found.reason)
    return problems


# ------------------------------------------------------------------------------------ many


def _validate_one(
    inputs_dir: str, sid: str, quantities: Sequence[str] | None, mirror_atol: float
) -> list[StructureProblem]:
    try:
        return validate_structure(
            structure_path(inputs_dir, sid), sid, quantities=quantities, mirror_atol=mirror_atol
        )
    except HamflowError:
        raise
    except Exception as error:  # a reader hit something unforeseen: still one line, never a traceback
        return [StructureProblem(sid, FOLDER, None, f"unexpected {type(error).__name__}: {error}")]


def validate_tree(
    inputs_dir: str | Path,
    *,
    depth: int,
    ids: Sequence[str] | None = None,
    quantities: Sequence[str] | None = None,
    n_jobs: int = 1,
    mirror_atol: float = 1e-6,
) -> ValidationReport:
    """Validate structures under ``inputs_dir/dft`` (``depth`` = ``data.dft.data_dir_depth``).

    ``ids`` None: every folder at the structure level, including incomplete ones (missing POSCAR or
    info.json, reported as problems). ``n_jobs`` > 1 validates in that many joblib processes, <= 0
    uses every core. The report keeps the order of ``ids`` (sorted when discovered).
    """
    if quantities is not None:
        _check_quantities(quantities)
    inputs_dir = os.fspath(inputs_dir)
    if ids is None:
        found = scan_dft_dir(Path(inputs_dir) / "dft", depth)
        ids = sorted(found.ids + found.incomplete)
    ids = list(ids)
    if n_jobs == 1 or len(ids) < 2:
        results = [_validate_one(inputs_dir, sid, quantities, mirror_atol) for sid in ids]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs if n_jobs > 0 else -1)(
            delayed(_validate_one)(inputs_dir, sid, quantities, mirror_atol) for sid in ids
        )
    report = ValidationReport()
    for sid, problems in zip(ids, results, strict=True):
        if problems:
            report.problems.extend(problems)
        else:
            report.ok.append(sid)
    return report


def apply_bad_structure_policy(report: ValidationReport, policy: str) -> list[str]:
    """The ids to use under ``[data.dft] on_bad_structure``.

    ``"fail"``: :class:`DataError` with the first bad structure's line (and how many more) when any
    structure is bad, else the ok ids. ``"skip"``: the ok ids, after one WARNING line per skipped id
    on the ``hamflow`` logger (never silent).
    """
    if policy not in BAD_STRUCTURE_POLICIES:
        raise ConfigError("data.dft.on_bad_structure", f'= {policy!r}; allowed: "fail", "skip"')
    lines = report.bad_lines()
    if not lines:
        return list(report.ok)
    if policy == "fail":
        more = len(lines) - 1
        others = f" (and {more} more bad structure{'s' if more > 1 else ''})" if more else ""
        raise DataError(
            f'{lines[0]}{others}; fix the data, or set [data.dft] on_bad_structure = "skip" to leave '
            "bad structures out"
        )
    for line in lines:
        LOG.warning("skipping bad %s", line)
    LOG.warning(
        'skipped %d bad structure(s) of %d (on_bad_structure = "skip")', len(lines), report.num_structures
    )
    return list(report.ok)
