"""Small synthetic DeepH-format structures for the graph tests (random blocks, known shapes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hamflow.data.info import StructureInfo, write_info
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, write_matrix_h5
from hamflow.data.orbitals import atom_orbital_counts
from hamflow.data.poscar import Poscar, write_poscar
from hamflow.data.structure import Structure

WATER_MAP: dict[str, tuple[int, ...]] = {"O": (0, 0, 1, 1, 2), "H": (0, 0, 1)}


def synthetic_structure(
    sid: str = "s0",
    *,
    elements: Sequence[str] = ("O", "H", "H"),
    orbital_map: Mapping[str, Sequence[int]] = WATER_MAP,
    spinful: bool = False,
    periodic: bool = False,
    seed: int = 0,
    tiny_shell: bool = True,
    path: Path | None = None,
) -> Structure:
    """A structure with random H, S and Rho blocks for every pair closer than 4 Angstrom.

    Molecules sit in a 15 Angstrom box with R = 0 pairs only; ``periodic`` uses a 2.5 Angstrom cubic
    cell with pairs out to every image within 4 Angstrom. With ``tiny_shell`` the overlap of the first
    shell pair of every off-site block is 1e-13 (below the 1e-10 mask threshold).
    """
    rng = np.random.default_rng(seed)
    n = len(elements)
    box = 2.5 if periodic else 15.0
    lattice = np.eye(3) * box
    positions = rng.uniform(0.0, 2.0 if periodic else 1.5, size=(n, 3)) + (0 if periodic else 6.0)
    counts = atom_orbital_counts(list(elements), orbital_map)
    reach = range(-2, 3)  # every image closer than 4 Angstrom in a 2.5 Angstrom cell
    shifts = [(a, b, c) for a in reach for b in reach for c in reach] if periodic else [(0, 0, 0)]
    spin = 2 if spinful else 1
    blocks: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for shift in shifts:
        for i in range(n):
            for j in range(n):
                distance = np.linalg.norm(positions[j] + np.asarray(shift) @ lattice - positions[i])
                if distance >= 4.0:
                    continue
                mirror = blocks.get((*(-np.asarray(shift)).tolist(), j, i))
                if mirror is not None:  # M(R)_ij = M(-R)_ji^dagger, as in DFT files
                    blocks[(*shift, i, j)] = tuple(m.conj().T for m in mirror)
                    continue
                ni, nj = int(counts[i]), int(counts[j])
                onsite = i == j and shift == (0, 0, 0)
                s_block = rng.normal(size=(ni, nj))
                if tiny_shell and not onsite:
                    first_i = 2 * orbital_map[elements[i]][0] + 1
                    first_j = 2 * orbital_map[elements[j]][0] + 1
                    s_block[:first_i, :first_j] = 1e-13
                h_block = rng.normal(size=(spin * ni, spin * nj))
                rho_block = rng.normal(size=(spin * ni, spin * nj))
                if spinful:
                    h_block = h_block + 1j * rng.normal(size=h_block.shape)
                    rho_block = rho_block + 1j * rng.normal(size=rho_block.shape)
                if onsite:  # Hermitian, and S positive definite
                    s_block = s_block @ s_block.T + ni * np.eye(ni)
                    h_block = (h_block + h_block.conj().T) / 2
                    rho_block = (rho_block + rho_block.conj().T) / 2
                blocks[(*shift, i, j)] = (h_block, s_block, rho_block)
    pairs = [list(key) for key in blocks]
    h_blocks, s_blocks, rho_blocks = ([b[k] for b in blocks.values()] for k in range(3))
    info = StructureInfo(
        atoms_quantity=n,
        orbits_quantity=int(counts.sum()),
        orthogonal_basis=False,
        spinful=spinful,
        fermi_energy_eV=0.0,
        elements_orbital_map={el: tuple(ls) for el, ls in orbital_map.items() if el in elements},
    )
    poscar = Poscar(comment=sid, lattice=lattice, elements=tuple(elements), positions=positions)
    matrices = {
        "H": BlockMatrix.from_blocks(pairs, h_blocks),
        "S": BlockMatrix.from_blocks(pairs, s_blocks),
        "Rho": BlockMatrix.from_blocks(pairs, rho_blocks),
    }
    return Structure(sid=sid, path=path or Path(sid), poscar=poscar, info=info, matrices=matrices)


def write_structure(folder: Path, structure: Structure) -> None:
    """Write a structure as a DeepH-format folder (POSCAR, info.json, matrix files)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_poscar(folder / "POSCAR", structure.poscar)
    write_info(folder / "info.json", structure.info)
    for quantity, matrix in structure.matrices.items():
        write_matrix_h5(folder / MATRIX_FILES[quantity], matrix)
