"""Every "which keys matter where" list is derived from the keys' own declarations (issue 15).

The expected lists below are the ones written out by hand before (workflow/rules/common.smk's stage
params, train/run.py's resume list, graph/stage.py's store settings): deriving them must not change
which stage reruns, which change refuses a resume, or which store is reused.
"""

from __future__ import annotations

import dataclasses

import pytest

from hamflow.config.schema import STAGES, option
from hamflow.config.train_config import (
    graph_store_settings,
    parse_train_config,
    resolved_keys,
    resume_blocking_changes,
    resume_mutable_keys,
    stage_keys,
    train_config_to_dict,
)

SPLIT = [
    "process.train.dataloader.train_size",
    "process.train.dataloader.validate_size",
    "process.train.dataloader.test_size",
    "process.train.dataloader.dataset_split_json",
]
EXPECTED = {
    "discover": ["data.inputs_dir", "data.dft.data_dir_depth", "system.random_seed", *SPLIT],
    "parse": [
        "data.inputs_dir",
        "data.dft.data_dir_depth",
        "data.dft.on_bad_structure",
        "data.graph.graph_type",
    ],
    "graph": [
        "data.inputs_dir",
        "data.dft.data_dir_depth",
        "data.dft.on_bad_structure",
        "data.graph.dataset_name",
        "data.graph.graph_type",
        "data.graph.storage_type",
        "data.graph.common_orbital_types",
        "system.float_type",
    ],
    "infer": ["data.inputs_dir", "data.dft.data_dir_depth", "system.float_type"],
    "evaluate": [
        "data.inputs_dir",
        "data.dft.data_dir_depth",
        "model.target_type",
        "model.advanced.standardize_gauge",
    ],
}
NOT_AFFECTING_TRAINING = {
    "system.note",
    "system.log_level",
    "system.show_train_process_bar",
    "system.jax_memory_preallocate",
    "data.outputs_dir",
    "data.graph.parallel_num",
    "data.graph.disk_mem_buffer_size",  # the disk store's chunk cache: speed only (issue 11)
    "process.train.compilation_cache_dir",
}
RESUME_MUTABLE_PREFIXES = (
    "process.train.max_epoch",
    "data.model_save",
    "system.show_train_process_bar",
    "system.log_level",
    "system.note",
    "system.device",
    "system.jax_memory_preallocate",
    "process.train.compilation_cache_dir",
    "process.train.ahead_of_time_compile",
    "process.train.multi_way_jit_num",
    "data.graph.parallel_num",
    "data.graph.disk_mem_buffer_size",  # issue 11: may change on resume
    "data.graph.storage_type",
    "data.graph.only_save_graph",
    "process.train.drop.dropout_rate",  # masks from (seed, step); old runs recorded an inert 0.1
)


def config(graph_type: str = "H"):
    data = {"data": {"inputs_dir": "in", "outputs_dir": "out"}, "model": {"advanced": {"net_irreps": ""}}}
    cfg = parse_train_config(data)
    # Sap (overlap-shaped graphs) cannot train; the graph stage still covers it, so build it unchecked
    graph = dataclasses.replace(cfg.data.graph, graph_type=graph_type)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, graph=graph))


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_stage_keys_are_the_lists_written_before(stage: str) -> None:
    assert sorted(stage_keys(config(), stage)) == sorted(EXPECTED[stage])


def test_sap_graphs_also_depend_on_the_cutoff() -> None:
    keys = stage_keys(config("Sap"), "graph")
    assert sorted(keys) == sorted([*EXPECTED["graph"], "model.advanced.gaussian_basis_rmax"])


def test_training_depends_on_every_key_but_the_declared_few() -> None:
    cfg = config()
    every = list(resolved_keys(cfg))
    assert stage_keys(cfg, "train") == [key for key in every if key not in NOT_AFFECTING_TRAINING]
    assert "process.train.scheduler.type" in stage_keys(cfg, "train")  # undeclared section: training


def test_resume_mutable_keys_are_the_list_written_before() -> None:
    every = resolved_keys(config())
    before = {
        key for key in every if any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE_PREFIXES)
    }
    assert set(resume_mutable_keys()) == before


def test_a_resume_is_refused_only_for_other_keys() -> None:
    old = train_config_to_dict(config())
    new = train_config_to_dict(config())
    new["process"]["train"]["max_epoch"] = 3
    new["data"]["model_save"]["latest_num"] = 2
    assert resume_blocking_changes(old, new) == []
    new["process"]["train"]["optimizer"]["init_learning_rate"] = 0.5
    new["process"]["train"]["scheduler"]["patience"] = 7
    assert resume_blocking_changes(old, new) == [
        "process.train.optimizer.init_learning_rate",
        "process.train.scheduler.patience",
    ]


def test_graph_store_settings_are_the_fingerprint_keys_written_before() -> None:
    assert graph_store_settings(config()) == {
        "graph_type": "H",
        "storage_type": "memory",
        "common_orbital_types": "",
        "dtype": "fp32",
        "on_bad_structure": "fail",
        "data_dir_depth": 0,
    }
    sap = config("Sap")
    assert sap.graph_store_settings()["neighbour_cutoff"] == 7.5


def test_unknown_stage_names_are_refused() -> None:
    assert "train" in STAGES
    with pytest.raises(ValueError, match="unknown stage"):
        option(1, stages=("trian",))
    with pytest.raises(ValueError, match="unknown stage"):
        stage_keys(config(), "fit")
