"""Train a tiny real network for 2 epochs on DeepH-dock's H2O, then infer, evaluate and plot.

The sharp check: without symmetrisation, `hamflow evaluate` on the validation structure reproduces the
validation MAE the training loop logged for the best epoch, so inference applies the same parameters,
normaliser and masks as training. Several minutes on 2 loaded cores (XLA compiles the network).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import jax
import pytest

from hamflow.cli import main

pytestmark = pytest.mark.slow

TRAIN_TOML = """
[system]
device = "cpu*1"
float_type = "fp32"
random_seed = 7
log_level = "warning"
jax_memory_preallocate = false
show_train_process_bar = false
[data]
inputs_dir = "{inputs}"
outputs_dir = "{outputs}"
[data.graph]
dataset_name = "E2E"
graph_type = "H"
parallel_num = 1
[model]
net_type = "sparrow"
target_type = "H"
loss_type = "mse"
[model.advanced]
gaussian_basis_rmax = 5.0
net_irreps = "4x0e+2x1o+2x1e+2x2e+2x2o+1x3o+1x3e+1x4e"
num_blocks = 1
consider_parity = true
[process.train]
max_epoch = 2
[process.train.dataloader]
batch_size = 2
train_size = 3
validate_size = 1
test_size = 0
[process.train.optimizer]
type = "adamw"
init_learning_rate = 3e-3
[process.train.scheduler]
type = "warmup_cosine_decay"
warmup_steps = 1
"""

INFER_TOML = """
[system]
device = "cpu*1"
log_level = "warning"
jax_memory_preallocate = false
[data]
inputs_dir = "{inputs}"
outputs_dir = "{outputs}"
[data.graph]
dataset_name = "E2E-INFER"
parallel_num = 1
[model]
model_dir = "{model}"
[process.infer]
target_symmetrize = false
[process.infer.dataloader]
batch_size = 4
"""


@pytest.fixture
def restore_x64():
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


def test_train_infer_evaluate_plot(deeph_dock: Path, tmp_path: Path, restore_x64) -> None:
    inputs = tmp_path / "inputs"
    for sid in ("138", "282", "1009", "3573"):
        shutil.copytree(deeph_dock / "h2o" / "dft" / sid, inputs / "dft" / sid)
    new = inputs / "dft" / "new"  # a structure with no DFT H: predicted, not compared
    new.mkdir()
    for name in ("POSCAR", "info.json", "overlap.h5"):
        shutil.copy(deeph_dock / "h2o" / "dft" / "1978" / name, new / name)

    train_toml = tmp_path / "train.toml"
    train_inputs = tmp_path / "train-inputs"
    shutil.copytree(inputs, train_inputs, ignore=shutil.ignore_patterns("new"))
    train_toml.write_text(TRAIN_TOML.format(inputs=train_inputs, outputs=tmp_path / "outputs"))
    run = tmp_path / "run"
    assert main(["train", str(train_toml), "--run-dir", str(run)]) == 0

    infer_toml = tmp_path / "infer.toml"
    infer_toml.write_text(INFER_TOML.format(inputs=inputs, outputs=tmp_path / "outputs", model=run / "model"))
    assert main(["infer", str(infer_toml), "--run-dir", str(tmp_path / "infer")]) == 0
    predicted = sorted(p.parent.name for p in (tmp_path / "infer" / "dft").glob("*/hamiltonian_pred.h5"))
    assert predicted == ["1009", "138", "282", "3573", "new"]

    split = json.loads((run / "dataset_split.json").read_text())
    evaluation = tmp_path / "eval"
    assert main(
        ["evaluate", "--dft", str(inputs), "--pred", str(tmp_path / "infer"), "--out", str(evaluation),
         "--split", str(run / "dataset_split.json"), "--part", "validate", "--no-bands"]
    ) == 0  # fmt: skip
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["structures"] == len(split["validate"]) == 1
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    best = min(rows, key=lambda row: float(row["validate_loss"]))
    logged_mae_mev = float(best["validate_mae"]) * 1000.0
    assert metrics["overall"]["mae_meV"] == pytest.approx(logged_mae_mev, rel=2e-4)

    everything = tmp_path / "eval-all"
    assert main(
        ["evaluate", "--dft", str(inputs), "--pred", str(tmp_path / "infer"), "--out", str(everything),
         "--gauge"]
    ) == 0  # fmt: skip
    assert list(json.loads((everything / "metrics.json").read_text())["not_compared"]) == ["new"]
    assert main(["plot", str(run), str(everything), "--out", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").glob("*.png")) == [
        "element_pair_mae.png",
        "parity.png",
        "training_curves.png",
    ]
