"""Bands of a large crystal with ``hamflow bands``' solvers: seconds per k-point, sparse and dense.

Builds a Si diamond supercell of ``--atoms`` atoms (8 n^3 for an n x n x n conventional supercell,
or 2 n^3 for the primitive cell repeated n x n x n) with a synthetic short-range Hamiltonian in the
DeepH block layout: 13 orbitals per atom (shells s s p p d, as DeepH's Si basis), every pair within
``--cutoff`` Angstrom, both (R, i, j) and (-R, j, i), H Hermitian and S positive definite at every k
(module :func:`synthetic_silicon`). It writes the folder (POSCAR, info.json, overlap.h5,
hamiltonian_pred.h5), then times what ``hamflow bands`` does per k-point:

  sparse   H(k), S(k) as scipy CSR, shift-invert (ARPACK) for ``--num-bands`` states nearest the
           target energy; the Bloch sum and the factorisation are part of the time;
  dense    the full generalized eigh at ``--dense-atoms`` (a size where it is still possible here),
           with the sparse solver on the same structure for the ratio and the agreement;
  pivoting with ``--compare-pivoting ATOMS``: the sparse solve at Gamma with diagonal pivots (what
           ``hamflow bands`` does) against SuperLU's partial pivoting, same structure, same order.

Prints one table; the figures and the command go in benchmarks/RESULTS.md. Energies in eV.

    python benchmarks/bands_large.py --atoms 4096 --dense-atoms 216
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402

from hamflow.data.info import StructureInfo, write_info  # noqa: E402
from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, write_matrix_h5  # noqa: E402
from hamflow.data.poscar import Poscar, write_poscar  # noqa: E402

SI_LATTICE = 5.431  # Angstrom, conventional cubic cell
SI_SHELLS = (0, 0, 1, 1, 2)  # s s p p d: 13 orbitals
#: on-site energies per shell (eV), a rough s-p-d ordering
SHELL_ENERGY = {0: -6.0, 1: 0.5, 2: 6.0}


def _supercell(atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(lattice (3, 3), positions (atoms, 3)) in Angstrom: cubic 8 n^3 or primitive fcc 2 n^3."""
    for per_cell, base_lattice, basis in (
        (
            8,
            np.eye(3) * SI_LATTICE,
            np.array([[0, 0, 0], [0, 2, 2], [2, 0, 2], [2, 2, 0], [1, 1, 1], [1, 3, 3], [3, 1, 3], [3, 3, 1]])
            * SI_LATTICE
            / 4,
        ),
        (
            2,
            np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]) * SI_LATTICE / 2,
            np.array([[0, 0, 0], [1, 1, 1]]) * SI_LATTICE / 4,
        ),
    ):
        n = round((atoms / per_cell) ** (1 / 3))
        if per_cell * n**3 == atoms:
            grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
            cells = grid @ base_lattice
            positions = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 3)
            return base_lattice * n, positions
    raise SystemExit(
        f"--atoms {atoms}: expected 8 n^3 (cubic supercell) or 2 n^3 (primitive), e.g. 4096, 216, 2"
    )


def synthetic_silicon(
    atoms: int, *, cutoff: float = 4.0, seed: int = 0
) -> tuple[Poscar, StructureInfo, BlockMatrix, BlockMatrix]:
    """A Si diamond supercell with a synthetic H (eV) and S in the DeepH layout: (poscar, info, H, S).

    Blocks are 13 x 13 (shells s s p p d). Off-site blocks are random (seeded) with an amplitude
    exp(-(d - 2.35) / 0.6) (H: 2 eV, S: 0.1); H(-R)_ji = H(R)_ij^T exactly. On-site H is the shell
    energies plus a small symmetric random part; on-site S is I. S is then scaled off-site so that its
    largest absolute row sum over all R is below 0.8: S(k) is positive definite at every k (Gershgorin).
    """
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    lattice, positions = _supercell(atoms)
    crystal = Atoms(f"Si{len(positions)}", positions=positions, cell=lattice, pbc=True)
    first, second, shift = neighbor_list("ijS", crystal, cutoff)
    distance = np.linalg.norm(positions[second] + shift @ lattice - positions[first], axis=1)
    n_orb = 2 * 1 + 2 * 3 + 5
    rng = np.random.default_rng(seed)
    # one random block per unordered pair: pair n and its mirror (j, i, -S) share it, transposed
    reach = int(np.abs(shift).max(initial=0))
    base = 2 * reach + 1

    def key(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> np.ndarray:
        cell = ((s[:, 0] + reach) * base + (s[:, 1] + reach)) * base + (s[:, 2] + reach)
        return (i.astype(np.int64) * len(positions) + j) * base**3 + cell

    forward, backward = key(first, second, shift), key(second, first, -shift)
    order = np.argsort(forward)
    mirror = order[np.searchsorted(forward[order], backward)]
    owner = np.minimum(np.arange(len(first)), mirror)  # the pair whose random block both use
    _, owner_index = np.unique(owner, return_inverse=True)
    raw_h = rng.normal(size=(owner_index.max(initial=-1) + 1, n_orb, n_orb))
    raw_s = rng.normal(size=raw_h.shape)
    transpose = np.arange(len(first)) != owner
    decay = np.exp(-(distance - 2.35) / 0.6)[:, None, None]

    def off_site(raw: np.ndarray, amplitude: float) -> np.ndarray:
        blocks = raw[owner_index.reshape(-1)].copy()
        blocks[transpose] = blocks[transpose].transpose(0, 2, 1)
        return amplitude * decay * blocks / n_orb

    h_off, s_off = off_site(raw_h, 2.0), off_site(raw_s, 0.1)
    row_sum = np.zeros(len(positions) * n_orb)
    np.add.at(row_sum, (first[:, None] * n_orb + np.arange(n_orb)[None, :]), np.abs(s_off).sum(axis=2))
    s_off *= min(1.0, 0.8 / max(float(row_sum.max(initial=0.0)), 1e-30))
    diagonal = np.repeat([SHELL_ENERGY[l] for l in SI_SHELLS], [2 * l + 1 for l in SI_SHELLS])
    noise = rng.normal(scale=0.05, size=(len(positions), n_orb, n_orb))
    h_on = np.diag(diagonal)[None] + 0.5 * (noise + noise.transpose(0, 2, 1))
    s_on = np.broadcast_to(np.eye(n_orb), h_on.shape)
    on_pairs = np.column_stack(
        [np.zeros((len(positions), 3), dtype=np.int64), np.arange(len(positions))[:, None].repeat(2, 1)]
    )
    off_pairs = np.column_stack([shift, first, second]).astype(np.int64)
    pairs = np.concatenate([on_pairs, off_pairs])
    order = np.lexsort((pairs[:, 4], pairs[:, 3], pairs[:, 2], pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    shapes = np.full((len(pairs), 2), n_orb, dtype=np.int64)
    bounds = np.arange(len(pairs) + 1, dtype=np.int64) * n_orb * n_orb

    def matrix(on: np.ndarray, off: np.ndarray) -> BlockMatrix:
        blocks = np.concatenate([on, off])[order]
        return BlockMatrix(pairs, shapes, bounds, blocks.reshape(-1))

    poscar = Poscar(
        f"Si{len(positions)} synthetic (hamflow benchmarks/bands_large.py)",
        lattice,
        ("Si",) * len(positions),
        positions,
    )
    info = StructureInfo(len(positions), len(positions) * n_orb, False, False, 0.0, {"Si": SI_SHELLS})
    return poscar, info, matrix(h_on, h_off), matrix(s_on, s_off)


def write_silicon(folder: str | Path, atoms: int, *, cutoff: float = 4.0, seed: int = 0) -> Path:
    """Write :func:`synthetic_silicon` as a DeepH folder: POSCAR, info.json, overlap.h5 and the H as
    hamiltonian_pred.h5 (float32, as ``hamflow infer`` writes). Returns the folder."""
    folder = Path(folder)
    poscar, info, h, s = synthetic_silicon(atoms, cutoff=cutoff, seed=seed)
    write_poscar(folder / "POSCAR", poscar)
    write_info(folder / "info.json", info)
    write_matrix_h5(folder / MATRIX_FILES["S"], s)
    write_matrix_h5(folder / MATRIX_FILES["H_pred"], h, dtype=np.float32)
    return folder


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _write_k_path(folder: Path, k_points: int) -> Path:
    """A K_PATH of ``k_points`` points from Gamma (H(k) real) to (0.5, 0.25, 0) (complex)."""
    path = folder / "K_PATH_bench"
    path.write_text(f"{k_points} 0 0 0 0.5 0.25 0 GAMMA P\n", encoding="utf-8")
    return path


def _time_solver(folder: Path, solver: str, num_bands: int | None, around: float, k_points: int) -> dict:
    from hamflow.infer.band_structure import compute_band_structure

    start = time.perf_counter()
    result = compute_band_structure(
        folder,
        solver=solver,
        num_bands=num_bands,
        around=around,
        k_path=str(_write_k_path(folder, k_points)),
    )
    return {
        "solver": result.solver,
        "orbitals": result.size,
        "k_points": len(result.path.k_frac),
        "setup_s": result.setup_seconds,
        "per_k_s": [float(t) for t in result.seconds_per_k],
        "wall_s": time.perf_counter() - start,
        "eigenvalues": result.eigenvalues,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _time_pivoting(
    atoms: int, cutoff: float, num_bands: int, around: float
) -> list[tuple[str, float, float]]:
    """[(mode, seconds, max |this - diagonal| eV)] of one Gamma solve with diagonal and with partial
    pivoting (:func:`hamflow.infer.band_structure.sparse_bands`)."""
    from hamflow.data.bloch import BlochMatrix
    from hamflow.infer.band_structure import sparse_bands

    _, info, h, s = synthetic_silicon(atoms, cutoff=cutoff)
    offsets = np.arange(info.atoms_quantity + 1, dtype=np.int64) * 13
    gamma = np.zeros(3)
    h_k = BlochMatrix.from_blocks(h, offsets).sparse(gamma)
    s_k = BlochMatrix.from_blocks(s, offsets).sparse(gamma)
    rows, reference = [], None
    for mode, pivoting in (("diagonal", False), ("partial", True)):
        start = time.perf_counter()
        values = sparse_bands(h_k, s_k, num_bands, around, pivoting=pivoting)
        seconds = time.perf_counter() - start
        reference = values if reference is None else reference
        rows.append((mode, seconds, float(np.abs(values - reference).max())))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atoms", type=int, default=4096, help="atoms of the sparse run (8 n^3 or 2 n^3)")
    parser.add_argument(
        "--dense-atoms", type=int, default=216, help="atoms of the dense-vs-sparse run (0: skip)"
    )
    parser.add_argument(
        "--cutoff", type=float, default=4.0, help="pair cutoff, Angstrom (4.0: 16 neighbours)"
    )
    parser.add_argument("--num-bands", type=int, default=20, help="states nearest --around per k-point")
    parser.add_argument("--around", type=float, default=0.5, help="target energy, eV")
    parser.add_argument(
        "--k-points", type=int, default=3, help="k-points timed per run: Gamma (real), then complex ones"
    )
    parser.add_argument(
        "--compare-pivoting",
        type=int,
        default=0,
        metavar="ATOMS",
        help="also time one Gamma solve of an ATOMS-atom cell with diagonal and with partial pivoting",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="hamflow-bands-bench-") as tmp:
        if args.dense_atoms:
            folder = write_silicon(Path(tmp) / f"si{args.dense_atoms}", args.dense_atoms, cutoff=args.cutoff)
            dense = _time_solver(folder, "dense", args.num_bands, args.around, args.k_points)
            sparse = _time_solver(folder, "sparse", args.num_bands, args.around, args.k_points)
            difference = float(np.abs(dense["eigenvalues"] - sparse["eigenvalues"]).max())
            rows += [(args.dense_atoms, dense, None), (args.dense_atoms, sparse, difference)]
        start = time.perf_counter()
        folder = write_silicon(Path(tmp) / f"si{args.atoms}", args.atoms, cutoff=args.cutoff)
        build = time.perf_counter() - start
        rows.append(
            (args.atoms, _time_solver(folder, "sparse", args.num_bands, args.around, args.k_points), None)
        )
    print(
        f"# Si diamond, synthetic H/S, 13 orbitals/atom, cutoff {args.cutoff} A, {args.num_bands} bands "
        f"around {args.around} eV, {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}"
    )
    print(f"# {args.atoms}-atom folder written in {build:.1f} s")
    print(
        f"{'atoms':>6} {'orbitals':>8} {'solver':>6} {'setup s':>8} {'s per k (each)':>28} {'peak GiB':>8} {'max |dense-sparse| eV':>22}"  # noqa: E501
    )
    for atoms, row, difference in rows:
        each = ", ".join(f"{t:.2f}" for t in row["per_k_s"])
        diff = "" if difference is None else f"{difference:.2e}"
        print(
            f"{atoms:>6} {row['orbitals']:>8} {row['solver']:>6} {row['setup_s']:>8.2f} {each:>28} {row['peak_rss_gib']:>8.2f} {diff:>22}"  # noqa: E501
        )
    pivoting = []
    if args.compare_pivoting:
        pivoting = _time_pivoting(args.compare_pivoting, args.cutoff, args.num_bands, args.around)
        print(f"# Gamma, {args.compare_pivoting} atoms: pivoting, s, max |E - E(diagonal)| eV")
        for mode, seconds, difference in pivoting:
            print(f"{mode:>9} {seconds:>8.2f} {difference:>10.2e}")
    if args.json:
        payload = [
            {
                "atoms": atoms,
                **{k: v for k, v in row.items() if k != "eigenvalues"},
                "max_dense_sparse_eV": difference,
            }
            for atoms, row, difference in rows
        ]
        payload += [
            {"atoms": args.compare_pivoting, "pivoting": mode, "seconds": seconds, "max_vs_diagonal_eV": diff}
            for mode, seconds, diff in pivoting
        ]
        Path(args.json).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
