"""VASP POSCAR reader and writer (the structure file of the DeepH format).

Reads: one or three scaling factors (a negative single factor is the cell volume in Angstrom^3),
the element-symbol line (VASP 5; POTCAR-style suffixes such as ``Mo_pv`` or ``Te/3a1f`` are
stripped; without it, VASP 4 style, the symbols are taken from the comment line), an optional
``Selective dynamics`` line, and ``Direct`` or ``Cartesian`` positions (Cartesian positions are scaled
like the lattice). Writes: scale 1.0, Cartesian positions, exact float round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_write_text
from hamflow.data.orbitals import is_element_symbol
from hamflow.errors import DataError


@dataclass(frozen=True)
class Poscar:
    """A structure as read from (or to be written to) a POSCAR.

    comment:   the first line (free text).
    lattice:   (3, 3) float64, rows are the lattice vectors a1, a2, a3 in Angstrom (scale applied).
    elements:  per-atom element symbols, file order (grouped by element).
    positions: (n_atoms, 3) float64 Cartesian positions in Angstrom.
    """

    comment: str
    lattice: np.ndarray
    elements: tuple[str, ...]
    positions: np.ndarray = field(repr=False)

    @property
    def num_atoms(self) -> int:
        return len(self.elements)

    @property
    def groups(self) -> tuple[tuple[str, int], ...]:
        """Runs of equal elements in file order, e.g. (("Te", 2), ("Mo", 1))."""
        runs: list[list] = []
        for element in self.elements:
            if runs and runs[-1][0] == element:
                runs[-1][1] += 1
            else:
                runs.append([element, 1])
        return tuple((element, count) for element, count in runs)

    @property
    def fractional_positions(self) -> np.ndarray:
        """(n_atoms, 3) positions in units of the lattice vectors (not wrapped into [0, 1))."""
        return np.linalg.solve(self.lattice.T, self.positions.T).T


class _Lines:
    """The file's lines with 1-based numbering for error messages."""

    def __init__(self, text: str, path: Path, structure: str | None) -> None:
        self.lines = text.splitlines()
        self.path = path
        self.structure = structure

    def error(self, number: int, what: str, reason: str) -> DataError:
        return DataError(reason, file=self.path, structure=self.structure, key=f"line {number} ({what})")

    def get(self, number: int, what: str) -> str:
        if number > len(self.lines):
            raise self.error(number, what, f"file ends after {len(self.lines)} lines")
        return self.lines[number - 1]

    def floats(self, number: int, what: str, count: int) -> list[float]:
        tokens = self.get(number, what).split()
        try:
            values = [float(token) for token in tokens[:count]]
        except ValueError:
            raise self.error(number, what, f"expected {count} numbers, got {' '.join(tokens)!r}") from None
        if len(values) < count:
            raise self.error(number, what, f"expected {count} numbers, got {' '.join(tokens)!r}")
        if not np.all(np.isfinite(values)):
            raise self.error(number, what, f"non-finite number in {' '.join(tokens)!r}")
        return values


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _clean_symbol(token: str) -> str:
    """``Mo_pv`` -> ``Mo``, ``Te/3a1f`` -> ``Te`` (POTCAR labels), ``mo`` -> ``Mo``."""
    base = token.split("/")[0].split("_")[0]
    return base[:1].upper() + base[1:].lower()


def _read_scale(lines: _Lines) -> float | np.ndarray:
    tokens = lines.get(2, "scaling factor").split()
    numbers = []
    for token in tokens[:3]:
        if not _is_number(token):
            break
        numbers.append(float(token))
    if len(numbers) == 1:
        value = numbers[0]
        if value == 0.0 or not np.isfinite(value):
            raise lines.error(2, "scaling factor", f"scaling factor {value} is not allowed (nonzero finite)")
        return value
    if len(numbers) == 3:
        scale = np.array(numbers)
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            raise lines.error(2, "scaling factor", f"three scaling factors must be positive, got {numbers}")
        return scale
    raise lines.error(2, "scaling factor", f"expected 1 or 3 numbers, got {' '.join(tokens)!r}")


def _read_species(lines: _Lines) -> tuple[list[str], list[int], int]:
    """Symbols and counts; returns the number of the counts line."""
    line6 = lines.get(6, "element symbols").split()
    if not line6:
        raise lines.error(6, "element symbols", "empty line")
    if _is_number(line6[0]):
        counts_line = 6
        counts_tokens = line6
        symbols = None
    else:
        counts_line = 7
        counts_tokens = lines.get(7, "atom counts").split()
        symbols = [_clean_symbol(token) for token in line6]
    counts: list[int] = []
    for token in counts_tokens:
        if not _is_number(token):
            break
        try:
            counts.append(int(token))
        except ValueError:
            raise lines.error(counts_line, "atom counts", f"count {token!r} is not an integer") from None
    if not counts or any(count <= 0 for count in counts):
        raise lines.error(counts_line, "atom counts", f"expected positive integers, got {counts_tokens}")
    if symbols is None:
        comment_tokens = [_clean_symbol(token) for token in lines.get(1, "comment").split()]
        candidates = comment_tokens[: len(counts)]
        if len(candidates) != len(counts) or not all(is_element_symbol(s) for s in candidates):
            raise lines.error(
                6,
                "element symbols",
                "no element-symbol line (VASP 4 format) and the comment line does not list "
                f"{len(counts)} element symbols",
            )
        symbols = candidates
    else:
        if len(symbols) != len(counts):
            raise lines.error(
                counts_line, "atom counts", f"{len(counts)} counts for {len(symbols)} element symbols"
            )
        for symbol, token in zip(symbols, line6, strict=False):
            if not is_element_symbol(symbol):
                raise lines.error(6, "element symbols", f"{token!r} is not an element symbol")
    return symbols, counts, counts_line


def read_poscar(path: str | Path, *, structure: str | None = None) -> Poscar:
    """Read a POSCAR file; any problem raises DataError naming the file, structure and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", file=path, structure=structure) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read: {error}", file=path, structure=structure) from None
    lines = _Lines(text, path, structure)
    comment = lines.get(1, "comment")
    scale = _read_scale(lines)
    raw_lattice = np.array([lines.floats(n, "lattice vector", 3) for n in (3, 4, 5)], dtype=np.float64)
    symbols, counts, counts_line = _read_species(lines)

    mode_line = counts_line + 1
    mode = lines.get(mode_line, "coordinate mode").strip()
    if mode[:1] in ("s", "S"):
        mode_line += 1
        mode = lines.get(mode_line, "coordinate mode").strip()
    if not mode:
        raise lines.error(mode_line, "coordinate mode", "empty; expected 'Direct' or 'Cartesian'")
    cartesian = mode[0] in "cCkK"

    if isinstance(scale, np.ndarray):
        lattice = raw_lattice * scale[None, :]
    elif scale < 0:
        volume = abs(np.linalg.det(raw_lattice))
        if volume == 0.0:
            raise lines.error(3, "lattice vector", "lattice vectors are linearly dependent (zero volume)")
        scale = (-scale / volume) ** (1.0 / 3.0)
        lattice = raw_lattice * scale
    else:
        lattice = raw_lattice * scale
    if abs(np.linalg.det(lattice)) < 1e-12:
        raise lines.error(3, "lattice vector", "lattice vectors are linearly dependent (zero volume)")

    num_atoms = sum(counts)
    coords = np.array(
        [lines.floats(mode_line + 1 + a, "position", 3) for a in range(num_atoms)], dtype=np.float64
    ).reshape(num_atoms, 3)
    if cartesian:
        positions = coords * (scale if isinstance(scale, np.ndarray) else float(scale))
    else:
        positions = coords @ lattice
    elements = tuple(symbol for symbol, count in zip(symbols, counts, strict=True) for _ in range(count))
    return Poscar(comment=comment, lattice=lattice, elements=elements, positions=positions)


def poscar_text(poscar: Poscar) -> str:
    """The POSCAR file content: scale 1.0, Cartesian, floats written with full round-trip precision."""
    lattice = np.asarray(poscar.lattice, dtype=np.float64)
    positions = np.asarray(poscar.positions, dtype=np.float64)
    if lattice.shape != (3, 3):
        raise DataError(f"lattice has shape {lattice.shape}, expected (3, 3)", key="lattice")
    if positions.shape != (len(poscar.elements), 3):
        raise DataError(
            f"positions have shape {positions.shape}, expected ({len(poscar.elements)}, 3)", key="positions"
        )
    groups = poscar.groups
    seen: set[str] = set()
    for element, _ in groups:
        if element in seen:
            raise DataError(
                f"atoms of {element} are not contiguous ({' '.join(poscar.elements)}); "
                "a POSCAR groups atoms by element",
                key="elements",
            )
        if not is_element_symbol(element):
            raise DataError(f"{element!r} is not an element symbol", key="elements")
        seen.add(element)

    def row(values: np.ndarray) -> str:
        return "  " + "  ".join(repr(float(v)) for v in values)

    comment = " ".join(poscar.comment.splitlines()) or "hamflow"
    out = [comment, "1.0"]
    out += [row(vector) for vector in lattice]
    out.append(" ".join(element for element, _ in groups))
    out.append(" ".join(str(count) for _, count in groups))
    out.append("Cartesian")
    out += [row(position) for position in positions]
    return "\n".join(out) + "\n"


def write_poscar(path: str | Path, poscar: Poscar) -> None:
    """Write ``poscar`` atomically; DataError when atoms of one element are not contiguous."""
    text = poscar_text(poscar)
    atomic_write_text(path, text)
