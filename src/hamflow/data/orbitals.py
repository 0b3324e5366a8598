"""Element symbols and the per-atom orbital layout defined by ``elements_orbital_map``.

An atom's orbitals are its shells in ``elements_orbital_map[element]`` order, each shell of angular
momentum l contributing 2l+1 real spherical harmonics (m = -l..l, standard order). Counts here are
spinless; spinful matrices double them (see :mod:`hamflow.data.kspace`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hamflow.errors import DataError

# Index = atomic number (index 0 is a placeholder, never a valid element).
_SYMBOLS: tuple[str, ...] = (
    "X",
    "H", "He",
    "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba",
    "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra",
    "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr",
    "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn",
    "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip
_NUMBERS: dict[str, int] = {symbol: z for z, symbol in enumerate(_SYMBOLS) if z > 0}
MAX_ATOMIC_NUMBER: int = len(_SYMBOLS) - 1


def is_element_symbol(symbol: str) -> bool:
    """True when ``symbol`` is a chemical element symbol spelled as in the periodic table ("Mo")."""
    return symbol in _NUMBERS


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol ("Mo" -> 42); DataError for anything else."""
    try:
        return _NUMBERS[symbol]
    except (KeyError, TypeError):
        raise DataError(
            f"unknown element symbol {symbol!r} (expected a periodic-table symbol such as 'H', 'Mo')"
        ) from None


def element_symbol(z: int) -> str:
    """Element symbol of atomic number ``z`` (1..118); DataError for anything else."""
    if isinstance(z, bool) or not isinstance(z, int | np.integer) or not 1 <= int(z) <= MAX_ATOMIC_NUMBER:
        raise DataError(f"invalid atomic number {z!r} (allowed: integers 1..{MAX_ATOMIC_NUMBER})")
    return _SYMBOLS[int(z)]


def shell_ls(element: str, elements_orbital_map: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """Angular momenta l of the element's shells, in basis order (e.g. (0, 0, 1, 1, 2) for O)."""
    try:
        return tuple(int(l) for l in elements_orbital_map[element])
    except KeyError:
        known = ", ".join(sorted(elements_orbital_map)) or "none"
        raise DataError(
            f"element {element!r} has no entry in elements_orbital_map (it lists: {known})",
            key="elements_orbital_map",
        ) from None


def atom_orbital_counts(
    elements: Sequence[str], elements_orbital_map: Mapping[str, Sequence[int]]
) -> np.ndarray:
    """(n_atoms,) int64: number of (spinless) orbitals of each atom, sum over shells of 2l+1."""
    per_element = {el: sum(2 * l + 1 for l in shell_ls(el, elements_orbital_map)) for el in set(elements)}
    return np.array([per_element[el] for el in elements], dtype=np.int64)


def atom_orbital_offsets(
    elements: Sequence[str], elements_orbital_map: Mapping[str, Sequence[int]]
) -> np.ndarray:
    """(n_atoms+1,) int64: start of each atom's orbitals in the structure's basis; last = n_orbitals."""
    counts = atom_orbital_counts(elements, elements_orbital_map)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets
