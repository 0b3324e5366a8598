"""PNG figures of a training run and of an evaluation (matplotlib, Agg backend, written atomically).

  training_curves.png     train / validate loss, validation MAE and the learning rate per epoch
                          (a run's metrics.csv)
  parity.png              predicted vs DFT matrix entries, and the distribution of |error|
  element_pair_mae.png    heat map of the MAE (meV) for each element pair (i row, j column)
  bands_<sid>.png         DFT (black) and predicted (red, dashed) bands along the K_PATH, E - E_F
  bands.png               ``hamflow bands``: the bands of one structure (:func:`plot_band_structure`)

:func:`plot_all` makes every figure its sources allow: a run directory (holding metrics.csv) and/or an
evaluation folder (holding metrics.json from ``hamflow evaluate``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_path
from hamflow.errors import DataError

#: energy range shown around the Fermi level in band plots (eV)
BAND_WINDOW_EV = 6.0


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return path


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_metrics_csv(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a run's metrics.csv as float arrays (missing values NaN)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataError(f"cannot read: {error}", file=path) from None
    if not rows:
        raise DataError("no epochs recorded yet", file=path)
    if "epoch" not in rows[0]:
        raise DataError("not a metrics.csv: no 'epoch' column", file=path)
    return {name: np.array([_float(row.get(name, "")) for row in rows]) for name in rows[0]}


def _target_type(run_dir: Path) -> str | None:
    """``target_type`` of the run's model/model.json, or None when it cannot be read."""
    try:
        return str(json.loads((run_dir / "model" / "model.json").read_text(encoding="utf-8"))["target_type"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plot_training_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Loss (train, validate; log scale when positive), validation MAE (meV for H) and learning rate
    against epoch."""
    from matplotlib.ticker import MaxNLocator

    metrics_csv = Path(metrics_csv)
    columns = read_metrics_csv(metrics_csv)
    epoch = columns["epoch"]
    mae = columns.get("validate_mae")
    show_mae = mae is not None and bool(np.isfinite(mae).any())
    figure = _figure(7.0, 8.0 if show_mae else 6.0)
    panels = figure.subplots(3 if show_mae else 2, 1, sharex=True)
    loss_axes, lr_axes = panels[0], panels[-1]
    marker = "." if len(epoch) <= 60 else None
    for name, label, style in (("train_loss", "train", "-"), ("validate_loss", "validate", "--")):
        values = columns.get(name)
        if values is not None and np.isfinite(values).any():
            loss_axes.plot(epoch, values, style, marker=marker, label=label)
    finite = np.concatenate([v[np.isfinite(v)] for k, v in columns.items() if k.endswith("_loss")])
    if finite.size and (finite > 0).all():
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel("loss (normalised units)")
    loss_axes.legend()
    if show_mae:
        target = _target_type(metrics_csv.parent)
        factor, unit = (1000.0, "meV") if target in (None, "H") else (1.0, "electrons")
        panels[1].plot(epoch, mae * factor, color="tab:purple", marker=marker)
        if (mae[np.isfinite(mae)] > 0).all():
            panels[1].set_yscale("log")
        panels[1].set_ylabel(f"validate MAE ({unit})")
    rate = columns.get("learning_rate")
    if rate is not None and np.isfinite(rate).any():
        lr_axes.plot(epoch, rate, color="tab:green")
        positive = rate[np.isfinite(rate)]
        if (positive > 0).all():
            lr_axes.set_yscale("log")
    lr_axes.set_ylabel("learning rate")
    lr_axes.set_xlabel("epoch")
    lr_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in panels:
        axes.grid(True, alpha=0.3)
    return _save(figure, Path(path))


def plot_parity(parity_npz: str | Path, path: str | Path, *, mae_text: str = "") -> Path:
    """Predicted vs DFT entries (hexbin, log counts) beside the histogram of |error| (meV)."""
    with np.load(parity_npz) as data:
        reference, predicted = np.asarray(data["dft"]), np.asarray(data["predicted"])
        target = str(data["target"]) if "target" in data.files else "H"
    unit = "eV" if target == "H" else "electrons"
    figure = _figure(11.0, 4.8)
    parity_axes, hist_axes = figure.subplots(1, 2)
    low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
    cells = parity_axes.hexbin(reference, predicted, gridsize=80, bins="log", mincnt=1, cmap="viridis")
    figure.colorbar(cells, ax=parity_axes, label="entries")
    parity_axes.plot([low, high], [low, high], color="tab:red", linewidth=0.8)
    parity_axes.set_xlabel(f"DFT {target} entry ({unit})")
    parity_axes.set_ylabel(f"predicted {target} entry ({unit})")
    parity_axes.set_title(f"parity ({reference.size} entries)")
    errors = np.abs(predicted - reference) * 1000.0
    positive = errors[errors > 0]
    if positive.size:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max() * 1.0001 + 1e-300), 60)
        hist_axes.hist(positive, bins=bins, color="tab:blue")
        hist_axes.set_xscale("log")
    hist_axes.axvline(
        float(errors.mean()), color="tab:red", linestyle="--", label=f"mean {errors.mean():.3g}"
    )
    hist_axes.set_xlabel("|error| (meV)" if target == "H" else "|error| (1e-3 electrons)")
    hist_axes.set_ylabel("entries")
    hist_axes.set_title(mae_text or "error distribution")
    hist_axes.legend()
    return _save(figure, Path(path))


def read_element_pairs(per_element_pair_csv: str | Path) -> tuple[list[str], np.ndarray, str]:
    """(elements, (n, n) MAE matrix with NaN for absent pairs, column unit) of per_element_pair.csv."""
    path = Path(per_element_pair_csv)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise DataError(f"cannot read: {error}", file=path) from None
    if not rows:
        raise DataError("no element pairs", file=path)
    mae_column = next((name for name in rows[0] if name.startswith("mae_")), None)
    if mae_column is None:
        raise DataError("no mae_* column", file=path)
    elements = sorted({row["element_i"] for row in rows} | {row["element_j"] for row in rows})
    matrix = np.full((len(elements), len(elements)), np.nan)
    for row in rows:
        matrix[elements.index(row["element_i"]), elements.index(row["element_j"])] = _float(row[mae_column])
    return elements, matrix, mae_column.removeprefix("mae_")


def plot_element_pair_heatmap(per_element_pair_csv: str | Path, path: str | Path) -> Path:
    """Heat map of the MAE per element pair, each cell annotated with its value."""
    elements, matrix, unit = read_element_pairs(per_element_pair_csv)
    size = max(3.5, 0.7 * len(elements) + 2.5)
    figure = _figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="magma_r")
    figure.colorbar(image, ax=axes, label=f"MAE ({unit})")
    axes.set_xticks(range(len(elements)), elements)
    axes.set_yticks(range(len(elements)), elements)
    axes.set_xlabel("element j")
    axes.set_ylabel("element i")
    finite = matrix[np.isfinite(matrix)]
    middle = float(np.nanmean(finite)) if finite.size else 0.0
    if len(elements) <= 12:
        for i in range(len(elements)):
            for j in range(len(elements)):
                if np.isfinite(matrix[i, j]):
                    colour = "white" if matrix[i, j] > middle else "black"
                    axes.text(j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", color=colour, fontsize=9)
    axes.set_title("MAE by element pair")
    return _save(figure, Path(path))


def path_segments(num_points: int, label_index: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) point of each K_PATH segment from its (start, end) label indices; one segment
    over all points when there are no labels."""
    index = [int(i) for i in label_index]
    if len(index) < 2:
        return [(0, num_points - 1)]
    return [(index[k], index[k + 1]) for k in range(0, len(index) - 1, 2)]


def path_distance(k_frac: np.ndarray, lattice: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """(n_k,) position along the path (1/Angstrom; index steps when the lattice is unknown).

    Inside a segment the position grows by the Cartesian length of each k step; a segment starts
    where the previous one ended, so a jump between different k points (U|K) takes no length.
    """
    if np.isfinite(lattice).all():
        cartesian = k_frac @ (2.0 * np.pi * np.linalg.inv(lattice).T)
    else:
        cartesian = np.arange(len(k_frac), dtype=np.float64)[:, None]
    steps = np.concatenate([[0.0], np.linalg.norm(np.diff(cartesian, axis=0), axis=1)])
    for first, _ in segments:
        steps[first] = 0.0
    return np.cumsum(steps)


def _path_ticks(axes, x: np.ndarray, label_index: np.ndarray, label_names: Sequence[str]) -> None:
    """Vertical lines and tick labels at the special points (Γ for GAMMA / G; U|K at a jump)."""
    ticks: dict[float, str] = {}
    for index, name in zip(label_index, label_names, strict=True):
        position = float(x[int(index)])
        pretty = "Γ" if name.upper() in ("GAMMA", "G") else name
        known = ticks.get(position)
        ticks[position] = pretty if known in (None, pretty) else f"{known}|{pretty}"
    for position in ticks:
        axes.axvline(position, color="grey", linewidth=0.5)
    axes.set_xticks(list(ticks), list(ticks.values()))


def plot_bands(bands_npz: str | Path, path: str | Path) -> Path:
    """DFT and predicted bands along the path, segment by segment, energies relative to E_F (eV)."""
    with np.load(bands_npz) as data:
        sid = str(data["sid"])
        k_frac, lattice = np.asarray(data["k_frac"]), np.asarray(data["lattice"])
        dft, predicted = np.asarray(data["dft"]), np.asarray(data["predicted"])
        fermi = float(data["fermi_energy"])
        label_index, label_names = np.asarray(data["label_index"]), [str(n) for n in data["label_names"]]
    reference = 0.0 if math.isnan(fermi) else fermi
    segments = path_segments(len(k_frac), label_index)
    x = path_distance(k_frac, lattice, segments)
    figure = _figure(6.5, 5.0)
    axes = figure.add_subplot()
    for number, (first, last) in enumerate(segments):
        points = slice(first, last + 1)
        for band in range(dft.shape[1]):
            legend = number == 0 and band == 0
            axes.plot(x[points], dft[points, band] - reference, color="black", linewidth=1.0,
                      label="DFT" if legend else None)  # fmt: skip
            axes.plot(x[points], predicted[points, band] - reference, color="tab:red", linestyle="--",
                      linewidth=1.0, label="predicted" if legend else None)  # fmt: skip
    _path_ticks(axes, x, label_index, label_names)
    axes.axhline(0.0, color="tab:blue", linewidth=0.6, linestyle=":")
    axes.set_xlim(float(x[0]), float(x[-1]))
    axes.set_ylim(-BAND_WINDOW_EV, BAND_WINDOW_EV)
    axes.set_ylabel("E - E_F (eV)" if not math.isnan(fermi) else "E (eV)")
    axes.set_title(f"bands of {sid}")
    axes.legend(loc="upper right")
    return _save(figure, Path(path))


def _mae_text(metrics_json: Path) -> str:
    try:
        metrics = json.loads(metrics_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    unit = metrics.get("unit", "meV")
    mae = metrics.get("overall", {}).get(f"mae_{unit}")
    gauge = " (gauge-corrected)" if metrics.get("standardize_gauge") else ""
    return f"MAE {mae:.4g} {unit}{gauge}" if isinstance(mae, int | float) else ""


def plot_all(sources: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Every figure the sources allow, into ``out_dir``; DataError when a source gives none.

    A source is a run directory (metrics.csv) and/or an evaluation folder (metrics.json, parity.npz,
    per_element_pair.csv, bands/*.npz).
    """
    out = Path(out_dir)
    written: list[Path] = []
    for source in (Path(s) for s in sources):
        if not source.is_dir():
            raise DataError("not a folder (expected a run directory or an evaluation folder)", file=source)
        made = []
        if (source / "metrics.csv").is_file():
            made.append(plot_training_curves(source / "metrics.csv", out / "training_curves.png"))
        if (source / "metrics.json").is_file():
            if (source / "parity.npz").is_file():
                made.append(
                    plot_parity(
                        source / "parity.npz", out / "parity.png", mae_text=_mae_text(source / "metrics.json")
                    )
                )
            if (source / "per_element_pair.csv").is_file():
                made.append(
                    plot_element_pair_heatmap(source / "per_element_pair.csv", out / "element_pair_mae.png")
                )
            for bands in sorted((source / "bands").glob("*.npz")):
                made.append(plot_bands(bands, out / f"bands_{bands.stem}.png"))
        if not made:
            raise DataError(
                "nothing to plot: expected metrics.csv (a run directory) or metrics.json (hamflow evaluate)",
                file=source,
            )
        written.extend(made)
    return written


def plot_band_structure(bands_npz: str | Path, path: str | Path) -> Path:
    """The bands of ``hamflow bands`` (its bands.npz) along the path, relative to E_F when known.

    The energy range is the bands' own (``num_bands`` around a target), at most E_F +- 6 eV when all
    states were computed; a single k-point (a molecule at Gamma) is drawn as levels.
    """
    with np.load(bands_npz) as data:
        sid, solver = str(data["sid"]), str(data["solver"])
        distances, values = np.asarray(data["distances"]), np.asarray(data["eigenvalues"])
        fermi, around = float(data["fermi_energy"]), float(data["around"])
        label_index, label_names = np.asarray(data["label_index"]), [str(n) for n in data["label_names"]]
    reference = 0.0 if math.isnan(fermi) else fermi
    shown = values - reference
    figure = _figure(6.5, 5.0)
    axes = figure.add_subplot()
    if len(distances) == 1:
        for level in shown[0]:
            axes.axhline(level, color="black", linewidth=1.0)
        axes.set_xticks([])
    else:
        for first, last in path_segments(len(distances), label_index):
            points = slice(first, last + 1)
            axes.plot(distances[points], shown[points], color="black", linewidth=1.0)
        _path_ticks(axes, distances, label_index, label_names)
        axes.set_xlim(float(distances[0]), float(distances[-1]))
    if not math.isnan(fermi):
        axes.axhline(0.0, color="tab:blue", linewidth=0.6, linestyle=":")
    low, high = float(shown.min()), float(shown.max())
    if math.isnan(around):  # every state: the window around E_F (or the whole range without one)
        centre = 0.0 if not math.isnan(fermi) else 0.5 * (low + high)
        low, high = max(low, centre - BAND_WINDOW_EV), min(high, centre + BAND_WINDOW_EV)
    margin = 0.05 * max(high - low, 1e-3)
    axes.set_ylim(low - margin, high + margin)
    axes.set_ylabel("E - E_F (eV)" if not math.isnan(fermi) else "E (eV)")
    axes.set_title(f"bands of {sid} ({values.shape[1]} per k, {solver})")
    return _save(figure, Path(path))
