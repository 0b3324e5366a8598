"""Training, inference and evaluation on real spin-orbit-coupled data (data/soc: two-component X2C HBr).

`hamflow train` learns the spinful blocks with the spin-orbit readout; `hamflow infer` on the molecule
and on a rotated copy (POSCAR + info.json only, so both go through the neighbour search) gives
predictions that rotate with kron(U, D) per atom and are time-reversal even; `hamflow evaluate`
reports the spinful eigenvalues against the DFT ones.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from training_setup import INFER_TOML, REPO, tiny_config

from hamflow.cli import main
from hamflow.config.train_config import dump_train_config
from hamflow.data.info import read_info
from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.data.poscar import read_poscar, write_poscar
from hamflow.nn.wigner import spinful_basis_rotation
from hamflow.train.saved_model import ModelSpec

pytestmark = pytest.mark.slow

SOC = REPO / "data" / "soc" / "dft"
IRREPS = "8x0e+4x1o+4x1e+4x2e+4x2o+2x3o+2x3e+2x4e+2x4o+2x5e+2x5o"


@pytest.fixture(scope="module")
def trained_soc(tmp_path_factory, jax_cache) -> Path:
    tmp = tmp_path_factory.mktemp("soc")
    inputs = tmp / "inputs"
    for sid in ("000", "001"):
        shutil.copytree(SOC / "hbr" / sid, inputs / "dft" / sid)
    cfg = tiny_config(
        inputs,
        tmp / "out",
        jax_cache,
        **{
            "data.dft.data_dir_depth": 0,
            "model.advanced.net_irreps": IRREPS,
            "process.train.max_epoch": 3,
            "process.train.dataloader.batch_size": 1,
            "process.train.dataloader.train_size": 2,
            "process.train.dataloader.validate_size": 0,
            "process.train.dataloader.test_size": 0,
            "process.train.dataloader.only_use_train_loss": True,
        },
    )
    train_toml = tmp / "train.toml"
    train_toml.write_text(dump_train_config(cfg))
    assert main(["train", str(train_toml), "--run-dir", str(tmp / "run")]) == 0
    return tmp


def test_spinful_training_uses_the_spin_orbit_readout_and_learns(trained_soc: Path) -> None:
    run = trained_soc / "run"
    spec = ModelSpec.load(run / "model" / "model.json")
    assert spec.spinful and spec.spin_orbit
    with open(run / "metrics.csv", newline="") as handle:
        curve = [float(row["train_loss"]) for row in csv.DictReader(handle)]
    print(f"HBr spin-orbit train losses: {curve}")
    assert len(curve) == 3 and all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]


def _rotated_copy(source: Path, target: Path, rotation: np.ndarray) -> None:
    """POSCAR rotated about the molecule's centre, info.json copied: no overlap, so pairs are searched."""
    poscar = read_poscar(source / "POSCAR")
    centre = poscar.positions.mean(axis=0)
    target.mkdir(parents=True)
    moved = dataclasses.replace(poscar, positions=(poscar.positions - centre) @ rotation.T + centre)
    write_poscar(target / "POSCAR", moved)
    shutil.copyfile(source / "info.json", target / "info.json")


def test_predictions_rotate_with_spin_and_orbitals_and_are_time_reversal_even(trained_soc: Path) -> None:
    rotation = Rotation.from_euler("zyx", [0.7, -1.1, 0.4]).as_matrix()
    inputs = trained_soc / "infer_inputs"
    _rotated_copy(SOC / "hbr" / "000", inputs / "dft" / "original", np.eye(3))
    _rotated_copy(SOC / "hbr" / "000", inputs / "dft" / "rotated", rotation)
    infer_toml = trained_soc / "infer.toml"
    infer_toml.write_text(
        INFER_TOML.format(
            inputs=inputs, outputs=trained_soc / "infer_out", model=trained_soc / "run" / "model"
        )
    )
    infer = trained_soc / "infer"
    assert main(["infer", str(infer_toml), "--run-dir", str(infer)]) == 0
    original = read_matrix_h5(infer / "dft" / "original" / "hamiltonian_pred.h5")
    rotated = read_matrix_h5(infer / "dft" / "rotated" / "hamiltonian_pred.h5")
    assert np.iscomplexobj(original.entries)
    info = read_info(SOC / "hbr" / "000" / "info.json")
    elements = read_poscar(SOC / "hbr" / "000" / "POSCAR").elements
    per_atom = [spinful_basis_rotation(info.elements_orbital_map[e], rotation) for e in elements]
    rotated_index = rotated.pair_index()
    scale = np.abs(original.entries).max()
    worst = tr_worst = 0.0
    for n, pair in enumerate(original.atom_pairs):
        i, j = int(pair[3]), int(pair[4])
        block = original.block(n)
        expected = per_atom[i] @ block @ per_atom[j].conj().T
        worst = max(worst, np.abs(rotated.block(rotated_index[tuple(int(x) for x in pair)]) - expected).max())
        ni, nj = block.shape[0] // 2, block.shape[1] // 2
        uu, ud, du, dd = block[:ni, :nj], block[:ni, nj:], block[ni:, :nj], block[ni:, nj:]
        tr_worst = max(tr_worst, np.abs(dd - uu.conj()).max(), np.abs(du + ud.conj()).max())
    print(
        f"predicted HBr: rotation error {worst:.1e} eV, time-reversal error {tr_worst:.1e} eV, "
        f"max |H| {scale:.1f} eV"
    )
    assert worst < 1e-4 * scale
    assert tr_worst < 1e-5 * scale


def test_evaluate_reports_spinful_eigenvalues(trained_soc: Path) -> None:
    infer_toml = trained_soc / "infer_dft.toml"
    infer_toml.write_text(
        INFER_TOML.format(
            inputs=trained_soc / "inputs",
            outputs=trained_soc / "infer_out2",
            model=trained_soc / "run" / "model",
        )
    )
    infer = trained_soc / "infer_dft"
    assert main(["infer", str(infer_toml), "--run-dir", str(infer)]) == 0
    out = trained_soc / "evaluation"
    dft = trained_soc / "inputs" / "dft"
    assert main(["evaluate", "--dft", str(dft), "--pred", str(infer), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    print(json.dumps(metrics, indent=1)[:1500])
    with open(out / "eigenvalues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["sid"] for row in rows} == {"000", "001"}
    # 36 electrons in 74 spin orbitals: one electron per state when spinful
    assert all(int(row["states"]) == 74 and int(row["occupied_states"]) == 36 for row in rows)
    assert all(math.isfinite(float(row["occupied_mae_meV"])) for row in rows)
