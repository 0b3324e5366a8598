"""hamflow.workflow_support: the logic of workflow/rules/common.smk, tested without running Snakemake."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError

from hamflow import workflow_support as support
from hamflow.config.train_config import with_overrides

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def pipeline_config(**changes) -> dict:
    config = {
        "train_toml": str(REPO / "config" / "demo.toml"),
        "run": "demo",
        "shard_size": 10,
        "finetune_from": "",
        "finetune_checkpoint": "best",
        "train_overrides": {},
    }
    return config | changes


def test_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("run: demo\nshard_size: 10: 3\n")
    with pytest.raises(WorkflowError, match=r"config.yaml, line 2, column 15: YAML syntax error: mapping"):
        support.check_yaml_syntax(bad)
    support.check_yaml_syntax(tmp_path / "missing.yaml")  # left to the configfile directive


def test_schema_errors_name_the_key_the_value_and_what_is_allowed() -> None:
    support.check_config(pipeline_config(), SCHEMA)
    with pytest.raises(
        WorkflowError, match=r"pipeline config \[shard_size\] = 0: 0 is less than the minimum"
    ):
        support.check_config(pipeline_config(shard_size=0), SCHEMA)


def test_train_toml_and_overrides_errors_name_the_pipeline_key() -> None:
    cfg = support.resolve_train_config(pipeline_config(train_overrides={"process.train.max_epoch": 3}))
    assert cfg.process.train.max_epoch == 3
    with pytest.raises(WorkflowError, match=r"^pipeline config \[train_overrides\]: .*\[model.net_type\]"):
        support.resolve_train_config(pipeline_config(train_overrides={"model.net_type": "owl"}))
    with pytest.raises(WorkflowError, match=r"^pipeline config \[train_toml\]: "):
        support.resolve_train_config(pipeline_config(train_toml="nowhere.toml"))


def test_finetune_settings() -> None:
    config = pipeline_config(finetune_from="results/runs/A", finetune_checkpoint="latest")
    cfg = support.resolve_train_config(config)
    assert cfg.process.train.continued.load_model_type == "latest"
    assert support.finetune_input(config) == "results/runs/A/model/params/latest"
    assert support.finetune_arg(config) == "--finetune-from results/runs/A"
    assert support.finetune_input(pipeline_config()) == [] and support.finetune_arg(pipeline_config()) == ""
    with pytest.raises(
        WorkflowError, match=r"\[finetune_from\] = 'results/runs/demo': is the directory of run"
    ):
        support.check_finetune_source(
            pipeline_config(finetune_from="results/runs/demo"), "demo", ["results/runs/demo"]
        )


def test_train_outputs_are_the_checkpoints_the_toml_saves() -> None:
    from snakemake.io import is_flagged

    cfg = support.resolve_train_config(pipeline_config())
    outputs = support.train_outputs(cfg, "results/runs/demo")
    assert outputs == {
        "best": "results/runs/demo/model/params/best",
        "latest": "results/runs/demo/model/params/latest",
        "log": "results/runs/demo/deepx.log",
        "metrics": "results/runs/demo/metrics.csv",
        "done": "results/runs/demo/TRAINING_DONE",
    }
    assert is_flagged(outputs["best"], "directory") and is_flagged(outputs["latest"], "directory")
    assert not is_flagged(outputs["log"], "directory")
    no_best = support.train_outputs(with_overrides(cfg, {"data.model_save.best": False}), "r")
    assert list(no_best) == ["latest", "log", "metrics", "done"]


def test_setting_params_name_their_key() -> None:
    params = support.setting_params(
        ["data.graph.graph_type", "system.random_seed"],
        {
            "data.graph.graph_type": "H",
            "system.random_seed": 7,
        },
    )
    assert params == {
        "data__graph__graph_type": 'data.graph.graph_type="H"',
        "system__random_seed": "system.random_seed=7",
    }


def test_stage_settings_follow_the_declarations() -> None:
    cfg = support.resolve_train_config(pipeline_config())
    settings = support.stage_settings(cfg)
    assert set(settings) == {"discover", "parse", "graph", "train"}
    assert (
        "data__dft__data_dir_depth" in settings["discover"] and "data__graph__graph_type" in settings["parse"]
    )
    assert "system__note" not in settings["train"] and "process__train__scheduler__type" in settings["train"]
    changed = support.stage_settings(with_overrides(cfg, {"data.graph.parallel_num": 3}))
    assert changed == settings  # parallel_num changes no result: no stage reruns


def test_resolved_toml_is_named_by_its_content_and_not_rewritten(tmp_path: Path) -> None:
    first = support.write_resolved_toml("a = 1\n", "train", tmp_path)
    assert Path(first).read_text() == "a = 1\n" and Path(first).name.startswith("train-")
    mtime = Path(first).stat().st_mtime_ns
    assert support.write_resolved_toml("a = 1\n", "train", tmp_path) == first
    assert Path(first).stat().st_mtime_ns == mtime
    assert support.write_resolved_toml("a = 2\n", "train", tmp_path) != first


def test_shards_and_resources(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    from hamflow.data.discover import write_manifest

    write_manifest(manifest, inputs_dir=tmp_path, depth=0, ids=[f"s{k}" for k in range(25)])
    assert support.shard_names(manifest, 10) == ["0-of-3", "1-of-3", "2-of-3"]
    assert support.shard_arg(SimpleNamespace(shard="1-of-3")) == "1/3"
    cfg = support.resolve_train_config(pipeline_config())
    assert support.graph_threads(with_overrides(cfg, {"data.graph.parallel_num": 3}), None) == 3
    assert (
        support.graph_threads(with_overrides(cfg, {"data.graph.parallel_num": -1}), SimpleNamespace(cores=5))
        == 5
    )

    class NoCores:
        @property
        def cores(self):
            raise WorkflowError("no cores")

    with pytest.raises(WorkflowError, match="--cores is not set"):
        support.all_cores(NoCores())


def test_held_out_part_and_inference_settings() -> None:
    cfg = support.resolve_train_config(pipeline_config())
    part = support.held_out_part(cfg)
    assert part in ("test", "validate")
    infer_cfg = support.infer_config(cfg, "results/runs/demo")
    assert infer_cfg.model.model_dir == "results/runs/demo/model"
    assert infer_cfg.model.load_model_type == support.infer_checkpoint(cfg)
    infer, evaluate = support.infer_settings(cfg, infer_cfg, part)
    assert infer["infer__part"] == f"infer.part={json.dumps(part)}"
    assert "model__target_type" in evaluate and "system__float_type" in infer
    assert support.infer_targets("demo", part) == ["results/eval/demo", "results/plots/demo"]
    assert support.infer_targets("demo", None) == []
    none_held = with_overrides(
        cfg,
        {
            "process.train.dataloader.test_size": 0,
            "process.train.dataloader.validate_size": 0,
            "process.train.dataloader.dataset_split_json": "",
        },
    )
    assert support.held_out_part(none_held) is None
