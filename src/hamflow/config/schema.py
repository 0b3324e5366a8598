"""Key-table machinery shared by the training and inference TOML schemas.

A configuration section is a frozen, keyword-only dataclass. Each TOML key is a field declared with
:func:`option` (its type, default, allowed values, aliases and range live in the field's metadata);
each sub-table is a field declared with :func:`section`. :func:`parse_section` walks such a class over
a raw ``tomllib`` mapping and returns the filled instance, raising :class:`~hamflow.errors.ConfigError`
with the dotted key, the bad value and what is allowed; :func:`section_to_dict` turns an instance back
into the plain mapping that ``tomli_w`` writes. Fields without metadata (e.g. ``source``) are not TOML
keys and are skipped by both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hamflow.errors import ConfigError, NotAvailableError
from hamflow.errors import toml_repr as toml_repr  # re-exported: it lives with the errors it writes

KEY_META = "hamflow_key"
SECTION_META = "hamflow_section"

SectionParser = Callable[..., Any]
SectionDumper = Callable[[Any], dict]


class _Required:
    """Marker default of a key that must be present (DeepH-pack's ``<Invalid-Input>`` default)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_KIND_TEXT = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "float_list": "a list of numbers",
    "int_list": "a list of integers",
    "string_list": "a list of strings",
}

#: The pipeline stages a key can affect (one Snakemake rule and one ``hamflow`` command each).
STAGES = ("discover", "parse", "graph", "train", "infer", "evaluate")

#: Where a key comes from: DeepH-pack's 1.0.x train.toml (""), its newer template, or hamflow.
ORIGINS = ("", "newer", "hamflow")

#: The one line for a key (or value) of DeepH-pack's newer templates whose behaviour hamflow lacks.
RECOGNISED_NOT_AVAILABLE = "recognised DeepH-pack key, not available yet in hamflow"


class RecognisedNotAvailableError(NotAvailableError):
    """A DeepH-pack key (or value) hamflow knows but does not build: only its default is accepted."""

    def __init__(self, key: str, value: object, allowed: str, *, source: str | Path | None = None) -> None:
        ConfigError.__init__(
            self, key, f"= {toml_repr(value)}: {RECOGNISED_NOT_AVAILABLE}; allowed: {allowed}", source=source
        )


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """What one TOML key accepts.

    ``kind`` is one of "string", "int", "float", "bool", "float_list". ``choices`` (strings) and
    ``aliases`` (alias -> canonical value) restrict a string key; ``check`` returns True for values in
    range and ``allowed`` says in words what the range is. ``length`` fixes a list's length.
    ``accept_int_string`` lets an "int" key also take a string holding an integer (compatibility).
    ``unavailable`` are string values DeepH-pack knows and hamflow does not build yet; ``not_built``
    marks a recognised DeepH-pack key that only takes its default (or one of ``also_accepted``).
    Both raise :class:`RecognisedNotAvailableError`. ``doc`` is the key's meaning for the user and
    ``origin`` where it comes from: "" DeepH-pack's 1.0.x ``train.toml``, "newer" DeepH-pack's newer
    template, "hamflow" a hamflow addition (``docs/config.md``'s tables are rendered from these, by
    :mod:`hamflow.config.key_tables`).

    The key's roles, the one declaration every "which keys matter where" list is derived from
    (:func:`hamflow.config.train_config.stage_keys` and its neighbours): ``stages`` are the pipeline
    stages whose result the key changes (of :data:`STAGES`; by default only ``"train"``);
    ``resume_ok`` says the key may change between a run and its resumption without invalidating the
    checkpoints; ``store`` is the name under which the key enters the graph-store fingerprint ("": it
    does not), for every graph type or only for those in ``store_graph_types``. A key that enters the
    store also affects the graph stage.
    """

    kind: str
    default: Any
    choices: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    check: Callable[[Any], bool] | None = None
    allowed: str = ""
    length: int | None = None
    accept_int_string: bool = False
    doc: str = ""
    origin: str = ""
    unavailable: tuple[str, ...] = ()
    not_built: bool = False
    also_accepted: tuple[Any, ...] = ()
    stages: tuple[str, ...] = ("train",)
    resume_ok: bool = False
    store: str = ""
    store_graph_types: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def enters_store(self, graph_type: str) -> bool:
        """Whether the key is part of the graph-store fingerprint of a store of ``graph_type``."""
        return bool(self.store) and (not self.store_graph_types or graph_type in self.store_graph_types)

    def affects(self, stage: str, *, graph_type: str) -> bool:
        """Whether the key changes the result of ``stage`` (one of :data:`STAGES`) for ``graph_type``."""
        return stage in self.stages or (stage == "graph" and self.enters_store(graph_type))

    def allowed_text(self) -> str:
        """Human description of the accepted values, used in error messages."""
        if self.choices:
            text = ", ".join(toml_repr(choice) for choice in self.choices)
            if self.aliases:
                alias_text = ", ".join(f"{toml_repr(a)} = {toml_repr(c)}" for a, c in self.aliases)
                text += f" (aliases: {alias_text})"
            return text
        if self.allowed:
            return self.allowed
        return _KIND_TEXT[self.kind]


#: The roles of a key that declares none (e.g. the keys of a section with its own parser): it
#: affects training only, may not change on resume and is not part of the graph store.
DEFAULT_ROLES = KeySpec(kind="string", default=None)


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    """A sub-table: either a nested config dataclass ``cls`` or a foreign ``parser``/``dumper`` pair.

    ``parser(raw_mapping, key_prefix=..., source=...)`` returns the section object;
    ``dumper(obj)`` returns its plain mapping.
    """

    cls: type | None = None
    parser: SectionParser | None = None
    dumper: SectionDumper | None = None


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "string"
    if isinstance(default, tuple) and default and all(isinstance(v, str) for v in default):
        return "string_list"
    if isinstance(default, tuple):
        return "float_list"
    raise TypeError(f"cannot infer the TOML kind of default {default!r}; pass kind=")


def option(
    default: Any,
    *,
    kind: str | None = None,
    choices: tuple[str, ...] = (),
    aliases: Mapping[str, str] | None = None,
    check: Callable[[Any], bool] | None = None,
    allowed: str = "",
    length: int | None = None,
    accept_int_string: bool = False,
    doc: str = "",
    origin: str = "",
    unavailable: tuple[str, ...] = (),
    not_built: bool = False,
    also_accepted: tuple[Any, ...] = (),
    stages: tuple[str, ...] = ("train",),
    resume_ok: bool = False,
    store: str = "",
    store_graph_types: tuple[str, ...] = (),
) -> Any:
    """Declare a dataclass field that is one TOML key (see :class:`KeySpec`, also for its roles).

    The kind is inferred from ``default`` unless given (it must be given for ``REQUIRED`` keys).
    """
    if kind is None:
        kind = _kind_of(default)
    if kind not in _KIND_TEXT:
        raise ValueError(f"unknown key kind {kind!r}")
    spec = KeySpec(
        kind=kind,
        default=default,
        choices=tuple(choices),
        aliases=tuple((aliases or {}).items()),
        check=check,
        allowed=allowed,
        length=length,
        accept_int_string=accept_int_string,
        doc=doc,
        origin=origin,
        unavailable=tuple(unavailable),
        not_built=not_built,
        also_accepted=tuple(also_accepted),
        stages=tuple(stages),
        resume_ok=resume_ok,
        store=store,
        store_graph_types=tuple(store_graph_types),
    )
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}; known: {ORIGINS}")
    unknown = [stage for stage in spec.stages if stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    metadata = {KEY_META: spec}
    if spec.required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def at_least(bound: float) -> Callable[[Any], bool]:
    """Range check ``value >= bound``."""
    return lambda value: value >= bound


def above(bound: float) -> Callable[[Any], bool]:
    """Range check ``value > bound``."""
    return lambda value: value > bound


def non_empty(value: str) -> bool:
    """A string with something besides white space."""
    return bool(value.strip())


def file_name_ok(value: str) -> bool:
    """Usable as one component of a file name: non-empty, no path separator, not "." or ".."."""
    return non_empty(value) and not any(sep in value for sep in ("/", "\\")) and value not in (".", "..")


def section(
    cls: type | None = None, *, parser: SectionParser | None = None, dumper: SectionDumper | None = None
) -> Any:
    """Declare a dataclass field that is a TOML sub-table (a config dataclass or a foreign parser)."""
    if (cls is None) == (parser is None) or (parser is None) != (dumper is None):
        raise ValueError("section() takes either a dataclass or a parser and a dumper")
    return dataclasses.field(metadata={SECTION_META: SectionSpec(cls=cls, parser=parser, dumper=dumper)})


def _toml_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def dotted(prefix: str, name: str) -> str:
    """``prefix.name`` (or ``name`` at the top level)."""
    return f"{prefix}.{name}" if prefix else name


def _wrong_type(key: str, value: Any, expected: str, source: str | Path | None) -> ConfigError:
    return ConfigError(
        key,
        f"= {toml_repr(value)} has the wrong type ({_toml_type_name(value)}); expected {expected}",
        source=source,
    )


def _as_float(key: str, value: Any, source: str | Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(key, value, "a number", source)
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(key, f"= {toml_repr(value)} is not a finite number", source=source)
    return number


def _as_int(key: str, value: Any, spec: KeySpec, source: str | Path | None) -> int:
    if spec.accept_int_string and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(
                key, f"= {toml_repr(value)} is not an integer; expected {spec.allowed_text()}", source=source
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(key, value, "an integer", source)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise _wrong_type(key, value, "an integer", source)
        return int(value)
    return value


def coerce_value(key: str, value: Any, spec: KeySpec, *, source: str | Path | None = None) -> Any:
    """Check one raw TOML value against ``spec``; return it in canonical form (aliases resolved).

    Integers are accepted where floats are expected, and integral floats (``1E4``) where integers are;
    booleans are never numbers. Lists become tuples.
    """
    if isinstance(value, Mapping):
        raise _wrong_type(key, value, spec.allowed_text() if spec.choices else _KIND_TEXT[spec.kind], source)
    if spec.kind == "string":
        if not isinstance(value, str):
            raise _wrong_type(key, value, "a string", source)
        result: Any = dict(spec.aliases).get(value, value)
        if result in spec.unavailable:
            raise RecognisedNotAvailableError(key, value, spec.allowed_text(), source=source)
        if spec.choices and result not in spec.choices:
            raise ConfigError(
                key, f"= {toml_repr(value)} is not allowed; allowed: {spec.allowed_text()}", source=source
            )
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise _wrong_type(key, value, "true or false", source)
        result = value
    elif spec.kind == "int":
        result = _as_int(key, value, spec, source)
    elif spec.kind == "float":
        result = _as_float(key, value, source)
    elif spec.kind in ("int_list", "string_list"):
        result = _as_list(key, value, spec, source)
    else:  # float_list
        expected = f"a list of {spec.length} numbers" if spec.length else "a list of numbers"
        if not isinstance(value, list | tuple):
            raise _wrong_type(key, value, expected, source)
        if spec.length is not None and len(value) != spec.length:
            raise ConfigError(
                key, f"= {toml_repr(value)} has {len(value)} items; expected {expected}", source=source
            )
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ConfigError(key, f"= {toml_repr(value)} is not {expected}", source=source)
            items.append(_as_float(key, item, source))
        result = tuple(items)
    if spec.check is not None and not spec.check(result):
        raise ConfigError(
            key, f"= {toml_repr(value)} is out of range; allowed: {spec.allowed_text()}", source=source
        )
    if spec.not_built and result != spec.default and result not in spec.also_accepted:
        accepted = " or ".join(toml_repr(v) for v in (spec.default, *spec.also_accepted))
        raise RecognisedNotAvailableError(key, value, accepted, source=source)
    return result


def _as_list(key: str, value: Any, spec: KeySpec, source: str | Path | None) -> tuple[Any, ...]:
    """A TOML array of integers (integral floats allowed) or of strings, as a tuple."""
    expected = _KIND_TEXT[spec.kind]
    if not isinstance(value, list | tuple):
        raise _wrong_type(key, value, expected, source)
    items: list[Any] = []
    for item in value:
        if spec.kind == "string_list":
            if not isinstance(item, str):
                raise ConfigError(key, f"= {toml_repr(value)} is not {expected}", source=source)
            items.append(item)
        elif isinstance(item, bool) or not (
            isinstance(item, int) or (isinstance(item, float) and math.isfinite(item) and item.is_integer())
        ):
            raise ConfigError(key, f"= {toml_repr(value)} is not {expected}", source=source)
        else:
            items.append(int(item))
    return tuple(items)


def key_specs(cls: type) -> dict[str, KeySpec]:
    """The TOML keys (not sub-tables) of a config dataclass, by name, in declaration order."""
    return {f.name: f.metadata[KEY_META] for f in dataclasses.fields(cls) if KEY_META in f.metadata}


def _toml_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if KEY_META in f.metadata or SECTION_META in f.metadata]


def parse_section(
    cls: type,
    data: Any,
    *,
    prefix: str = "",
    source: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``cls`` from the raw mapping ``data`` (the table at dotted path ``prefix``).

    Unknown keys, missing required keys, wrong types, values outside the allowed set and out-of-range
    values raise ConfigError naming the dotted key. ``extra`` are constructor arguments that are not
    TOML keys (e.g. ``source``).
    """
    if not isinstance(data, Mapping):
        where = prefix or "(top level)"
        raise ConfigError(where, f"= {toml_repr(data)} must be a table", source=source)
    fields = _toml_fields(cls)
    names = [f.name for f in fields]
    for name in data:
        if name not in names:
            here = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(
                dotted(prefix, str(name)),
                f"is not a known key of {here}; allowed keys: {', '.join(names)}",
                source=source,
            )
    values: dict[str, Any] = dict(extra or {})
    for field in fields:
        key = dotted(prefix, field.name)
        if SECTION_META in field.metadata:
            sub: SectionSpec = field.metadata[SECTION_META]
            raw = data.get(field.name, {})
            if sub.cls is not None:
                values[field.name] = parse_section(sub.cls, raw, prefix=key, source=source)
            else:
                if not isinstance(raw, Mapping):
                    raise ConfigError(key, f"= {toml_repr(raw)} must be a table", source=source)
                values[field.name] = sub.parser(raw, key_prefix=key, source=source)
            continue
        spec: KeySpec = field.metadata[KEY_META]
        if field.name in data:
            values[field.name] = coerce_value(key, data[field.name], spec, source=source)
        elif spec.required:
            raise ConfigError(key, f"is required; expected {spec.allowed_text()}", source=source)
        else:
            values[field.name] = spec.default
    return cls(**values)


def section_to_dict(obj: Any) -> dict[str, Any]:
    """The plain TOML mapping of a config dataclass instance (tuples become lists)."""
    out: dict[str, Any] = {}
    for field in _toml_fields(type(obj)):
        value = getattr(obj, field.name)
        if SECTION_META in field.metadata:
            sub: SectionSpec = field.metadata[SECTION_META]
            out[field.name] = section_to_dict(value) if sub.cls is not None else dict(sub.dumper(value))
        else:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def key_roles(cls: type, prefix: str = "") -> dict[str, KeySpec]:
    """{dotted key: KeySpec} of every key declared with :func:`option` in ``cls`` and its sub-tables.

    Keys of a section with its own parser are not listed (they have :data:`DEFAULT_ROLES`).
    """
    out: dict[str, KeySpec] = {}
    for field in _toml_fields(cls):
        key = dotted(prefix, field.name)
        if SECTION_META in field.metadata:
            sub: SectionSpec = field.metadata[SECTION_META]
            if sub.cls is not None:
                out.update(key_roles(sub.cls, key))
        else:
            out[key] = field.metadata[KEY_META]
    return out


def flatten_keys(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf of a nested TOML mapping, in table order."""
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = dotted(prefix, str(name))
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, key))
        else:
            flat[key] = value
    return flat


def set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``dotted_key = "a.b.c"``, creating missing tables."""
    parts = dotted_key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(".".join(parts[: depth + 1]), f"= {toml_repr(child)} is not a table")
        node = child
    node[parts[-1]] = value
