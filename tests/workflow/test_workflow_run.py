"""The whole workflow on the demo subset, then what reruns after a change, a forced rerun, a fine-tune.

One run (module fixture ``finished_run``) is made once; the rerun questions are asked as dry runs of
that finished run, so they show Snakemake's plan without paying for the jobs. The fine-tune test runs
for real (run B from A, then A retrained).
"""

from __future__ import annotations

import csv
from collections import Counter
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from workflow_harness import Workflow

pytestmark = pytest.mark.slow

SHARDS = 3  # 10 structures, shard_size 4
# training and what follows it: inference of the held-out structures, evaluation, figures
FROM_TRAIN = Counter({"train": 1, "infer": 1, "evaluate": 1, "plot": 1, "all": 1})


def test_full_run_writes_a_deeph_pack_run_directory(finished_run: Workflow) -> None:
    run_dir = finished_run.run_dir("A")
    for name in ("deepx.log", "metrics.csv", "dataset_split.json", "TRAINING_DONE", "model/train.toml"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "model" / "params" / "best" / "meta.json").is_file()
    # the demo's latest_interval (10) exceeds max_epoch (2): the last epoch is saved
    assert [path.name for path in (run_dir / "model" / "params" / "latest").glob("epoch_*")] == ["epoch_2"]
    with open(run_dir / "metrics.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2]
    assert not (finished_run.root / "results" / "runs" / "A.partial").exists()
    data = finished_run.root / "results" / "data" / "A"
    assert sorted(path.name for path in (data / "graph").glob("*.h5")) == [
        f"{k}-of-{SHARDS}.h5" for k in range(SHARDS)
    ]
    assert (data / "graph.h5").is_file()
    results = finished_run.root / "results"
    assert len(list((results / "infer" / "A" / "dft").rglob("hamiltonian_pred.h5"))) == 2  # test part
    assert (results / "eval" / "A" / "metrics.json").is_file()
    assert {path.name for path in (results / "plots" / "A").glob("*.png")} >= {
        "training_curves.png",
        "parity.png",
        "element_pair_mae.png",
    }


def test_report_holds_the_figures(finished_run: Workflow) -> None:
    finished_run.snakemake("--report", "report.html")
    report = (finished_run.root / "report.html").read_text(errors="replace")
    assert "training_curves.png" in report and "parity.png" in report


def test_second_run_has_nothing_to_do(finished_run: Workflow) -> None:
    assert finished_run.planned() == Counter()


def test_graph_setting_change_reruns_graph_and_what_follows_only(finished_run: Workflow) -> None:
    # "" (the union of the dataset's orbitals) spelled out: the same basis, but a changed graph setting.
    finished_run.write_config(
        {"train_overrides": {"data.graph.common_orbital_types": "s3p2d1"}}, name="change.yaml"
    )
    planned = finished_run.planned("--configfile", "test.yaml", "change.yaml")
    assert planned == Counter({"graph_shard": SHARDS, "graph": 1}) + FROM_TRAIN


def test_training_setting_change_reruns_training_only(finished_run: Workflow) -> None:
    finished_run.write_config({"train_overrides": {"process.train.max_epoch": 3}}, name="change.yaml")
    planned = finished_run.planned("--configfile", "test.yaml", "change.yaml")
    assert planned == FROM_TRAIN


def test_display_only_setting_change_reruns_nothing(finished_run: Workflow) -> None:
    finished_run.write_config({"train_overrides": {"system.log_level": "debug"}}, name="change.yaml")
    assert finished_run.planned("--configfile", "test.yaml", "change.yaml") == Counter()


def test_forced_reruns_take_the_stage_and_what_follows(finished_run: Workflow) -> None:
    assert finished_run.planned("-R", "train") == FROM_TRAIN
    assert finished_run.planned("--forcerun", "graph") == Counter({"graph": 1}) + FROM_TRAIN
    assert finished_run.planned("-R", "parse") == (
        Counter({"parse": SHARDS, "graph_shard": SHARDS, "graph": 1}) + FROM_TRAIN
    )
    assert finished_run.planned("-R", "evaluate") == Counter({"evaluate": 1, "plot": 1, "all": 1})
    # one stage alone
    assert finished_run.planned("-R", "graph", "--until", "graph") == Counter({"graph": 1})


def test_finetune_from_a_previous_run_tracks_its_checkpoint(finished_run: Workflow) -> None:
    finetune = ("--config", "run=B", "finetune_from=results/runs/A")
    ran = finished_run.ran(finished_run.snakemake(*finetune, "--until", "train"))
    assert ran == Counter({"discover": 1, "parse": SHARDS, "graph_shard": SHARDS, "graph": 1, "train": 1})
    log_b = (finished_run.run_dir("B") / "deepx.log").read_text()
    assert "loaded parameters from results/runs/A/model/params/best" in log_b
    assert finished_run.planned(*finetune, "--until", "train") == Counter()

    # A trained again (a newer best checkpoint): B's training is out of date, B's data is not.
    finished_run.snakemake("-R", "train", "--until", "train")
    assert finished_run.planned(*finetune) == FROM_TRAIN


def test_finetune_into_its_own_run_is_refused(finished_run: Workflow) -> None:
    result = finished_run.snakemake("--dry-run", "--config", "finetune_from=results/runs/A", check=False)
    assert result.returncode != 0
    assert "pipeline config [finetune_from] = 'results/runs/A': is the directory of run 'A' itself" in (
        result.stdout + result.stderr
    )
