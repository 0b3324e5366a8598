"""The spinless counterpart of a spinful DeepH-format folder: the spin-free part H0 of every block.

A spinful block [[uu, ud], [du, dd]] is H0 (x) 1 + i T . sigma (docs/model.md), H0 = (uu + dd) / 2. For a
time-reversal-even Hamiltonian H0 is real; this writes Re(H0) (eV) as a spinless ``hamiltonian.h5``
beside the same POSCAR and overlap.h5, so one network can be trained on the same geometries and the
same orbital basis with and without spin (the comparison of benchmarks/RESULTS.md, issue 14):

    python benchmarks/spin_free_part.py --data SPINFUL_DIR --out SPINLESS_DIR [--depth N]

The folder's ``dataset_split.json`` is copied, so both sets train and test on the same structures.
Density matrices are not written (training targets H only). Each output file is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import find_depth, structure_ids  # noqa: E402

from hamflow.atomic import atomic_path  # noqa: E402
from hamflow.data.info import read_info, write_info  # noqa: E402
from hamflow.data.matrix_h5 import BlockMatrix, read_matrix_h5, write_matrix_h5  # noqa: E402
from hamflow.errors import DataError  # noqa: E402


def spin_free_blocks(matrix: BlockMatrix, *, file: Path) -> BlockMatrix:
    """Re((uu + dd) / 2) of every (2 ni, 2 nj) complex block: (ni, nj) real blocks, same pairs."""
    blocks = []
    for n in range(matrix.num_pairs):
        block = matrix.block(n)
        rows, cols = block.shape
        if rows % 2 or cols % 2:
            raise DataError(f"block {n} has shape {block.shape}, not (2 ni, 2 nj): not spinful", file=file)
        ni, nj = rows // 2, cols // 2
        blocks.append(np.real(block[:ni, :nj] + block[ni:, nj:]) / 2)
    return BlockMatrix.from_blocks(matrix.atom_pairs.tolist(), blocks)


def write_spin_free_structure(source: Path, target: Path) -> None:
    """One structure folder: POSCAR and overlap.h5 copied, H0 and a spinless info.json written."""
    info = read_info(source / "info.json")
    if not info.spinful:
        raise DataError("info.json says spinful = false: nothing to take the spin-free part of", file=source)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("POSCAR", "overlap.h5"):
        with atomic_path(target / name) as tmp:
            shutil.copyfile(source / name, tmp)
    h = read_matrix_h5(source / "hamiltonian.h5")
    write_matrix_h5(target / "hamiltonian.h5", spin_free_blocks(h, file=source / "hamiltonian.h5"))
    write_info(target / "info.json", dataclasses.replace(info, spinful=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="spinful DeepH-format folder")
    parser.add_argument("--out", type=Path, required=True, help="where the spinless folder is written")
    parser.add_argument("--depth", type=int, default=None, help="data_dir_depth (found if omitted)")
    args = parser.parse_args(argv)
    depth = find_depth(args.data) if args.depth is None else args.depth
    structures = structure_ids(args.data, depth)
    for sid in structures:
        write_spin_free_structure(args.data / "dft" / sid, args.out / "dft" / sid)
    split = args.data / "dataset_split.json"
    if split.is_file():
        with atomic_path(args.out / "dataset_split.json") as tmp:
            shutil.copyfile(split, tmp)
    print(f"spin_free_part: wrote {len(structures)} spinless structures to {args.out / 'dft'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
