"""The spin-orbit splitting of the frontier level, DFT against predicted H, for spinful molecules.

For a closed-shell molecule with N electrons in 2n spin orbitals (one electron per state), the highest
occupied level of a heavy-atom p shell splits into two Kramers pairs (HBr: pi 3/2 above pi 1/2 by
~275 meV with PBE / def2-SVP, X2C); the splitting is e[N-1] - e[N-3] of the generalized eigenvalues
of (H, kron(1, S)) at Gamma, with the DFT overlap. This prints, per molecule kind and over all
compared structures, the DFT splitting, the predicted one and their difference, and the MAE of the
blocks' spin-free part H0 and spin-orbit part T (H = H0 (x) 1 + i T . sigma, docs/model.md), in meV:

    python benchmarks/soc_splitting.py --dft DIR --pred PRED_DIR [--depth N] [--json OUT]

DIR is a spinful DeepH-format folder (its dft/), PRED_DIR a `hamflow infer` run folder (or its dft/)
holding <sid>/hamiltonian_pred.h5; every structure with a prediction is compared. Used for the
spin-orbit rows of benchmarks/RESULTS.md (issue 14), e.g. on the accuracy benchmark's work folder:
``--dft WORK/data --pred WORK/pred``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import find_depth, structure_ids  # noqa: E402

from hamflow.data.matrix_h5 import read_matrix_h5  # noqa: E402
from hamflow.data.structure import load_structure  # noqa: E402
from hamflow.errors import DataError  # noqa: E402
from hamflow.infer.bands import eigenvalue_errors  # noqa: E402


def frontier_splitting_eV(energies: np.ndarray, num_electrons: int) -> float:
    """e[N-1] - e[N-3] (eV): the gap between the two highest occupied Kramers pairs."""
    return float(energies[num_electrons - 1] - energies[num_electrons - 3])


def spin_parts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H0, T) of a (2ni, 2nj) block H0 (x) 1 + i T . sigma: H0 (ni, nj), T (3, ni, nj) (complex in
    general; real for time-reversal-even data)."""
    ni, nj = block.shape[0] // 2, block.shape[1] // 2
    uu, ud, du, dd = block[:ni, :nj], block[:ni, nj:], block[ni:, :nj], block[ni:, nj:]
    return (uu + dd) / 2, np.stack([(ud + du) / 2j, (ud - du) / 2, (uu - dd) / 2j])


def part_errors(reference, predicted) -> tuple[float, float, int, int]:
    """Summed |error| of H0 and of T over the pairs both hold (eV), and their entry counts."""
    index = predicted.pair_index()
    h0_sum = t_sum = 0.0
    h0_n = t_n = 0
    for n, pair in enumerate(reference.atom_pairs):
        m = index.get(tuple(int(x) for x in pair))
        if m is None:
            continue
        ref_h0, ref_t = spin_parts(reference.block(n))
        got_h0, got_t = spin_parts(predicted.block(m))
        h0_sum += float(np.abs(got_h0 - ref_h0).sum())
        t_sum += float(np.abs(got_t - ref_t).sum())
        h0_n, t_n = h0_n + ref_h0.size, t_n + ref_t.size
    return h0_sum, t_sum, h0_n, t_n


def compare(dft: Path, pred: Path, depth: int) -> list[dict]:
    """One row per structure with a prediction: sid, kind, DFT / predicted splitting (meV)."""
    pred_dft = pred / "dft" if (pred / "dft").is_dir() else pred
    rows = []
    for sid in structure_ids(dft, depth):
        predicted_file = pred_dft / sid / "hamiltonian_pred.h5"
        if not predicted_file.is_file():
            continue
        structure = load_structure(dft / "dft" / sid, sid=sid)
        if not structure.info.spinful or structure.info.occupation is None:
            raise DataError("needs a spinful structure with occupation in info.json", structure=sid)
        n = int(round(structure.info.occupation))
        predicted_h = read_matrix_h5(predicted_file, structure=sid)
        errors = eigenvalue_errors(structure, predicted_h)
        reference = 1e3 * frontier_splitting_eV(errors.dft[0], n)
        predicted = 1e3 * frontier_splitting_eV(errors.predicted[0], n)
        h0_sum, t_sum, h0_n, t_n = part_errors(structure.matrices["H"], predicted_h)
        rows.append(
            {
                "sid": sid,
                "kind": sid.split("/")[0],
                "dft_meV": reference,
                "predicted_meV": predicted,
                "h0_abs_sum_eV": h0_sum,
                "t_abs_sum_eV": t_sum,
                "h0_entries": h0_n,
                "t_entries": t_n,
            }
        )
    if not rows:
        raise SystemExit(f"soc_splitting.py: no hamiltonian_pred.h5 under {pred_dft} matches {dft / 'dft'}")
    return rows


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per kind and 'all': structures, mean DFT and predicted splitting, MAE of the splitting (meV)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["kind"]].append(row)
        groups["all"].append(row)
    out = {}
    for kind, members in groups.items():
        ref = np.array([r["dft_meV"] for r in members])
        got = np.array([r["predicted_meV"] for r in members])
        out[kind] = {
            "structures": len(members),
            "dft_meV": float(ref.mean()),
            "predicted_meV": float(got.mean()),
            "mae_meV": float(np.abs(got - ref).mean()),
            "h0_mae_meV": 1e3
            * sum(r["h0_abs_sum_eV"] for r in members)
            / sum(r["h0_entries"] for r in members),
            "t_mae_meV": 1e3 * sum(r["t_abs_sum_eV"] for r in members) / sum(r["t_entries"] for r in members),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dft", type=Path, required=True, help="spinful DeepH-format folder (holds dft/)")
    parser.add_argument("--pred", type=Path, required=True, help="hamflow infer run folder (or its dft/)")
    parser.add_argument("--depth", type=int, default=None, help="data_dir_depth (found if omitted)")
    parser.add_argument("--json", type=Path, help="also write the rows and the summary here")
    args = parser.parse_args(argv)
    depth = find_depth(args.dft) if args.depth is None else args.depth
    rows = compare(args.dft, args.pred, depth)
    table = summary(rows)
    print(
        "| molecules | structures | DFT splitting meV | predicted meV | splitting MAE meV "
        "| MAE of H0 meV | MAE of T meV |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, figures in sorted(table.items(), key=lambda item: item[0] == "all"):
        print(
            f"| {kind} | {figures['structures']} | {figures['dft_meV']:.1f} | "
            f"{figures['predicted_meV']:.1f} | {figures['mae_meV']:.1f} | {figures['h0_mae_meV']:.2f} | "
            f"{figures['t_mae_meV']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
