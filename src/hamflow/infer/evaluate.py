"""``hamflow evaluate``: predictions (hamiltonian_pred.h5) against DFT files -> metrics JSON and CSVs.

Predictions are found under PRED (``PRED/dft`` when that folder exists, else PRED itself) as
``<sid>/hamiltonian_pred.h5`` (or ``density_matrix_pred.h5``) ``depth`` folder levels deep, and
paired with ``DFT/<sid>/`` (again ``DFT/dft`` when it exists), which must hold POSCAR, info.json and
the DFT matrix; overlap.h5 is needed for the gauge correction and eigenvalues. A prediction without a
DFT matrix to compare with (a new structure) is listed under ``not_compared`` with the reason.

Files written to the output folder (errors in meV for H; for Rho in thousandths of an electron,
columns ``*_milli``):
  metrics.json          overall MAE / max error (gauge-corrected and plain), eigenvalue summary,
                        settings, the structures not compared and why;
  per_structure.csv     sid, pairs, entries, missing/extra pairs, plain and gauge-corrected errors, mu;
  per_element_pair.csv  element_i, element_j, entries, MAE, max error;
  per_shell_pair.csv    element_i, shell_i, element_j, shell_j, entries, MAE, max error;
  eigenvalues.csv       per structure: where (gamma / k_path / grid), occupied and near-Fermi errors;
  parity.npz            ``dft`` and ``predicted`` entries (eV), a seeded subset for the parity plot;
  bands/<sid>.npz       DFT and predicted bands along the K_PATH of periodic structures.
The tables hold the gauge-corrected errors when the correction is on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_path, atomic_write_text
from hamflow.data.matrix_h5 import MATRIX_FILES, read_matrix_h5
from hamflow.data.structure import INFO_FILE, POSCAR_FILE, load_structure
from hamflow.errors import ConfigError, DataError
from hamflow.infer.bands import (
    DEFAULT_K_GRID,
    DEFAULT_WINDOW_EV,
    EigenvalueErrors,
    eigenvalue_errors,
    save_bands,
)
from hamflow.infer.metrics import ErrorSummary, StructureErrors, compare_entries, structure_errors

TARGETS: tuple[str, ...] = ("H", "Rho")
PRED_KEY = {"H": "H_pred", "Rho": "Rho_pred"}
#: column suffix and factor from eV (H) / electrons (Rho)
UNITS = {"H": ("meV", 1000.0), "Rho": ("milli", 1000.0)}
#: entries kept at most in parity.npz
PARITY_TOTAL = 200_000


def resolve_dft_dir(path: str | Path, what: str) -> Path:
    """``path/dft`` when it is a folder, else ``path``; ConfigError naming ``what`` if neither exists."""
    path = Path(path)
    if (path / "dft").is_dir():
        return path / "dft"
    if not path.is_dir():
        raise ConfigError(what, f"= {str(path)!r} is not a folder")
    return path


def find_predictions(pred_dir: Path, depth: int, target: str | None) -> tuple[str, list[str]]:
    """(target, sorted ids) of the prediction files ``depth`` levels below ``pred_dir``.

    ``target`` None picks H when any hamiltonian_pred.h5 exists, else Rho.
    """
    if depth < 0:
        raise ConfigError("--depth", f"= {depth} must be >= 0")
    targets = [target] if target is not None else list(TARGETS)
    for name in targets:
        if name not in TARGETS:
            raise ConfigError("--target", f"= {name!r}; allowed: {', '.join(TARGETS)}")
        pattern = "/".join(["*"] * (depth + 1)) + "/" + MATRIX_FILES[PRED_KEY[name]]
        ids = sorted(
            path.parent.relative_to(pred_dir).as_posix()
            for path in pred_dir.glob(pattern)
            if not any(part.startswith(".") for part in path.relative_to(pred_dir).parts)
        )
        if ids:
            return name, ids
    wanted = " or ".join(MATRIX_FILES[PRED_KEY[name]] for name in targets)
    raise DataError(f"no {wanted} found {depth + 1} folder level(s) below", file=pred_dir)


@dataclass
class StructureReport:
    """What evaluating one structure gave: entry errors and (optionally) eigenvalue errors."""

    errors: StructureErrors
    eigen: EigenvalueErrors | None = None


def evaluate_structure(
    dft_dir: Path,
    pred_dir: Path,
    sid: str,
    *,
    target: str = "H",
    standardize_gauge: bool = False,
    bands: bool = True,
    window: float = DEFAULT_WINDOW_EV,
    k_grid: tuple[int, int, int] = DEFAULT_K_GRID,
) -> StructureReport | str:
    """Errors of one structure, or the reason (a string) why it cannot be compared."""
    folder = dft_dir / sid
    for name in (POSCAR_FILE, INFO_FILE, MATRIX_FILES[target]):
        if not (folder / name).is_file():
            return f"no DFT {name} in {folder}"
    structure = load_structure(folder, sid=sid, quantities=(target, "S"), required=(target,))
    predicted = read_matrix_h5(pred_dir / sid / MATRIX_FILES[PRED_KEY[target]], structure=sid)
    spinful = structure.info.spinful
    comparison = compare_entries(
        structure.matrices[target], predicted, structure.matrices.get("S"), spinful=spinful, structure=sid
    )
    errors = structure_errors(
        comparison,
        structure.poscar.elements,
        structure.info.elements_orbital_map,
        sid=sid,
        standardize_gauge=standardize_gauge,
    )
    eigen = None
    if bands and target == "H" and ("S" in structure.matrices or structure.info.orthogonal_basis):
        eigen = eigenvalue_errors(
            structure, predicted, mu=errors.mu or 0.0, window=window, k_grid=k_grid, h_key="H"
        )
    return StructureReport(errors=errors, eigen=eigen)


@dataclass
class EvaluationResult:
    """Aggregated results and where they were written."""

    out_dir: Path
    target: str
    standardize_gauge: bool
    summary: ErrorSummary
    eigen: list[EigenvalueErrors] = field(default_factory=list)
    not_compared: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _scaled(value: float | None, factor: float) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) * factor


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buffer.getvalue()


def _eigen_summary(eigen: Sequence[EigenvalueErrors], factor: float) -> dict[str, object]:
    def pooled(kind: str) -> tuple[float | None, float | None, int]:
        errors = []
        for item in eigen:
            mask = item.occupied if kind == "occupied" else item.near_fermi
            if mask is not None and mask.any():
                errors.append(np.abs(item.predicted - item.dft)[mask])
        if not errors:
            return None, None, 0
        joined = np.concatenate(errors)
        return float(joined.mean()) * factor, float(joined.max()) * factor, int(joined.size)

    occ_mae, occ_max, occ_n = pooled("occupied")
    near_mae, near_max, near_n = pooled("near_fermi")
    return {
        "structures": len(eigen),
        "occupied": {"states": occ_n, "mae_meV": occ_mae, "max_error_meV": occ_max},
        "near_fermi": {
            "states": near_n,
            "window_eV": eigen[0].window if eigen else None,
            "mae_meV": near_mae,
            "max_error_meV": near_max,
        },
    }


def write_evaluation(result: EvaluationResult, *, dft_dir: Path, pred_dir: Path) -> list[Path]:
    """Write metrics.json, the CSV tables, parity.npz and bands/*.npz into ``result.out_dir``."""
    out = result.out_dir
    unit, factor = UNITS[result.target]
    summary = result.summary
    written: list[Path] = []

    def text(name: str, content: str) -> None:
        atomic_write_text(out / name, content)
        written.append(out / name)

    rows = [
        [
            e.sid,
            e.num_pairs,
            e.num_entries,
            e.missing_pairs,
            e.extra_pairs,
            e.mae * factor,
            e.max_error * factor,
            e.mu,
            _scaled(e.gauge_mae, factor),
            _scaled(e.gauge_max_error, factor),
        ]
        for e in summary.structures
    ]
    text(
        "per_structure.csv",
        _csv_text(
            [
                "sid",
                "pairs",
                "entries",
                "missing_pairs",
                "extra_pairs",
                f"mae_{unit}",
                f"max_error_{unit}",
                "mu_eV",
                f"gauge_mae_{unit}",
                f"gauge_max_error_{unit}",
            ],
            rows,
        ),
    )
    text(
        "per_element_pair.csv",
        _csv_text(
            ["element_i", "element_j", "entries", f"mae_{unit}", f"max_error_{unit}"],
            [
                [a, b, s.count, s.mae * factor, s.maximum * factor]
                for (a, b), s in sorted(summary.element_pairs.items())
            ],
        ),
    )
    text(
        "per_shell_pair.csv",
        _csv_text(
            ["element_i", "shell_i", "element_j", "shell_j", "entries", f"mae_{unit}", f"max_error_{unit}"],
            [
                [a, sa, b, sb, s.count, s.mae * factor, s.maximum * factor]
                for (a, sa, b, sb), s in sorted(summary.shell_pairs.items())
            ],
        ),
    )
    if result.eigen:
        eigen_rows = []
        for item in result.eigen:
            occ_mae, occ_max, occ_n = item.occupied_stats
            near_mae, near_max, near_n = item.near_fermi_stats
            eigen_rows.append(
                [
                    item.sid,
                    item.k_points.kind,
                    item.dft.shape[0],
                    item.dft.shape[1],
                    item.fermi_energy,
                    occ_n,
                    _scaled(occ_mae, 1000.0),
                    _scaled(occ_max, 1000.0),
                    near_n,
                    _scaled(near_mae, 1000.0),
                    _scaled(near_max, 1000.0),
                ]
            )
        text(
            "eigenvalues.csv",
            _csv_text(
                [
                    "sid",
                    "kind",
                    "k_points",
                    "states",
                    "fermi_energy_eV",
                    "occupied_states",
                    "occupied_mae_meV",
                    "occupied_max_error_meV",
                    "near_fermi_states",
                    "near_fermi_mae_meV",
                    "near_fermi_max_error_meV",
                ],
                eigen_rows,
            ),
        )
        for item in result.eigen:
            if item.k_points.kind == "k_path":
                path = out / "bands" / f"{item.sid.replace('/', '__')}.npz"
                save_bands(path, item)
                written.append(path)

    reference = np.concatenate([e.parity_reference for e in summary.structures])
    predicted = np.concatenate([e.parity_predicted for e in summary.structures])
    if reference.size > PARITY_TOTAL:
        take = np.sort(np.random.default_rng(0).choice(reference.size, size=PARITY_TOTAL, replace=False))
        reference, predicted = reference[take], predicted[take]
    with atomic_path(out / "parity.npz", suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, dft=reference, predicted=predicted, target=np.array(result.target))
    written.append(out / "parity.npz")

    metrics = {
        "target": result.target,
        "unit": unit,
        "standardize_gauge": result.standardize_gauge,
        "dft_dir": str(dft_dir),
        "pred_dir": str(pred_dir),
        "structures": len(summary.structures),
        "overall": {
            "entries": summary.overall.count,
            f"mae_{unit}": summary.overall.mae * factor,
            f"max_error_{unit}": summary.overall.maximum * factor,
            f"plain_mae_{unit}": summary.overall_plain.mae * factor,
            f"plain_max_error_{unit}": summary.overall_plain.maximum * factor,
            f"mean_structure_mae_{unit}": float(np.mean([e.reported_mae for e in summary.structures]))
            * factor,
        },
        "eigenvalues": _eigen_summary(result.eigen, 1000.0) if result.eigen else None,
        "not_compared": result.not_compared,
        "files": sorted(p.relative_to(out).as_posix() for p in written),
    }
    text("metrics.json", json.dumps(metrics, indent=1) + "\n")
    return written


def evaluate_predictions(
    dft: str | Path,
    pred: str | Path,
    *,
    out_dir: str | Path,
    depth: int = 0,
    target: str | None = None,
    standardize_gauge: bool = False,
    bands: bool = True,
    window: float = DEFAULT_WINDOW_EV,
    k_grid: tuple[int, int, int] = DEFAULT_K_GRID,
    ids: Sequence[str] | None = None,
    jobs: int = 1,
) -> EvaluationResult:
    """Compare every prediction under ``pred`` with the DFT files under ``dft``; write the results.

    ids: only these structures (others found are ignored; an id without a prediction is an error).
    jobs: parallel worker processes (<= 0: all cores).
    """
    dft_dir = resolve_dft_dir(dft, "--dft")
    pred_dir = resolve_dft_dir(pred, "--pred")
    target, found = find_predictions(pred_dir, depth, target)
    if ids is not None:
        have = set(found)
        missing = [sid for sid in ids if sid not in have]
        if missing:
            raise DataError(
                f"{len(missing)} requested structure(s) have no {MATRIX_FILES[PRED_KEY[target]]} "
                f"(first: {missing[0]})",
                file=pred_dir,
            )
        found = [sid for sid in found if sid in set(ids)]
    options = {
        "target": target,
        "standardize_gauge": standardize_gauge,
        "bands": bands,
        "window": window,
        "k_grid": tuple(k_grid),
    }
    workers = (os.cpu_count() or 1) if jobs <= 0 else jobs
    if workers > 1 and len(found) > 1:
        from joblib import Parallel, delayed

        reports = Parallel(n_jobs=min(workers, len(found)))(
            delayed(evaluate_structure)(dft_dir, pred_dir, sid, **options) for sid in found
        )
    else:
        reports = [evaluate_structure(dft_dir, pred_dir, sid, **options) for sid in found]
    result = EvaluationResult(
        out_dir=Path(out_dir), target=target, standardize_gauge=standardize_gauge, summary=ErrorSummary()
    )
    for sid, report in zip(found, reports, strict=True):
        if isinstance(report, str):
            result.not_compared[sid] = report
            continue
        result.summary.add(report.errors)
        if report.eigen is not None:
            result.eigen.append(report.eigen)
    if not result.summary.structures:
        first = next(iter(result.not_compared.items()))
        raise DataError(
            f"none of the {len(found)} prediction(s) has DFT data to compare with "
            f"(structure {first[0]}: {first[1]})",
            file=dft_dir,
        )
    result.files = write_evaluation(result, dft_dir=dft_dir, pred_dir=pred_dir)
    return result
