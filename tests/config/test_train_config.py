"""The training TOML: every key's default, enums, aliases, unknown keys, types, ranges, contradictions."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hamflow.config.train_config import (
    TrainConfig,
    compilation_cache_path,
    dump_train_config,
    latest_save_interval,
    load_train_config,
    parse_train_config,
    train_config_to_dict,
    with_overrides,
)
from hamflow.errors import ConfigError, NotAvailableError

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "data" / "deeph_pack_example_train.toml"
REPO_ROOT = HERE.parents[1]

# The per-key "Default:" values of DeepH-pack's reference (deeph-pack-train-toml.md), written out
# independently of the schema; net_type's "normal" resolves to "sparrow", load_model_epoch "-1" to -1.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "system.note": "Enjoy DeepH-pack! ;-)",
    "system.device": "gpu*8:0",
    "system.float_type": "fp32",
    "system.random_seed": 137,
    "system.log_level": "info",
    "system.jax_memory_preallocate": True,
    "system.show_train_process_bar": True,
    "data.dft.data_dir_depth": 0,
    "data.dft.on_bad_structure": "fail",  # hamflow addition
    "data.graph.dataset_name": "DATASET-DEMO",
    "data.graph.graph_type": "H",
    "data.graph.storage_type": "memory",
    "data.graph.common_orbital_types": "",
    "data.graph.parallel_num": -1,
    "data.graph.only_save_graph": False,
    "data.model_save.best": True,
    "data.model_save.latest": True,
    "data.model_save.latest_interval": 100,
    "data.model_save.latest_num": 10,
    "model.net_type": "sparrow",
    "model.target_type": "H",
    "model.loss_type": "mse",
    "model.advanced.gaussian_basis_rmax": 7.5,
    "model.advanced.num_blocks": 3,
    "model.advanced.consider_parity": True,
    "model.advanced.standardize_gauge": False,
    "process.train.max_epoch": 10000,
    "process.train.multi_way_jit_num": 1,
    "process.train.ahead_of_time_compile": False,
    "process.train.compilation_cache_dir": "",  # hamflow addition
    "process.train.dataloader.batch_size": 1,
    "process.train.dataloader.train_size": 1,
    "process.train.dataloader.validate_size": 0,
    "process.train.dataloader.test_size": 0,
    "process.train.dataloader.dataset_split_json": "",
    "process.train.dataloader.only_use_train_loss": False,
    "process.train.optimizer.type": "adamw",
    "process.train.optimizer.init_learning_rate": 2e-3,
    "process.train.optimizer.clip_norm_factor": -1.0,
    "process.train.optimizer.momentum": 0.8,
    "process.train.optimizer.betas": (0.9, 0.999),
    "process.train.optimizer.weight": 0.001,
    "process.train.optimizer.eps": 1e-8,
    "process.train.continued.enable": False,
    "process.train.continued.new_training_data": False,
    "process.train.continued.new_optimizer": False,
    "process.train.continued.previous_output_dir": "",
    "process.train.continued.load_model_type": "latest",
    "process.train.continued.load_model_epoch": -1,
    "process.train.ema_decay": 0.0,  # hamflow addition
    "model.advanced.spin_orbit": True,  # hamflow addition (spinful data only)
}

# The keys of DeepH-pack's newer template (deeph-pack-newer-keys.md) with the template's defaults,
# written out independently of the schema (the scheduler's are in tests/train/test_schedules.py).
NEWER_DEFAULTS: dict[str, Any] = {
    "data.dft.validation_check": False,
    "data.graph.disk_shards_num": 1,
    "data.graph.disk_shards_indices": (),
    "data.graph.disk_mem_buffer_size": 2048,
    "data.model_save.latest_cache_mid_step_interval": -1,
    "model.advanced.latent_irreps": "",
    "model.advanced.latent_edge_cutoff": 100.0,
    "model.advanced.latent_scalar_dim": -1,
    "model.advanced.num_heads": 2,
    "model.advanced.enable_bs3b_layer": False,
    "model.advanced.bs3b_orbital_types": "",
    "model.advanced.vr_focus_size": 256,
    "model.advanced.enable_element_moe": False,
    "model.advanced.moe_element_include": (),
    # the template writes 0.1; absent (every 1.0.x train.toml) it is 0: no dropout, training as before
    "process.train.drop.dropout_rate": 0.0,
    "process.train.drop.stochastic_depth": 0.0,
    "process.train.drop.proj_rate": 0.0,
    "process.train.with_plugin.enable": False,
    "process.train.with_plugin.plugin": "null",
    "process.train.with_plugin.env_path": "",
    "process.train.with_plugin.script_path": "",
    "process.train.with_plugin.backend": "null",
    "process.train.with_plugin.dump_intermediate": False,
}

SECTIONS = (
    "",
    "system",
    "data",
    "data.dft",
    "data.graph",
    "data.model_save",
    "model",
    "model.advanced",
    "process",
    "process.train",
    "process.train.dataloader",
    "process.train.optimizer",
    "process.train.scheduler",
    "process.train.continued",
    "process.train.drop",
    "process.train.with_plugin",
)


def minimal() -> dict[str, Any]:
    """The smallest valid training TOML: the three keys without a default."""
    return {
        "data": {"inputs_dir": "in", "outputs_dir": "out"},
        "model": {"advanced": {"net_irreps": ""}},
    }


def put(data: dict[str, Any], dotted_key: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, last = dotted_key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def build(**settings: Any) -> dict[str, Any]:
    """minimal() with ``a__b__c=value`` settings (double underscores stand for dots)."""
    data = minimal()
    for key, value in settings.items():
        put(data, key.replace("__", "."), value)
    return data


def attr(cfg: Any, dotted_key: str) -> Any:
    for part in dotted_key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def config_error(data: dict[str, Any], *, source: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_train_config(data, source=source)
    message = str(info.value)
    assert "\n" not in message
    return info.value


# ------------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize("dotted_key", sorted(REFERENCE_DEFAULTS | NEWER_DEFAULTS))
def test_every_key_defaults_to_the_reference_value(dotted_key: str) -> None:
    cfg = parse_train_config(minimal())
    assert attr(cfg, dotted_key) == (REFERENCE_DEFAULTS | NEWER_DEFAULTS)[dotted_key]


def test_the_defaults_cover_every_key_but_required_ones_and_the_scheduler() -> None:
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                walk(value, name)
            else:
                flat[name] = value

    walk(train_config_to_dict(parse_train_config(minimal())), "")
    own = {k for k in flat if not k.startswith("process.train.scheduler.")}
    required = {"data.inputs_dir", "data.outputs_dir", "model.advanced.net_irreps"}
    assert own - required == set(REFERENCE_DEFAULTS) | set(NEWER_DEFAULTS)


def test_value_types_are_canonical() -> None:
    cfg = parse_train_config(
        build(process__train__optimizer__init_learning_rate=1, process__train__max_epoch=1e4)
    )
    assert cfg.process.train.optimizer.init_learning_rate == 1.0
    assert isinstance(cfg.process.train.optimizer.init_learning_rate, float)
    assert cfg.process.train.max_epoch == 10000 and isinstance(cfg.process.train.max_epoch, int)
    assert isinstance(cfg.process.train.optimizer.betas, tuple)
    assert cfg.source is None


@pytest.mark.parametrize("text, expected", [("-1", -1), (-1, -1), ("200", 200), (200, 200)])
def test_load_model_epoch_accepts_int_and_integer_string(text: Any, expected: int) -> None:
    cfg = parse_train_config(build(process__train__continued__load_model_epoch=text))
    assert cfg.process.train.continued.load_model_epoch == expected


# -------------------------------------------------------------------- required keys, unknown keys


@pytest.mark.parametrize("dotted_key", ["data.inputs_dir", "data.outputs_dir", "model.advanced.net_irreps"])
def test_required_keys_are_errors_when_missing(dotted_key: str) -> None:
    data = minimal()
    *parents, last = dotted_key.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    error = config_error(data, source="train.toml")
    assert error.key == dotted_key
    assert str(error).startswith(f"train.toml: [{dotted_key}] is required")


@pytest.mark.parametrize("section_path", SECTIONS)
def test_unknown_key_at_every_level_names_the_dotted_key(section_path: str) -> None:
    data = minimal()
    if section_path:
        put(data, f"{section_path}.bogus_key", 1)
    else:
        data["bogus_key"] = 1
    error = config_error(data)
    expected = f"{section_path}.bogus_key" if section_path else "bogus_key"
    assert error.key == expected
    assert "is not a known key" in str(error) and "allowed keys:" in str(error)


def test_unknown_key_message_lists_the_allowed_keys() -> None:
    error = config_error(build(process__train__dataloader__batchsize=4))
    assert "batch_size" in str(error) and "train_size" in str(error)


# -------------------------------------------------------------------------------- enums, aliases

ENUMS: dict[str, tuple[str, ...]] = {
    "system.float_type": ("bf16", "tf32", "fp32", "fp64"),
    "system.log_level": ("debug", "info", "warning", "error", "critical"),
    "data.dft.on_bad_structure": ("fail", "skip"),
    "data.graph.storage_type": ("memory", "disk"),
    "model.loss_type": ("mae", "mse", "wmae", "huber"),
    "process.train.optimizer.type": ("sgd", "adam", "adamw"),
    "process.train.continued.load_model_type": ("best", "latest"),
}


@pytest.mark.parametrize(
    "dotted_key, value", [(key, value) for key, values in ENUMS.items() for value in values]
)
def test_every_enum_value_is_accepted(dotted_key: str, value: str) -> None:
    cfg = parse_train_config(put(minimal(), dotted_key, value))
    assert attr(cfg, dotted_key) == value


@pytest.mark.parametrize(
    "dotted_key", [*ENUMS, "data.graph.graph_type", "model.net_type", "model.target_type"]
)
def test_a_wrong_enum_value_names_the_allowed_values(dotted_key: str) -> None:
    error = config_error(put(minimal(), dotted_key, "nonsense"))
    assert error.key == dotted_key
    message = str(error)
    assert '"nonsense" is not allowed; allowed: ' in message
    for value in ENUMS.get(dotted_key, ()):
        assert f'"{value}"' in message


@pytest.mark.parametrize("graph_type, target_type", [("H", "H"), ("HS", "H"), ("Rho", "Rho")])
def test_trainable_graph_types_are_accepted_with_their_target(graph_type: str, target_type: str) -> None:
    cfg = parse_train_config(build(data__graph__graph_type=graph_type, model__target_type=target_type))
    assert (cfg.data.graph.graph_type, cfg.model.target_type) == (graph_type, target_type)


@pytest.mark.parametrize("written, canonical", [("sparrow", "sparrow"), ("normal", "sparrow")])
def test_sparrow_and_its_alias(written: str, canonical: str) -> None:
    assert parse_train_config(build(model__net_type=written)).model.net_type == canonical


@pytest.mark.parametrize("written", ["eagle", "accurate"])
def test_eagle_and_its_alias(written: str) -> None:
    cfg = parse_train_config(build(model__net_type=written, model__advanced__consider_parity=False))
    assert cfg.model.net_type == "eagle"


def test_net_type_message_lists_aliases() -> None:
    message = str(config_error(build(model__net_type="falcon")))
    assert '"sparrow", "eagle"' in message and '"normal" = "sparrow"' in message
    assert '"accurate" = "eagle"' in message


@pytest.mark.parametrize("loss", ["ai2dft", "ai2dft_node", "hopad", "aims"])
def test_unsupervised_losses_are_not_available_yet(loss: str) -> None:
    with pytest.raises(NotAvailableError) as info:
        parse_train_config(build(model__loss_type=loss), source="t.toml")
    assert str(info.value) == f"t.toml: [model.loss_type] = '{loss}' is not available yet in hamflow"


# ------------------------------------------------------------------------------------ wrong types

WRONG_TYPES = [
    ("process.train.dataloader.batch_size", "2", "expected an integer"),
    ("process.train.max_epoch", 2.5, "expected an integer"),
    ("system.random_seed", True, "expected an integer"),
    ("model.advanced.consider_parity", 1, "expected true or false"),
    ("system.jax_memory_preallocate", "yes", "expected true or false"),
    ("system.note", 5, "expected a string"),
    ("data.inputs_dir", 1, "expected a string"),
    ("process.train.optimizer.init_learning_rate", "fast", "expected a number"),
    ("model.advanced.gaussian_basis_rmax", False, "expected a number"),
    ("process.train.optimizer.betas", 0.9, "expected a list of 2 numbers"),
    ("data.graph.graph_type", 1, "expected a string"),
    ("system.device", 8, "expected a string"),
    ("system.note", {"a": 1}, "has the wrong type (table)"),
]


@pytest.mark.parametrize("dotted_key, value, expected", WRONG_TYPES)
def test_wrong_type_is_rejected(dotted_key: str, value: Any, expected: str) -> None:
    error = config_error(put(minimal(), dotted_key, value))
    assert error.key == dotted_key
    assert "has the wrong type" in str(error) and expected in str(error)


@pytest.mark.parametrize("section_path", ["system", "data.dft", "model.advanced", "process.train.scheduler"])
def test_a_section_given_as_a_value_is_rejected(section_path: str) -> None:
    error = config_error(put(minimal(), section_path, 3))
    assert error.key == section_path and "must be a table" in str(error)


# ------------------------------------------------------------------------------------------ ranges

OUT_OF_RANGE = [
    ("process.train.dataloader.batch_size", 0),
    ("process.train.max_epoch", 0),
    ("process.train.dataloader.train_size", -1),
    ("process.train.dataloader.validate_size", -1),
    ("process.train.dataloader.test_size", -1),
    ("data.model_save.latest_num", 0),
    ("model.advanced.gaussian_basis_rmax", 0.0),
    ("model.advanced.num_blocks", 0),
    ("process.train.multi_way_jit_num", 0),
    ("process.train.optimizer.eps", 0.0),
    ("process.train.optimizer.init_learning_rate", -1e-3),
    ("process.train.optimizer.momentum", 1.0),
    ("process.train.optimizer.weight", -0.1),
    ("process.train.optimizer.clip_norm_factor", 0.0),
    ("process.train.optimizer.betas", [0.0, 0.999]),
    ("process.train.optimizer.betas", [0.9, 1]),
    ("system.random_seed", -1),
    ("system.random_seed", 2**32),
    ("data.dft.data_dir_depth", -1),
    ("process.train.continued.load_model_epoch", -2),
    ("data.inputs_dir", ""),
    ("data.outputs_dir", "  "),
    ("data.graph.dataset_name", "a/b"),
    ("data.graph.dataset_name", ""),
]


@pytest.mark.parametrize("dotted_key, value", OUT_OF_RANGE)
def test_out_of_range_values_are_rejected_with_the_range(dotted_key: str, value: Any) -> None:
    error = config_error(put(minimal(), dotted_key, value))
    assert error.key == dotted_key
    assert "is out of range; allowed: " in str(error)


def test_betas_need_exactly_two_numbers() -> None:
    error = config_error(build(process__train__optimizer__betas=[0.9]))
    assert "has 1 items; expected a list of 2 numbers" in str(error)
    error = config_error(build(process__train__optimizer__betas=[0.9, "x"]))
    assert error.key == "process.train.optimizer.betas"


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    error = config_error(build(model__advanced__gaussian_basis_rmax=value))
    assert "is not a finite number" in str(error)


def test_bad_load_model_epoch_string() -> None:
    error = config_error(build(process__train__continued__load_model_epoch="newest"))
    assert error.key == "process.train.continued.load_model_epoch" and "is not an integer" in str(error)


@pytest.mark.parametrize(
    "dotted_key, value",
    [
        ("process.train.optimizer.clip_norm_factor", 1.5),
        ("data.graph.parallel_num", 0),
        ("data.model_save.latest_interval", -5),
        ("process.train.optimizer.weight", 0),
        ("process.train.dataloader.validate_size", 0),
    ],
)
def test_boundary_values_that_are_allowed(dotted_key: str, value: Any) -> None:
    assert attr(parse_train_config(put(minimal(), dotted_key, value)), dotted_key) == value


# ---------------------------------------------------------------------------------- contradictions


def test_standardize_gauge_needs_graph_type_hs() -> None:
    error = config_error(build(model__advanced__standardize_gauge=True))
    assert error.key == "model.advanced.standardize_gauge"
    assert '"HS"' in str(error) and 'got "H"' in str(error)
    cfg = parse_train_config(build(model__advanced__standardize_gauge=True, data__graph__graph_type="HS"))
    assert cfg.model.advanced.standardize_gauge


def test_odd_parity_irreps_without_parity_are_rejected() -> None:
    data = build(model__advanced__net_irreps="16x0e+8x1o+4x2e", model__advanced__consider_parity=False)
    error = config_error(data)
    assert error.key == "model.advanced.net_irreps"
    assert "odd-parity irreps (1o)" in str(error) and "consider_parity = false" in str(error)
    even = build(model__advanced__net_irreps="16x0e+8x1e+4x2e", model__advanced__consider_parity=False)
    assert parse_train_config(even).model.advanced.net_irreps == "16x0e+8x1e+4x2e"


def test_odd_parity_irreps_with_eagle_are_rejected() -> None:
    data = build(
        model__net_type="accurate",
        model__advanced__net_irreps="16x0e+8x1o+4x3o",
        model__advanced__consider_parity=False,
    )
    error = config_error(data)
    assert error.key == "model.advanced.net_irreps"
    assert "odd-parity irreps (1o, 3o)" in str(error) and '"eagle"' in str(error)


def test_eagle_with_consider_parity_is_rejected() -> None:
    error = config_error(build(model__net_type="eagle"))
    assert error.key == "model.advanced.consider_parity"
    assert '"eagle"' in str(error) and "allowed: false" in str(error)


def test_odd_parity_irreps_are_fine_for_sparrow_with_parity() -> None:
    cfg = parse_train_config(build(model__advanced__net_irreps="16x0e+8x1o+8x2e+4x3o+4x4e"))
    assert cfg.model.advanced.net_irreps == "16x0e+8x1o+8x2e+4x3o+4x4e"


@pytest.mark.parametrize(
    ("irreps", "parity"),
    [
        ("16x0e+8x1o+8x2e+4x3o+4x4e", True),  # DeepH-pack's natural parity (the 1.0.x reference)
        ("16x0e+8x1e+8x2e+4x3e+4x4e", False),  # the newer template's all-even irreps
        ("16x0e+8x1o+8x1e+8x2e+4x2o+4x3o+4x3e+4x4e", True),  # both parities
    ],
)
def test_net_irreps_with_a_given_basis_is_checked_by_the_readout_rule(irreps: str, parity: bool) -> None:
    settings = {"data__graph__common_orbital_types": "s3p2d1", "model__advanced__consider_parity": parity}
    cfg = parse_train_config(build(model__advanced__net_irreps=irreps, **settings))
    assert cfg.model.advanced.net_irreps == irreps


def test_net_irreps_that_cannot_build_a_block_is_one_line_with_a_working_value() -> None:
    data = build(model__advanced__net_irreps="16x0e+8x1o+8x2e", data__graph__common_orbital_types="s3p2d1")
    error = config_error(data, source="train.toml")
    assert error.key == "model.advanced.net_irreps"
    assert str(error).startswith(
        'train.toml: [model.advanced.net_irreps] = "16x0e+8x1o+8x2e" cannot build 3e+4e'
    )
    assert "s3p2d1" in str(error) and "a working value:" in str(error)
    assert parse_train_config(build(model__advanced__net_irreps="16x0e+8x1o+8x2e"))  # basis unknown yet


@pytest.mark.parametrize("text", ["16x0q", "banana", "16x0e+", "8x-1e", "0x0e"])
def test_net_irreps_must_parse_as_e3nn_irreps(text: str) -> None:
    error = config_error(build(model__advanced__net_irreps=text))
    assert error.key == "model.advanced.net_irreps"
    assert f'"{text}"' in str(error)


def test_continued_needs_previous_output_dir() -> None:
    error = config_error(build(process__train__continued__enable=True))
    assert error.key == "process.train.continued.previous_output_dir"
    assert "enable = true" in str(error)
    cfg = parse_train_config(
        build(
            process__train__continued__enable=True,
            process__train__continued__previous_output_dir="outputs/2025-01-01_00-00-00",
        )
    )
    assert cfg.process.train.continued.enable


@pytest.mark.parametrize(
    "graph_type, target_type, inference_only",
    [
        ("S", "H", True),
        ("Sap", "H", True),
        ("Rho", "H", False),
        ("H", "Rho", False),
        ("HS", "Rho", False),
        ("Sap", "Rho", True),
    ],
)
def test_graph_type_must_carry_the_target(graph_type: str, target_type: str, inference_only: bool) -> None:
    error = config_error(build(data__graph__graph_type=graph_type, model__target_type=target_type))
    assert error.key == "data.graph.graph_type"
    assert f'cannot train model.target_type = "{target_type}"' in str(error)
    assert ("inference-only" in str(error)) == inference_only


def test_train_size_zero_needs_a_split_file() -> None:
    error = config_error(build(process__train__dataloader__train_size=0))
    assert error.key == "process.train.dataloader.train_size"
    cfg = parse_train_config(
        build(
            process__train__dataloader__train_size=0, process__train__dataloader__dataset_split_json="s.json"
        )
    )
    assert cfg.process.train.dataloader.train_size == 0


@pytest.mark.parametrize("text", ["s2p2d1", "s3p2d1f1", "spd"])
def test_common_orbital_types_accepts_orbital_strings(text: str) -> None:
    assert (
        parse_train_config(build(data__graph__common_orbital_types=text)).data.graph.common_orbital_types
        == text
    )


@pytest.mark.parametrize("text", ["s2x1", "s2s1", "2s"])
def test_common_orbital_types_rejects_bad_strings(text: str) -> None:
    error = config_error(build(data__graph__common_orbital_types=text), source="t.toml")
    assert error.key == "data.graph.common_orbital_types" and error.source == "t.toml"


@pytest.mark.parametrize("device", ["gpu*8:9", "gpu", "tpu*1:0"])
def test_device_grammar_is_checked_at_load(device: str) -> None:
    error = config_error(build(system__device=device), source="t.toml")
    assert error.key == "system.device" and str(error).startswith("t.toml: [system.device]")


def test_scheduler_section_errors_come_from_the_scheduler_parser() -> None:
    error = config_error(build(process__train__scheduler__type="linear"))
    assert error.key == "process.train.scheduler.type"


# ------------------------------------------------------------------- files, example, round trips


def test_deeph_pack_example_loads_unchanged() -> None:
    cfg = load_train_config(EXAMPLE)
    assert cfg.source == EXAMPLE
    assert cfg.model.net_type == "sparrow"  # "normal" in the file
    assert cfg.data.inputs_dir == "/scratch/alice/deeph/MoS2/inputs"
    assert cfg.model.advanced.net_irreps == ""
    assert cfg.process.train.optimizer.betas == (0.9, 0.999)
    assert cfg.process.train.scheduler.type == "reduce_on_plateau"
    assert cfg.process.train.continued.load_model_epoch == -1


def test_example_dump_load_round_trips(tmp_path: Path) -> None:
    cfg = load_train_config(EXAMPLE)
    text = dump_train_config(cfg)
    assert text.startswith("# hamflow: fully resolved training configuration")
    path = tmp_path / "resolved.toml"
    path.write_text(text)
    again = load_train_config(path)
    assert again == cfg
    assert dump_train_config(again).splitlines()[1:] == text.splitlines()[1:]


@pytest.mark.parametrize(
    "settings",
    [
        {"model__net_type": "accurate", "model__advanced__consider_parity": False},
        {
            "system__float_type": "bf16",
            "system__device": "gpu*8:1-4,7",
            "process__train__optimizer__type": "sgd",
        },
        {
            "process__train__scheduler__type": "warmup_cosine_decay",
            "process__train__scheduler__decay_steps": -1,
        },
        {"process__train__continued__enable": True, "process__train__continued__previous_output_dir": "o/r"},
    ],
)
def test_dump_load_round_trips(settings: dict[str, Any]) -> None:
    cfg = parse_train_config(build(**settings))
    assert parse_train_config(tomllib.loads(dump_train_config(cfg))) == cfg


def test_resolved_dump_has_no_aliases() -> None:
    text = dump_train_config(parse_train_config(build(model__net_type="normal")))
    assert 'net_type = "sparrow"' in text and "normal" not in text


def test_bundled_demo_config_loads() -> None:
    cfg = load_train_config(REPO_ROOT / "config" / "train.toml")
    assert cfg.data.inputs_dir == "data/demo/molecules" and cfg.data.dft.data_dir_depth == 1
    assert cfg.system.device == "cpu*1" and cfg.model.net_type == "sparrow"
    loader = cfg.process.train.dataloader
    assert loader.batch_size == 2 and loader.train_size + loader.validate_size + loader.test_size <= 30


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_train_config(tmp_path / "absent.toml")
    assert "absent.toml" in str(info.value) and "cannot be read" in str(info.value)


def test_invalid_toml_is_a_one_line_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[system]\nnote = \n")
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    assert (
        "\n" not in message
        and "broken.toml" in message
        and "not valid TOML" in message
        and "line 2" in message
    )


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(EXAMPLE.read_text().replace("batch_size = 1", "batch_size = 0"))
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: [process.train.dataloader.batch_size] = 0 is out of range")


# ------------------------------------------------------------------------------ overrides, helpers


def test_with_overrides_revalidates() -> None:
    cfg = load_train_config(EXAMPLE)
    changed = with_overrides(cfg, {"data.inputs_dir": "elsewhere", "process.train.max_epoch": 5})
    assert changed.data.inputs_dir == "elsewhere" and changed.process.train.max_epoch == 5
    assert changed.source == cfg.source and cfg.data.inputs_dir != "elsewhere"
    with pytest.raises(ConfigError, match=r"\[process.train.max_epoch\] = 0 is out of range"):
        with_overrides(cfg, {"process.train.max_epoch": 0})
    with pytest.raises(ConfigError, match=r"\[model.advanced.standardize_gauge\]"):
        with_overrides(cfg, {"model.advanced.standardize_gauge": True})
    with pytest.raises(ConfigError, match=r"\[process.train.bogus\] is not a known key"):
        with_overrides(cfg, {"process.train.bogus": 1})
    with pytest.raises(ConfigError, match=r"\[data.inputs_dir\] = \"in\" is not a table"):
        with_overrides(parse_train_config(minimal()), {"data.inputs_dir.x": 1})


def test_frozen_and_equality_ignores_source() -> None:
    cfg = parse_train_config(minimal(), source="a.toml")
    other = parse_train_config(copy.deepcopy(minimal()), source="b.toml")
    assert cfg == other and isinstance(cfg, TrainConfig)
    with pytest.raises(AttributeError):
        cfg.data.inputs_dir = "x"  # type: ignore[misc]


def test_compilation_cache_path() -> None:
    assert compilation_cache_path(parse_train_config(minimal())) == Path("out/.jax_cache")
    off = build(process__train__compilation_cache_dir="none")
    assert compilation_cache_path(parse_train_config(off)) is None
    own = build(process__train__compilation_cache_dir="/tmp/cache")
    assert compilation_cache_path(parse_train_config(own)) == Path("/tmp/cache")


@pytest.mark.parametrize("interval, expected", [(10, 10), (0, 50), (-1, 50), (50, 50), (51, 50)])
def test_latest_save_interval(interval: int, expected: int) -> None:
    cfg = parse_train_config(build(data__model_save__latest_interval=interval, process__train__max_epoch=50))
    assert latest_save_interval(cfg) == expected
