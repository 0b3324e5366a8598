"""The common orbital basis every atom's blocks are padded into, and the maps into it.

A basis is a list of shells, each with an angular momentum l (2l+1 orbitals, m = -l..l in the
standard real-spherical-harmonic order). The common basis holds its shells sorted by l; for each l it
has as many shells as the element that has the most of them (DeepH-pack's union rule), or as many as
the user asks for with a string such as ``"s2p2d1"`` (``data.graph.common_orbital_types``).

An element's k-th shell of angular momentum l sits in the common basis's k-th shell of that l, so an
element's orbitals map to a fixed set of slots (:func:`element_slots`), whatever order its shells are
listed in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hamflow.errors import ConfigError, DataError

ORBITAL_TYPES_KEY = "data.graph.common_orbital_types"

#: Spectroscopic letter of each angular momentum l.
L_LETTERS = "spdfghik"

_TOKEN = re.compile(r"([a-z])(\d*)")


@dataclass(frozen=True)
class CommonBasis:
    """Shells of the common orbital basis, sorted by l (e.g. ``(0, 0, 0, 1, 1, 2, 2)`` for s3p2d2)."""

    shell_ls: tuple[int, ...]

    def __post_init__(self) -> None:
        if list(self.shell_ls) != sorted(self.shell_ls) or any(l < 0 for l in self.shell_ls):
            raise ValueError(f"shell_ls must be non-negative and sorted by l, got {self.shell_ls}")

    @property
    def size(self) -> int:
        """Number of orbitals B = sum over shells of (2l + 1) (without spin)."""
        return sum(2 * l + 1 for l in self.shell_ls)

    @property
    def max_l(self) -> int:
        """Highest angular momentum of the basis (-1 when empty)."""
        return max(self.shell_ls, default=-1)

    @property
    def num_shells(self) -> int:
        return len(self.shell_ls)

    @cached_property
    def shell_offsets(self) -> np.ndarray:
        """(num_shells + 1,) int64: first orbital index of each shell, then B."""
        return np.concatenate([[0], np.cumsum([2 * l + 1 for l in self.shell_ls])]).astype(np.int64)

    @property
    def shell_slices(self) -> tuple[slice, ...]:
        """One slice per shell into the B orbitals."""
        offsets = self.shell_offsets
        return tuple(slice(int(offsets[k]), int(offsets[k + 1])) for k in range(self.num_shells))

    def shell_counts(self) -> dict[int, int]:
        """{l: number of shells with that l}."""
        return dict(Counter(self.shell_ls))

    def to_string(self) -> str:
        """DeepH-pack's notation, e.g. ``"s3p2d2"`` (empty string for an empty basis)."""
        counts = self.shell_counts()
        return "".join(f"{_letter(l)}{counts[l]}" for l in sorted(counts))

    def covers(self, element_shells: Sequence[int]) -> bool:
        """Whether every l has at least as many shells here as in ``element_shells``."""
        have = self.shell_counts()
        return all(have.get(l, 0) >= n for l, n in Counter(element_shells).items())


def _letter(l: int) -> str:
    if l >= len(L_LETTERS):
        raise ValueError(f"no orbital letter for l = {l}")
    return L_LETTERS[l]


def parse_orbital_types(text: str) -> CommonBasis:
    """Parse DeepH-pack's orbital-type string (``"s2p2d1"``: 2 s shells, 2 p shells, 1 d shell).

    A letter without a count means one shell; each letter at most once; letters from ``spdfghik``.
    Raises :class:`ConfigError` (key ``data.graph.common_orbital_types``) on anything else.
    """
    cleaned = text.strip().lower()
    if not cleaned:
        raise ConfigError(ORBITAL_TYPES_KEY, "is empty: give shells such as 's2p2d1'")
    position = 0
    counts: dict[int, int] = {}
    while position < len(cleaned):
        match = _TOKEN.match(cleaned, position)
        if match is None or match.group(1) not in L_LETTERS:
            raise ConfigError(
                ORBITAL_TYPES_KEY,
                f"= {text!r} is not an orbital-type string: expected letters from '{L_LETTERS}' each "
                "followed by a shell count, e.g. 's2p2d1'",
            )
        l = L_LETTERS.index(match.group(1))
        if l in counts:
            raise ConfigError(ORBITAL_TYPES_KEY, f"= {text!r} names '{match.group(1)}' more than once")
        count = int(match.group(2)) if match.group(2) else 1
        if count < 1:
            raise ConfigError(
                ORBITAL_TYPES_KEY, f"= {text!r}: shell count of '{match.group(1)}' must be >= 1"
            )
        counts[l] = count
        position = match.end()
    return CommonBasis(tuple(l for l in sorted(counts) for _ in range(counts[l])))


def union_basis(elements_orbital_map: Mapping[str, Sequence[int]]) -> CommonBasis:
    """For each l the largest shell count over all elements (Mo s3p2d2 + S s2p2d1 -> s3p2d2)."""
    largest: dict[int, int] = {}
    for shells in elements_orbital_map.values():
        for l, n in Counter(int(s) for s in shells).items():
            largest[l] = max(largest.get(l, 0), n)
    return CommonBasis(tuple(l for l in sorted(largest) for _ in range(largest[l])))


def common_basis(elements_orbital_map: Mapping[str, Sequence[int]], requested: str = "") -> CommonBasis:
    """The common basis of a dataset: the union rule when ``requested`` is empty, else the parsed string.

    A requested basis must cover every element (as many shells of each l as the element has);
    otherwise :class:`ConfigError` names the first element it misses.
    """
    for element, shells in elements_orbital_map.items():
        if any(int(l) < 0 or int(l) >= len(L_LETTERS) for l in shells):
            raise DataError(
                f"element {element} has shells {list(shells)}: each l must be in 0..{len(L_LETTERS) - 1}",
                key="elements_orbital_map",
            )
    if not requested.strip():
        return union_basis(elements_orbital_map)
    basis = parse_orbital_types(requested)
    for element in sorted(elements_orbital_map):
        shells = [int(l) for l in elements_orbital_map[element]]
        if not basis.covers(shells):
            needed = union_basis({element: shells}).to_string()
            raise ConfigError(
                ORBITAL_TYPES_KEY,
                f"= {requested!r} does not cover element {element} (its shells are {needed}); "
                f"the dataset needs at least {union_basis(elements_orbital_map).to_string()}",
            )
    return basis


def element_slots(basis: CommonBasis, element_shells: Sequence[int]) -> np.ndarray:
    """(n_orb_el,) int64: index in the common basis of each of the element's orbitals, in file order.

    The element's k-th shell of angular momentum l goes to the common basis's k-th shell of that l.
    Raises ValueError if the basis does not cover the element (callers check with :meth:`covers`).
    """
    first_shell_of_l: dict[int, int] = {}
    for k, l in enumerate(basis.shell_ls):
        first_shell_of_l.setdefault(l, k)
    counts = basis.shell_counts()
    seen: Counter[int] = Counter()
    offsets = basis.shell_offsets
    slots: list[np.ndarray] = []
    for l in (int(s) for s in element_shells):
        if seen[l] >= counts.get(l, 0):
            raise ValueError(f"basis {basis.to_string()} does not cover shells {list(element_shells)}")
        shell = first_shell_of_l[l] + seen[l]
        seen[l] += 1
        slots.append(np.arange(offsets[shell], offsets[shell + 1], dtype=np.int64))
    if not slots:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(slots)


def spin_slots(slots: np.ndarray, basis_size: int) -> np.ndarray:
    """(2 n,) slots of a spinful block: the spin-up orbitals, then spin-down ones shifted by B."""
    return np.concatenate([slots, slots + basis_size])
