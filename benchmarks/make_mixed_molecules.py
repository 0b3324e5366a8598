"""Generate the mixed small-molecule benchmark in DeepH format with PySCF: 6 kinds x N geometries.

Issue 10's third benchmark: H2O, NH3, CH4, H2CO, CH3OH and C2H5OH, ``--per-kind`` geometries each
(default 8, i.e. 48 structures), PBE/def2-SVP all electron with the demo data's recipe
(scripts/make_demo_dataset.py: conv_tol 1e-12 Ha, PySCF's default grid, the Fock matrix PySCF
diagonalised last, read back and verified). Each geometry is the kind's equilibrium geometry
randomly rotated and displaced by Gaussian noise (sigma 0.05 Angstrom per coordinate): the demo's
sampling, a few hundredths of an Angstrom around equilibrium, not a thermal ensemble. Unlike the
MD17-like sets it mixes elements, shell counts and molecule sizes (3-9 atoms) in one model.

Layout (``--out DIR``, a cache folder outside the repository; never commit it)::

    DIR/dft/<kind>/<000>/        POSCAR info.json hamiltonian.h5 overlap.h5 density_matrix.h5
    DIR/dataset_split.json       per kind 1/8 validate, 1/8 test, the rest train (36/6/6 for 8 each)

data_dir_depth = 1 (``--depth 1`` for benchmarks/accuracy.py). Reproducible: structure (kind, k)
depends only on (kind, k) (the demo's seeded generator). Resumable: finished structures are kept and
skipped on a rerun. Parallel: ``--workers`` processes with one BLAS thread each::

    python benchmarks/make_mixed_molecules.py --out ~/.cache/hamflow/mixed48 --workers 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import make_demo_dataset as demo  # noqa: E402

from hamflow.data.split import write_split  # noqa: E402

KINDS = ("h2o", "nh3", "ch4", "h2co", "ch3oh", "ethanol")


def compute_one(job: tuple[Path, str, int]) -> tuple[str, float, float]:
    """Compute, write and verify one geometry; returns (id, seconds, max eigenvalue error in eV)."""
    out, kind, index = job
    sid = f"{kind}/{index:03d}"
    folder = out / "dft" / kind / f"{index:03d}"
    if (folder / "hamiltonian.h5").is_file():
        return sid, 0.0, float("nan")
    recipe = demo.MoleculeRecipe()
    elements, positions = demo.perturbed_molecule(kind, index, recipe)
    result = demo.run_molecule(elements, positions, recipe)
    comment = f"hamflow mixed {sid}: PySCF RKS {recipe.xc}/{recipe.basis}"
    figures = demo.publish_structure(
        folder, sid, result, comment, (recipe.energy_tolerance_eV, recipe.electron_tolerance)
    )
    return sid, result.seconds, figures["max_energy_error_eV"]


def split_per_kind(per_kind: int) -> dict[str, list[str]]:
    """Stratified split: of each kind's geometries (in index order; each one is an independent random
    draw), 1/8 (at least 1) validate, as many test, the first others train (6/1/1 of 8)."""
    n_validate = max(1, round(per_kind / 8))
    n_train = per_kind - 2 * n_validate
    parts: dict[str, list[str]] = {"train": [], "validate": [], "test": []}
    for kind in KINDS:
        ids = [f"{kind}/{k:03d}" for k in range(per_kind)]
        parts["train"] += ids[:n_train]
        parts["validate"] += ids[n_train : n_train + n_validate]
        parts["test"] += ids[n_train + n_validate :]
    return parts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cache folder (outside the repository)")
    parser.add_argument("--per-kind", type=int, default=8, help="geometries per molecule kind")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.per_kind < 3:
        print("--per-kind must be at least 3 (one each for train, validate and test)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(args.out, kind, k) for kind in KINDS for k in range(args.per_kind)]
    start = time.perf_counter()
    worst = 0.0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for sid, seconds, error in pool.map(compute_one, jobs):
            if error == error:  # computed now (nan: kept from an earlier run)
                worst = max(worst, error)
                print(f"{sid}: {seconds:.1f} s, max eigenvalue error {error:.2e} eV", flush=True)
    split = split_per_kind(args.per_kind)
    write_split(args.out / "dataset_split.json", split)
    sizes = ", ".join(f"{part} {len(ids)}" for part, ids in split.items())
    wall = time.perf_counter() - start
    print(f"{len(jobs)} structures in {args.out} ({sizes}); {wall:.0f} s wall, worst error {worst:.1e} eV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
