"""deepx.log carries DeepH-pack's ``test-step`` lines, and DeepH-dock's own log readers parse them.

A tiny training run on the demo H2O molecules ends with its test pass; DeepH-dock 0.9.11's
``ErrorStructureDistributionAnalyzerWithLog`` and ``ErrorElementsDistAnalyzerWithLog``
(``deepx_dock.analyze.error.with_train_log``, behind ``dock analyze error structure-logfile`` /
``element-logfile``) then read the run's deepx.log in a Python >= 3.12 (the ``deepx_run`` fixture,
tests/deepx_venv.py), and the structure ids and errors they find must equal hamflow's
``test_metrics.csv``.

The module that holds those readers imports matplotlib and mendeleev at its top for its plots; the
cached venv installs neither (tests/deepx_venv.py), so the reader script lets those two names import
as empty modules when they are not installed. The log-reading code never touches them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from training_setup import tiny_config

from hamflow.train import run as train_run
from hamflow.train.checkpoint import RunLayout
from hamflow.train.test_pass import StructureResult, read_test_metrics, step_lines

READER_SCRIPT = """
import importlib.abc, importlib.util, json, sys

STUBBED = ("matplotlib", "mendeleev")  # imported for plotting only; empty where not installed


class _Empty(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBBED:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        pass


sys.meta_path.append(_Empty())  # last: a real installation is found first
from deepx_dock.analyze.error.with_train_log import (
    ErrorElementsDistAnalyzerWithLog,
    ErrorStructureDistributionAnalyzerWithLog,
)

log, dft_dir, out = sys.argv[1:4]
structures = ErrorStructureDistributionAnalyzerWithLog(log)
structures.analyze_all()
elements = ErrorElementsDistAnalyzerWithLog(log, dft_dir)
elements.analyze_all()
with open(out, "w") as handle:
    json.dump(
        {
            "sids": list(structures.sids),
            "errors": [float(e) for e in structures.errors],
            "average": float(structures.average_error),
            "elem_error": {k: float(v) for k, v in elements.elem_error.items()},
            "elem_count": elements.elem_count,
        },
        handle,
    )
"""


def test_step_lines_match_deeph_dock_patterns() -> None:
    """The line pair has what DeepH-dock's reader looks for (checked here with its regexes)."""
    head, loss = step_lines(StructureResult(7, "h2o/0003", 1.5e-3, 0.25, 529), "mse")
    assert "test-step" in head and "Structure ID(s):" in head and "Curr-Loss" not in head
    assert "test-step" in loss and "Curr-Loss" in loss and "Structure ID(s):" not in loss
    assert re.search(r"Step (\d+)", head).group(1) == re.search(r"Step (\d+)", loss).group(1) == "7"
    assert eval(head.split("Structure ID(s):")[-1]) == ["h2o/0003"]  # DeepH-dock evals this part
    assert float(re.search(r"Curr-Loss (\S+)", loss).group(1).replace("|", "")) == 1.5e-3


@pytest.mark.slow
def test_deeph_dock_reads_the_test_pass_of_a_training_log(
    h2o_dir: Path, jax_cache: Path, tmp_path: Path, deepx_run
) -> None:
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 2})
    train_run.train(cfg, run_dir=tmp_path / "run")
    layout = RunLayout(tmp_path / "run")
    ours = read_test_metrics(layout.test_metrics)
    split = json.loads(layout.split.read_text())
    assert [r.sid for r in ours] == split["test"] and len(ours) == 2
    assert all(r.mae > 0 and r.entries > 0 for r in ours)
    log = layout.log.read_text()
    assert log.count("Structure ID(s):") == 2 and "best model" in log

    out = tmp_path / "deeph_dock.json"
    deepx_run(READER_SCRIPT, str(layout.log), str(h2o_dir / "dft"), str(out))
    theirs = json.loads(out.read_text())
    assert theirs["sids"] == [r.sid for r in ours]
    assert theirs["errors"] == [r.mae for r in ours]
    # every H2O structure holds both elements: each element's error is the mean over the structures
    mean = sum(r.mae for r in ours) / len(ours)
    assert set(theirs["elem_error"]) == {"H", "O"}
    assert theirs["elem_count"] == {"H": 2, "O": 2}
    for value in theirs["elem_error"].values():
        assert value == pytest.approx(mean, rel=1e-12)
    assert theirs["average"] == pytest.approx(mean, rel=1e-12)

    # a rerun of the finished run trains nothing and writes no second test pass
    train_run.train(cfg, run_dir=tmp_path / "run")
    assert layout.log.read_text().count("Structure ID(s):") == 2
