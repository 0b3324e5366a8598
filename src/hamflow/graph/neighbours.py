"""Edges of a structure that has no matrix files yet, from a periodic neighbour search (ASE).

Used for inference on new structures that carry only POSCAR + info.json: the pairs a DFT code
would store are those whose orbitals overlap, i.e. atoms closer than r_i + r_j (orbital cutoff
radii), so the caller passes the pair cutoff, resolved from the model's radial cutoff by
:func:`hamflow.config.train_config.neighbour_cutoff` (which says why it covers every overlapping pair).
Structures are periodic in all three directions (molecules sit in a box, as in the DFT files).
"""

from __future__ import annotations

import numpy as np

from hamflow.data.poscar import Poscar


def neighbour_edges(poscar: Poscar, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (R, i, j) with |pos_j + R.lattice - pos_i| < ``cutoff`` (Angstrom), on-site included.

    Returns ``(edge_src (E,) int32, edge_dst (E,) int32, edge_shift (E, 3) int32)``, sorted by
    (i, j, R1, R2, R3); both (R, i, j) and (-R, j, i) are present, as in the matrix files.
    R is relative to the positions as given (not wrapped into the cell).
    """
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"the neighbour cutoff must be a positive length (Angstrom), got {cutoff!r}")
    import ase  # here, not at the top: ASE + SciPy take ~0.5 s to import and most graphs never need them
    from ase.neighborlist import neighbor_list

    atoms = ase.Atoms(
        numbers=np.ones(poscar.num_atoms, dtype=int),
        positions=np.asarray(poscar.positions, dtype=np.float64),
        cell=np.asarray(poscar.lattice, dtype=np.float64),
        pbc=True,
    )
    src, dst, shift = neighbor_list("ijS", atoms, float(cutoff), self_interaction=False)
    onsite = np.arange(poscar.num_atoms)
    src = np.concatenate([onsite, src]).astype(np.int32)
    dst = np.concatenate([onsite, dst]).astype(np.int32)
    shift = np.concatenate([np.zeros((poscar.num_atoms, 3), dtype=np.int64), shift]).astype(np.int32)
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], dst, src))
    return src[order], dst[order], shift[order]
