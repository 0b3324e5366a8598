"""What the normaliser's baselines leave of H on the test split of any DeepH-format folder.

The network learns the remainder ``H - baselines`` (docs/training.md); the smaller it is, the less
the network has to learn. This fits the normaliser on the training split (as training does: the
seeded order, its first 500 structures) and prints, on the test split, the RMS and MAE of the
remainder (meV) of the on-site and off-site blocks, and the off-site blocks split into their
parity-(-1)^L components (which a function of the pair vector can carry) and their parity-(-1)^(L+1)
components (only the environment's pseudotensor term reaches them), for each stage of baselines:

    none                  H itself (minus the per-species on-site offset: the plain normaliser)
    two-centre            + the off-site two-centre and on-site neighbour-sum baselines
    + environment polar   + the environment baseline's density and bond-angle terms
    + environment pseudo  + its pseudotensor term (all of today's baselines)

    python benchmarks/baseline_remainder.py --data DIR [--depth N] [--train N] [--test N] [--json OUT]

Split: ``DIR/dataset_split.json`` if present, else 75 / 12.5 / 12.5 % by ``--seed`` (as accuracy.py).
No JAX compile of a network; the fit reads the training structures once (about a minute for 500 water).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import find_depth, make_split  # noqa: E402

from hamflow.data.info import read_info  # noqa: E402
from hamflow.data.structure import load_structure  # noqa: E402
from hamflow.graph.basis import common_basis  # noqa: E402
from hamflow.graph.structure_graph import build_structure_graph  # noqa: E402
from hamflow.nn.block_head import _cg_basis  # noqa: E402
from hamflow.train.baseline import allowed_ls  # noqa: E402
from hamflow.train.normaliser import Normaliser, fit_normaliser  # noqa: E402

STAGES = ("none", "two-centre", "+ environment polar", "+ environment pseudo")
PARTS = ("on-site", "off-site", "off-site (-1)^L", "off-site (-1)^(L+1)")


def stages(norm: Normaliser, plain: Normaliser) -> dict[str, Normaliser]:
    """The normalisers of the four stages: the plain one (offsets only), then the fitted one with its
    baselines switched on one after another."""
    env = norm.environment_baseline
    polar = None if env is None else dataclasses.replace(env, pseudo_weights=None)
    return {
        "none": plain,
        "two-centre": dataclasses.replace(norm, environment_baseline=None),
        "+ environment polar": dataclasses.replace(norm, environment_baseline=polar),
        "+ environment pseudo": norm,
    }


def parity_projectors(shell_ls: tuple[int, ...]) -> list[tuple[slice, slice, np.ndarray, np.ndarray]]:
    """Per shell pair (a, b): (rows, cols, P, Q) with P / Q (components, 2la+1, 2lb+1) the orthonormal
    projections of the pair's sub-block onto its irreps components of parity (-1)^L / (-1)^(L+1)."""
    starts = np.cumsum([0] + [2 * l + 1 for l in shell_ls])
    out = []
    for a, la in enumerate(shell_ls):
        for b, lb in enumerate(shell_ls):
            basis = _cg_basis(la, lb)
            ls = [L for L in range(abs(la - lb), la + lb + 1) for _ in range(2 * L + 1)]
            even = np.asarray([L in allowed_ls(la, lb) for L in ls])
            rows, cols = slice(starts[a], starts[a + 1]), slice(starts[b], starts[b + 1])
            out.append((rows, cols, basis[even], basis[~even]))
    return out


def remainders(graph, norm: Normaliser, projectors: list) -> dict[str, np.ndarray]:
    """Per part of PARTS: the remainder ``H - offset - baselines`` of one graph in eV (labelled entries;
    the two parity parts as irreps components of the off-site shell-pair blocks fully labelled)."""
    onsite = (graph.edge_src == graph.edge_dst) & np.all(graph.edge_shift == 0, axis=1)
    args = (jnp.asarray(graph.atomic_numbers), jnp.asarray(graph.edge_src), jnp.asarray(graph.edge_dst))
    _, offset = norm.edge_tables(*args, jnp.asarray(onsite))
    base = norm.edge_baseline(*args, jnp.asarray(~onsite), jnp.asarray(graph.edge_vec), jnp.asarray(onsite))
    residual = graph.labels - np.asarray(offset) - (0.0 if base is None else np.asarray(base))
    mask = graph.label_mask
    off, off_mask = residual[~onsite], mask[~onsite]
    even, odd = [], []
    for rows, cols, p_even, p_odd in projectors:
        full = off_mask[:, rows, cols].all(axis=(1, 2))
        block = off[full][:, rows, cols]
        even.append(np.einsum("eij,kij->ek", block, p_even).reshape(-1))
        odd.append(np.einsum("eij,kij->ek", block, p_odd).reshape(-1))
    return {
        "on-site": residual[onsite][mask[onsite]],
        "off-site": off[off_mask],
        "off-site (-1)^L": np.concatenate(even),
        "off-site (-1)^(L+1)": np.concatenate(odd),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="DeepH-format folder (holding dft/)")
    parser.add_argument("--depth", type=int, default=None, help="data_dir_depth (default: found)")
    parser.add_argument("--seed", type=int, default=137, help="seed of the 75/12.5/12.5 split")
    parser.add_argument("--train", type=int, default=500, help="training structures fitted (first N)")
    parser.add_argument("--test", type=int, default=200, help="test structures evaluated (first N)")
    parser.add_argument(
        "--part",
        choices=("test", "validate", "train"),
        default="test",
        help="split part evaluated (train: how much the fit explains of what it saw; compare with test)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    depth = find_depth(args.data) if args.depth is None else args.depth
    with tempfile.TemporaryDirectory() as work:
        split = make_split(args.data, depth, args.seed, Path(work) / "dataset_split.json")
    start = time.perf_counter()

    def graphs(ids: Sequence[str]):
        for sid in ids:
            structure = load_structure(args.data / "dft" / sid, sid=sid, quantities=("H", "S"))
            yield build_structure_graph(structure, basis, graph_type="HS", dtype=np.float64)

    orbital_map: dict[str, tuple[int, ...]] = {}
    for sid in split["train"] + split[args.part][: args.test]:  # every element's shells, as the graph stage
        orbital_map.update(read_info(args.data / "dft" / sid / "info.json").elements_orbital_map)
    basis = common_basis(orbital_map)
    order = np.random.default_rng(args.seed).permutation(len(split["train"]))[: args.train]
    train_ids = [split["train"][k] for k in order]
    norm = fit_normaliser(graphs(train_ids), basis.shell_ls, max_structures=args.train)
    plain = fit_normaliser(graphs(train_ids), basis.shell_ls, max_structures=args.train, baseline=False)
    fit_seconds = time.perf_counter() - start
    projectors = parity_projectors(tuple(basis.shell_ls))
    sums = {stage: {part: [0.0, 0.0, 0] for part in PARTS} for stage in STAGES}
    test_ids = split[args.part][: args.test]
    for graph in graphs(test_ids):
        for stage, model in stages(norm, plain).items():
            for part, values in remainders(graph, model, projectors).items():
                acc = sums[stage][part]
                acc[0] += float(np.sum(values**2))
                acc[1] += float(np.sum(np.abs(values)))
                acc[2] += values.size
    table = {
        stage: {
            part: {"rms_meV": 1e3 * np.sqrt(a / max(n, 1)), "mae_meV": 1e3 * b / max(n, 1)}
            for part, (a, b, n) in parts.items()
        }
        for stage, parts in sums.items()
    }
    parts = PARTS
    fitted_on = f"fitted on {len(train_ids)} training structures"
    print(f"# {args.data}: {fitted_on}, {len(test_ids)} {args.part} structures")
    total = time.perf_counter() - start
    print(f"# basis shells {basis.shell_ls}; fit {fit_seconds:.0f} s, all {total:.0f} s")
    print("| baselines | " + " | ".join(f"{p} RMS / MAE, meV" for p in parts) + " |")
    print("|---|" + "---|" * len(parts))
    for stage, row in table.items():
        cells = " | ".join(f"{row[p]['rms_meV']:.1f} / {row[p]['mae_meV']:.1f}" for p in parts)
        print(f"| {stage} | {cells} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"data": str(args.data), "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
