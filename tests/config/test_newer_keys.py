"""Keys of DeepH-pack's newer train.toml template (../shared/reference/deeph-pack-newer-keys.md).

Every listed key parses with its type and default (never "unknown key"): a TOML copied from the newer
template passes ``hamflow check-config``. Keys whose behaviour hamflow builds take other values
(``log_level = "error"``, ``validation_check``, ``warmup_exponential_decay``); every other key accepts
its default and refuses any other value with one line "recognised DeepH-pack key, not available yet".
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from hamflow.cli import main
from hamflow.config.schema import RECOGNISED_NOT_AVAILABLE
from hamflow.config.train_config import parse_train_config
from hamflow.errors import ConfigError, NotAvailableError

EXAMPLE = Path(__file__).resolve().parent / "data" / "deeph_pack_example_train.toml"

# (dotted key, template default, one value hamflow does not build) - from deeph-pack-newer-keys.md.
NOT_BUILT: list[tuple[str, Any, Any]] = [
    ("data.graph.disk_shards_num", 1, 4),
    ("data.graph.disk_shards_indices", [], [0, 1]),
    ("model.advanced.latent_irreps", "", "32x0e+16x1e"),
    ("model.advanced.latent_edge_cutoff", 100.0, 6.0),
    ("model.advanced.latent_scalar_dim", -1, 64),
    ("model.advanced.num_heads", 2, 4),
    ("model.advanced.enable_bs3b_layer", False, True),
    ("model.advanced.bs3b_orbital_types", "", "s2p2d1"),
    ("model.advanced.vr_focus_size", 256, 128),
    ("model.advanced.enable_element_moe", False, True),
    ("model.advanced.moe_element_include", [], ["Mo", "S"]),
    ("process.train.drop.stochastic_depth", 0.0, 0.1),
    ("process.train.drop.proj_rate", 0.0, 0.1),
    ("process.train.with_plugin.enable", False, True),
    ("process.train.with_plugin.plugin", "null", "unsupervised"),
    ("process.train.with_plugin.env_path", "", "/opt/env"),
    ("process.train.with_plugin.script_path", "", "plugin.py"),
    ("process.train.with_plugin.backend", "null", "ai2dft_jax"),
    ("process.train.with_plugin.dump_intermediate", False, True),
]

# (dotted key, template default, another value) of newer keys whose behaviour hamflow builds; each has a
# behaviour test where the behaviour lives (named in docs/config.md).
BUILT: list[tuple[str, Any, Any]] = [
    ("data.graph.disk_mem_buffer_size", 2048, 512),  # tests/graph/test_graph_store.py
    ("process.train.drop.dropout_rate", 0.1, 0.25),  # tests/nn/test_dropout.py
    ("data.model_save.latest_cache_mid_step_interval", -1, 100),  # test_mid_step_checkpoint.py
]

# Values the newer template adds to keys of the 1.0.x reference.
NEWER_VALUES: list[tuple[str, str]] = [
    *[("data.graph.graph_type", v) for v in ("VrC", "SapVc", "FF", "IEP")],
    *[("model.net_type", v) for v in ("fast", "eagleplus", "albatross", "owl", "petrel", "swift")],
    *[("model.target_type", v) for v in ("VrC", "Vc", "FF", "IEP")],
    *[("model.loss_type", v) for v in ("emae", "mae_debug")],
]

NEWER_SCHEDULER = {
    "type": "warmup_exponential_decay",
    "init_scale": 0.1,
    "warmup_steps": 10,
    "transition_begin": 0,
    "transition_steps": 10000,
    "staircase": True,
    "end_scale": -1.0,
}


def put(data: dict[str, Any], dotted_key: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted_key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def newer_template() -> dict[str, Any]:
    """DeepH-pack's 1.0.x example with every newer key at the newer template's default."""
    data = tomllib.loads(EXAMPLE.read_text())
    for key, default, _ in NOT_BUILT + BUILT:
        put(data, key, default)
    put(data, "data.dft.validation_check", False)
    put(data, "system.log_level", "error")
    put(data, "model.advanced.consider_parity", False)  # the newer template's default
    put(data, "model.advanced.net_irreps", "64x0e+32x1e+16x2e+8x3e+8x4e")  # its all-even advice
    data["process"]["train"]["scheduler"].update(NEWER_SCHEDULER)
    return data


def test_a_toml_from_the_newer_template_passes_check_config(tmp_path, capsys):
    path = tmp_path / "train.toml"
    path.write_text(tomli_w.dumps(newer_template()))
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    resolved = tomllib.loads(captured.out)
    for key, default, _ in NOT_BUILT + BUILT:
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node == default, key
    assert resolved["process"]["train"]["scheduler"]["type"] == "warmup_exponential_decay"
    assert "decay_rate = 0.5" in captured.out  # hamflow's rate for it, said in the resolved TOML


@pytest.mark.parametrize(("key", "default", "value"), NOT_BUILT, ids=[k for k, _, _ in NOT_BUILT])
def test_unbuilt_keys_take_their_default_and_refuse_anything_else_in_one_line(key, default, value):
    data = newer_template()
    put(data, key, value)
    with pytest.raises(NotAvailableError) as caught:
        parse_train_config(data, source="train.toml")
    message = str(caught.value)
    assert message.startswith(f"train.toml: [{key}] = ") and "\n" not in message
    assert (
        RECOGNISED_NOT_AVAILABLE in message and "unknown" not in message and "not a known key" not in message
    )
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("key", "default", "value"), BUILT, ids=[k for k, _, _ in BUILT])
def test_built_keys_take_other_values(key, default, value):
    cfg = parse_train_config(put(newer_template(), key, value), source="train.toml")
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == value != default


@pytest.mark.parametrize(("key", "value"), NEWER_VALUES, ids=[f"{k}={v}" for k, v in NEWER_VALUES])
def test_newer_values_of_reference_keys_are_recognised(key, value):
    data = newer_template()
    put(data, key, value)
    with pytest.raises(NotAvailableError) as caught:
        parse_train_config(data, source="train.toml")
    message = str(caught.value)
    assert message.startswith(f'train.toml: [{key}] = "{value}": {RECOGNISED_NOT_AVAILABLE}; allowed: ')
    assert "\n" not in message


def test_wrong_types_are_still_type_errors():
    for key, value in (
        ("data.graph.disk_shards_num", "1"),
        ("data.graph.disk_shards_indices", [0.5]),
        ("model.advanced.moe_element_include", [1]),
        ("process.train.drop.dropout_rate", True),
    ):
        data = put(newer_template(), key, value)
        with pytest.raises(ConfigError) as caught:
            parse_train_config(data)
        assert not isinstance(caught.value, NotAvailableError), key
        assert f"[{key}]" in str(caught.value)


def test_dropout_is_the_templates_when_written_and_off_when_absent():
    assert parse_train_config(newer_template()).process.train.drop.dropout_rate == 0.1
    assert (
        parse_train_config(
            put(newer_template(), "process.train.drop.dropout_rate", 0.0)
        ).process.train.drop.dropout_rate
        == 0.0
    )
    older = tomllib.loads(EXAMPLE.read_text())  # DeepH-pack's 1.0.x example: no [process.train.drop]
    assert "drop" not in older["process"]["train"]
    assert parse_train_config(older).process.train.drop.dropout_rate == 0.0
    for bad in (1.0, -0.1):
        with pytest.raises(
            ConfigError, match=r"\[process.train.drop.dropout_rate\] = .*in \[0, 1\)"
        ) as caught:
            parse_train_config(put(newer_template(), "process.train.drop.dropout_rate", bad), source="t.toml")
        assert "\n" not in str(caught.value) and not isinstance(caught.value, NotAvailableError)


def test_integral_lists_and_floats_are_canonical():
    data = put(newer_template(), "data.graph.disk_shards_indices", [])
    data = put(data, "model.advanced.latent_edge_cutoff", 100)
    cfg = parse_train_config(data)
    assert cfg.data.graph.disk_shards_indices == () and cfg.model.advanced.latent_edge_cutoff == 100.0


def test_log_level_error_is_accepted():
    cfg = parse_train_config(copy.deepcopy(newer_template()))
    assert cfg.system.log_level == "error"


def test_log_level_error_keeps_errors_only(tmp_path):
    import io
    import logging

    from hamflow.config.logging_setup import configure_logging, reset_logging

    console = io.StringIO()
    try:
        configure_logging(tmp_path / "deepx.log", "error", stream=console)
        log = logging.getLogger("hamflow.tests.newer_keys")
        log.warning("loss is high")
        log.error("stopping")
        assert console.getvalue() == "[ERROR] stopping\n"
        assert "loss is high" not in (tmp_path / "deepx.log").read_text()
    finally:
        reset_logging()
