"""The inference TOML: defaults, required keys, enums, unknown keys, types, not-available options."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from hamflow.config.infer_config import (
    dump_infer_config,
    infer_config_to_dict,
    load_infer_config,
    parse_infer_config,
    with_overrides,
)
from hamflow.errors import ConfigError, NotAvailableError

EXAMPLE = Path(__file__).resolve().parent / "data" / "deeph_pack_example_infer.toml"

DEFAULTS: dict[str, Any] = {
    "system.device": "gpu*8:0",
    "system.float_type": "fp32",
    "system.random_seed": 137,
    "system.log_level": "info",
    "system.jax_memory_preallocate": True,
    "data.dft.data_dir_depth": 0,
    "data.dft.on_bad_structure": "fail",
    "data.graph.dataset_name": "INFER-DEMO",
    "data.graph.graph_type": "S",
    "data.graph.storage_type": "memory",
    "data.graph.parallel_num": -1,
    "data.graph.only_save_graph": False,
    "model.load_model_type": "best",
    "model.load_model_epoch": -1,
    "process.infer.output_type": "h5",
    "process.infer.output_into": "to_output",
    "process.infer.target_symmetrize": True,
    "process.infer.multi_way_jit_num": 1,
    "process.infer.dataloader.batch_size": 1,
}
REQUIRED = ("data.inputs_dir", "data.outputs_dir", "model.model_dir")
SECTIONS = ("", "system", "data", "data.dft", "data.graph", "model", "process", "process.infer",
            "process.infer.dataloader")  # fmt: skip


def minimal() -> dict[str, Any]:
    return {"data": {"inputs_dir": "in", "outputs_dir": "out"}, "model": {"model_dir": "run/model"}}


def put(data: dict[str, Any], dotted_key: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, last = dotted_key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def attr(cfg: Any, dotted_key: str) -> Any:
    for part in dotted_key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def config_error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_infer_config(data)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("dotted_key", sorted(DEFAULTS))
def test_defaults(dotted_key: str) -> None:
    assert attr(parse_infer_config(minimal()), dotted_key) == DEFAULTS[dotted_key]


@pytest.mark.parametrize("dotted_key", REQUIRED)
def test_required_keys(dotted_key: str) -> None:
    data = minimal()
    section, key = dotted_key.split(".")
    del data[section][key]
    error = config_error(data)
    assert error.key == dotted_key and "is required" in str(error)


@pytest.mark.parametrize("section_path", SECTIONS)
def test_unknown_key_at_every_level(section_path: str) -> None:
    data = minimal()
    if section_path:
        put(data, f"{section_path}.bogus", True)
    else:
        data["bogus"] = True
    error = config_error(data)
    assert error.key == (f"{section_path}.bogus" if section_path else "bogus")
    assert "is not a known key" in str(error)


def test_training_only_keys_are_unknown_here() -> None:
    error = config_error(put(minimal(), "process.train.max_epoch", 3))
    assert error.key == "process.train"


@pytest.mark.parametrize(
    "dotted_key, values",
    [
        ("data.graph.graph_type", ("S", "Sap")),
        ("data.graph.storage_type", ("memory", "disk")),
        ("model.load_model_type", ("best", "latest")),
        ("process.infer.output_into", ("to_output", "to_input")),
        ("system.float_type", ("bf16", "tf32", "fp32", "fp64")),
    ],
)
def test_enums(dotted_key: str, values: tuple[str, ...]) -> None:
    for value in values:
        assert attr(parse_infer_config(put(minimal(), dotted_key, value)), dotted_key) == value
    error = config_error(put(minimal(), dotted_key, "H"))
    assert error.key == dotted_key
    assert "allowed: " + ", ".join(f'"{v}"' for v in values) in str(error)


def test_petsc_output_is_not_available_yet() -> None:
    with pytest.raises(NotAvailableError) as info:
        parse_infer_config(put(minimal(), "process.infer.output_type", "petsc"), source="infer.toml")
    assert (
        str(info.value) == "infer.toml: [process.infer.output_type] = 'petsc' is not available yet in hamflow"
    )


@pytest.mark.parametrize(
    "dotted_key, value, problem",
    [
        ("process.infer.dataloader.batch_size", 0, "is out of range"),
        ("process.infer.multi_way_jit_num", 0, "is out of range"),
        ("process.infer.target_symmetrize", "yes", "has the wrong type"),
        ("model.load_model_epoch", 1.5, "has the wrong type"),
        ("model.model_dir", "", "is out of range"),
        ("system.device", "gpu*2:2", "selects device id 2"),
        ("data.dft.data_dir_depth", "1", "has the wrong type"),
    ],
)
def test_bad_values(dotted_key: str, value: Any, problem: str) -> None:
    error = config_error(put(minimal(), dotted_key, value))
    assert error.key == dotted_key and problem in str(error)


def test_load_model_epoch_string_for_compatibility() -> None:
    assert parse_infer_config(put(minimal(), "model.load_model_epoch", "-1")).model.load_model_epoch == -1


def test_example_loads_and_round_trips(tmp_path: Path) -> None:
    cfg = load_infer_config(EXAMPLE)
    assert cfg.source == EXAMPLE and cfg.model.model_dir.endswith("/model")
    path = tmp_path / "resolved.toml"
    path.write_text(dump_infer_config(cfg))
    assert load_infer_config(path) == cfg
    assert tomllib.loads(path.read_text()) == infer_config_to_dict(cfg)


def test_with_overrides() -> None:
    cfg = load_infer_config(EXAMPLE)
    changed = with_overrides(cfg, {"process.infer.output_into": "to_input"})
    assert changed.process.infer.output_into == "to_input" and changed.source == cfg.source
    with pytest.raises(ConfigError, match="output_into"):
        with_overrides(cfg, {"process.infer.output_into": "nowhere"})
