"""Training with DeepH-pack's natural-parity sparrow irreps (``16x0e+8x1o+8x2e+4x3o+4x4e`` style, with
consider_parity = true) and with all-even irreps without parity, on the demo molecules (basis s3p2d1,
once refused with "lacks 1e, 2o, 3e") and on DeepH-dock's periodic MoTe2 crystal (s3p2d2); and
``net_irreps = ""`` still derives the default from the basis."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from training_setup import INFER_TOML, REPO, tiny_config

from hamflow.cli import main
from hamflow.config.train_config import dump_train_config, load_train_config, with_overrides
from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.graph.basis import parse_orbital_types
from hamflow.graph.irreps import default_net_irreps
from hamflow.train import run as train_run
from hamflow.train.saved_model import model_spec

pytestmark = pytest.mark.slow

NATURAL = "8x0e+4x1o+4x2e+2x3o+2x4e"
EVEN = "8x0e+4x1e+4x2e+2x3e+2x4e"


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize(("irreps", "parity"), [(NATURAL, True), (EVEN, False)], ids=["natural", "even"])
def test_demo_molecules_train_with_natural_or_even_irreps(h2o_dir, jax_cache, tmp_path, irreps, parity):
    cfg = tiny_config(
        h2o_dir,
        tmp_path,
        jax_cache,
        **{
            "model.advanced.net_irreps": irreps,
            "model.advanced.consider_parity": parity,
            "process.train.max_epoch": 3,
        },
    )
    result = train_run.train(cfg, run_dir=tmp_path / "run")
    assert result.epochs_done == 3 and result.stopped_because == "max_epoch"
    curve = losses(tmp_path / "run")
    print(f"{irreps} (parity {parity}) train losses: {curve}")
    assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]
    resolved = load_train_config(tmp_path / "run" / "model" / "train.toml")
    assert resolved.model.advanced.net_irreps == irreps


def test_periodic_crystal_trains_and_infers_with_natural_irreps(deeph_dock, jax_cache, tmp_path):
    """`hamflow train` then `hamflow infer` on DeepH-dock's MoTe2 (R != 0 pairs, basis s3p2d2)."""
    inputs = tmp_path / "inputs"
    shutil.copytree(deeph_dock / "periodic" / "dft" / "MoTe2", inputs / "dft" / "MoTe2")
    cfg = tiny_config(
        inputs,
        tmp_path / "out",
        jax_cache,
        **{
            "data.dft.data_dir_depth": 0,
            "model.advanced.net_irreps": NATURAL,
            "process.train.max_epoch": 3,
            "process.train.dataloader.batch_size": 1,
            "process.train.dataloader.train_size": 1,
            "process.train.dataloader.validate_size": 0,
            "process.train.dataloader.test_size": 0,
            "process.train.dataloader.only_use_train_loss": True,
        },
    )
    train_toml = tmp_path / "train.toml"
    train_toml.write_text(dump_train_config(cfg))
    run = tmp_path / "run"
    assert main(["train", str(train_toml), "--run-dir", str(run)]) == 0
    curve = losses(run)
    print(f"MoTe2 {NATURAL} train losses: {curve}")
    assert len(curve) == 3 and all(math.isfinite(x) for x in curve)

    infer_toml = tmp_path / "infer.toml"
    infer_toml.write_text(INFER_TOML.format(inputs=inputs, outputs=tmp_path / "out", model=run / "model"))
    assert main(["infer", str(infer_toml), "--run-dir", str(tmp_path / "infer")]) == 0
    predicted = read_matrix_h5(tmp_path / "infer" / "dft" / "MoTe2" / "hamiltonian_pred.h5")
    reference = read_matrix_h5(inputs / "dft" / "MoTe2" / "hamiltonian.h5")
    assert predicted.atom_pairs.shape == reference.atom_pairs.shape and predicted.atom_pairs[:, :3].any()
    assert np.isfinite(predicted.entries).all()


@pytest.mark.parametrize("parity", [True, False])
def test_empty_net_irreps_derives_the_default(parity):
    """The seed example's ``net_irreps = ""``: the model spec takes default_net_irreps of the basis."""
    cfg = with_overrides(
        load_train_config(REPO / "config" / "train.toml"),
        {"model.advanced.net_irreps": "", "model.advanced.consider_parity": parity},
    )
    basis = parse_orbital_types("s3p2d1")
    meta = SimpleNamespace(spinful=False, elements_orbital_map={"O": (0, 0, 0, 1, 1, 2), "H": (0, 0, 1)})
    spec = model_spec(cfg, basis, meta)
    assert spec.net_irreps == default_net_irreps(basis, consider_parity=parity, net_type="sparrow")
