"""`hamflow plot`: every figure a run directory and an evaluation folder allow, as real PNG images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from hamflow.cli import main
from hamflow.data.matrix_h5 import read_matrix_h5, write_matrix_h5
from hamflow.errors import DataError
from hamflow.infer.evaluate import evaluate_predictions
from hamflow.infer.plots import plot_all, read_element_pairs, read_metrics_csv

METRICS_CSV = """epoch,step,wall_time_s,train_loss,validate_loss,validate_mae,learning_rate,lr_scale
1,10,3.1,2.5,2.9,0.41,0.0003,0.1
2,20,5.0,1.2,1.6,0.22,0.003,1
3,30,7.2,0.6,nan,nan,0.0015,0.5
"""


@pytest.fixture(scope="module")
def evaluation(deeph_dock: Path, tmp_path_factory) -> Path:
    """An evaluation of a perturbed MoTe2 prediction (periodic: with a band structure)."""
    root = tmp_path_factory.mktemp("plots")
    source = deeph_dock / "periodic" / "dft"
    reference = read_matrix_h5(source / "MoTe2" / "hamiltonian.h5")
    noise = np.random.default_rng(1).normal(0.0, 2e-3, reference.entries.shape)
    write_matrix_h5(
        root / "pred" / "MoTe2" / "hamiltonian_pred.h5",
        dataclasses.replace(reference, entries=reference.entries + noise),
        dtype=np.float32,
    )
    evaluate_predictions(source, root / "pred", out_dir=root / "eval")
    return root / "eval"


def _check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas
    return image


def test_plot_all_makes_every_figure(evaluation: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(METRICS_CSV)
    written = plot_all([run, evaluation], tmp_path / "png")
    names = sorted(p.name for p in written)
    assert names == ["bands_MoTe2.png", "element_pair_mae.png", "parity.png", "training_curves.png"]
    for path in written:
        _check_png(path)


def test_readers(evaluation: Path, tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(METRICS_CSV)
    columns = read_metrics_csv(tmp_path / "metrics.csv")
    assert columns["epoch"].tolist() == [1, 2, 3]
    assert np.isnan(columns["validate_loss"][2])
    elements, matrix, unit = read_element_pairs(evaluation / "per_element_pair.csv")
    assert elements == ["Mo", "Te"] and unit == "meV"
    assert np.isfinite(matrix).all() and 1.0 < np.nanmean(matrix) < 3.0  # 2 meV noise -> ~1.6 meV MAE


def test_nothing_to_plot_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(DataError, match="nothing to plot"):
        plot_all([tmp_path], tmp_path / "png")
    (tmp_path / "metrics.csv").write_text("epoch,step\n")
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "png")]) == 1
    err = capsys.readouterr().err
    assert "no epochs recorded yet" in err and err.count("\n") == 1
