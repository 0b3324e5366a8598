"""The shared key-table machinery (hamflow.config.schema) used by the TOML schemas."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hamflow.config.schema import (
    REQUIRED,
    KeySpec,
    coerce_value,
    key_specs,
    option,
    parse_section,
    section,
    section_to_dict,
    set_dotted,
    toml_repr,
)
from hamflow.errors import ConfigError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    ratio: float = option(0.5, check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = option(REQUIRED, kind="string")
    mode: str = option("fast", choices=("fast", "slow"), aliases={"quick": "fast"})
    inner: Inner = section(Inner)


def test_parse_and_dump_a_small_schema() -> None:
    parsed = parse_section(Outer, {"name": "x", "mode": "quick", "inner": {"ratio": 1}}, prefix="top")
    assert parsed == Outer(name="x", mode="fast", inner=Inner(ratio=1.0))
    assert section_to_dict(parsed) == {"name": "x", "mode": "fast", "inner": {"ratio": 1.0}}
    assert list(key_specs(Outer)) == ["name", "mode"]


def test_errors_name_the_dotted_key() -> None:
    with pytest.raises(ConfigError, match=r"^\[top.name\] is required; expected a string$"):
        parse_section(Outer, {}, prefix="top")
    with pytest.raises(
        ConfigError, match=r"^\[top.inner.ratio\] = 2 is out of range; allowed: a number in \(0, 1\]$"
    ):
        parse_section(Outer, {"name": "x", "inner": {"ratio": 2}}, prefix="top")
    with pytest.raises(
        ConfigError, match=r"^\[top.mode\] = \"slowest\" is not allowed; allowed: \"fast\", \"slow\""
    ):
        parse_section(Outer, {"name": "x", "mode": "slowest"}, prefix="top")


@pytest.mark.parametrize(
    "spec, value, expected",
    [
        (KeySpec(kind="int", default=1), 3.0, 3),
        (KeySpec(kind="float", default=1.0), 2, 2.0),
        (KeySpec(kind="float_list", default=(), length=2), [1, 0.5], (1.0, 0.5)),
        (KeySpec(kind="int", default=1, accept_int_string=True), " 7 ", 7),
        (KeySpec(kind="string", default="a", choices=("a", "b"), aliases=(("B", "b"),)), "B", "b"),
    ],
)
def test_coerce_value_accepts(spec: KeySpec, value: Any, expected: Any) -> None:
    result = coerce_value("k", value, spec)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "spec, value",
    [
        (KeySpec(kind="int", default=1), True),
        (KeySpec(kind="int", default=1), "3"),
        (KeySpec(kind="float", default=1.0), False),
        (KeySpec(kind="bool", default=True), 0),
        (KeySpec(kind="string", default=""), ["a"]),
        (KeySpec(kind="float_list", default=()), [True, 1.0]),
    ],
)
def test_coerce_value_rejects(spec: KeySpec, value: Any) -> None:
    with pytest.raises(ConfigError):
        coerce_value("k", value, spec)


def test_required_option_needs_a_kind() -> None:
    with pytest.raises(TypeError):
        option(REQUIRED)


def test_toml_repr() -> None:
    assert toml_repr('a"b') == '"a\\"b"'
    assert (
        toml_repr(True) == "true" and toml_repr([0.9, 1]) == "[0.9, 1]" and toml_repr({"a": 1}) == "{a = 1}"
    )


def test_set_dotted() -> None:
    data: dict[str, Any] = {"a": {"b": 1}}
    set_dotted(data, "a.c.d", 2)
    assert data == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ConfigError, match=r"\[a.b\] = 1 is not a table"):
        set_dotted(data, "a.b.e", 3)
