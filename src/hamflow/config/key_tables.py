"""The key tables of ``docs/config.md``, rendered from the schema (each key's ``option(...)``).

Every TOML key is declared once: its type, default, allowed values, roles and ``doc`` live in its
``option(...)`` (``train_config``, ``infer_config``) or its ``KeySpec`` (``scheduler_config``). This
module turns those declarations into the markdown tables of the user's page, so the page cannot drift
from what the parser accepts. The tables sit in ``docs/config.md`` between marker comments::

    <!-- keys:train.data.dft begin -->
    ...generated table...
    <!-- keys:train.data.dft end -->

and the prose around them (headings, general rules, checks between keys) stays hand-written.
``docs/schedules.md`` carries a summary of the scheduler's keys the same way (block ``schedules``).
``python3 scripts/config_table.py`` rewrites the tables in place; ``--check`` (and
``tests/config/test_config_doc.py``) fails when they are out of date.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

from hamflow.config.infer_config import InferConfig
from hamflow.config.scheduler_config import scheduler_key_docs
from hamflow.config.schema import DEFAULT_ROLES, KEY_META, REQUIRED, SECTION_META, KeySpec, dotted, toml_repr
from hamflow.config.train_config import DftConfig, SystemConfig, TrainConfig

#: The command that rewrites the tables (named by the up-to-date check when they are stale).
REGENERATE = "python3 scripts/config_table.py"

_TYPE_TEXT = {
    "string": "string",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "float_list": "list of floats",
    "int_list": "list of ints",
    "string_list": "list of strings",
}
_ORIGIN_TEXT = {
    "": "",
    "newer": "*DeepH-pack's newer template.* ",
    "hamflow": "**hamflow addition.** ",
}
_TRAIN_HEADER = ("key", "type", "default", "allowed", "stages", "may change on resume", "description")
_INFER_HEADER = ("key", "type", "default", "allowed", "description")
#: Sections of the inference TOML that are the training TOML's (documented once, with training).
_SHARED_SECTIONS = (SystemConfig, DftConfig)

_MARKER = re.compile(r"<!-- keys:(?P<name>[\w.]+) begin -->\n.*?<!-- keys:(?P=name) end -->", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Row:
    """One key of a table: its name (relative to the table) and its declaration(s).

    ``specs`` has one ``(label, spec)`` pair, or one per family of a key whose default and range
    depend on another key (the scheduler's ``warmup_steps``: one spec per ``type`` family).
    """

    key: str
    specs: tuple[tuple[str, KeySpec], ...]
    roles: KeySpec = DEFAULT_ROLES
    used_by: tuple[str, ...] = ()


def _escape(text: str) -> str:
    """Schema text as markdown: ``<`` and ``*`` outside code spans are literal (``<run>``, ``.*``)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside the code spans
        parts[i] = parts[i].replace("<", "\\<").replace("*", "\\*")
    return "`".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _code(value: object) -> str:
    return f"`{toml_repr(value)}`"


def _default_text(spec: KeySpec) -> str:
    if spec.default is REQUIRED:
        return "required"
    if spec.default is None:
        return "unset"
    return _code(spec.default)


def _type_text(spec: KeySpec) -> str:
    if spec.kind == "float_list" and spec.length:
        return f"list of {spec.length} floats"
    return _TYPE_TEXT[spec.kind]


def _allowed_text(spec: KeySpec) -> str:
    if spec.not_built:
        accepted = " or ".join(_code(v) for v in (spec.default, *spec.also_accepted))
        return f"only {accepted} (recognised, not available yet in hamflow)"
    if spec.choices:
        text = ", ".join(_code(choice) for choice in spec.choices)
        if spec.aliases:
            text += "; aliases " + ", ".join(f"{_code(a)} = {_code(c)}" for a, c in spec.aliases)
    else:
        text = _escape(spec.allowed)
    if spec.unavailable:
        text += "; recognised, not available yet: " + ", ".join(_code(v) for v in spec.unavailable)
    return text


def _per_family(row: Row, render) -> str:
    texts = [render(spec) for _, spec in row.specs]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"{text} ({label})" for (label, _), text in zip(row.specs, texts, strict=True))


def _stages_text(roles: KeySpec) -> str:
    stages = list(roles.stages)
    if roles.store and "graph" not in stages:
        only = f" ({', '.join(roles.store_graph_types)} graphs)" if roles.store_graph_types else ""
        stages.insert(0, f"graph{only}")
    return ", ".join(stages) if stages else "none"


def _description(row: Row) -> str:
    spec = row.specs[0][1]
    doc = _escape(spec.doc.strip())
    if doc:
        doc += "" if doc.endswith(".") else "."
        first = re.match(r"[a-z]+\b", doc)
        if first and first.group() not in ("true", "false") and doc[first.end() : first.end() + 1] != "_":
            doc = doc[0].upper() + doc[1:]  # not a key name or a TOML value
    if row.used_by:
        doc += f" Used by {', '.join(f'`{t}`' for t in row.used_by)}."
    return _ORIGIN_TEXT[spec.origin] + doc


def render_table(rows: list[Row], *, with_roles: bool) -> str:
    """A markdown table of ``rows``: type, default, allowed values, (roles,) description."""
    header = _TRAIN_HEADER if with_roles else _INFER_HEADER
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [f"`{row.key}`", _per_family(row, _type_text), _per_family(row, _default_text)]
        cells.append(_per_family(row, _allowed_text))
        if with_roles:
            cells += [_stages_text(row.roles), "yes" if row.roles.resume_ok else "no"]
        cells.append(_description(row))
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type | None, list[Row]]]:
    """(dotted section, its class or None for a foreign section, its key rows) of ``cls`` and below."""
    rows = []
    subs = []
    for field in dataclasses.fields(cls):
        if KEY_META in field.metadata:
            spec = field.metadata[KEY_META]
            rows.append(Row(field.name, (("", spec),), roles=spec))
        elif SECTION_META in field.metadata:
            subs.append((dotted(prefix, field.name), field.metadata[SECTION_META].cls))
    yield prefix, cls, rows
    for name, sub in subs:
        if sub is None:  # the scheduler: its own parser, its own key declarations
            yield name, None, scheduler_rows()
        else:
            yield from _sections(sub, name)


def train_tables() -> dict[str, str]:
    """{block name: table} of the training TOML, one block per section with keys (``train.<section>``)."""
    return {
        f"train.{name}": render_table(rows, with_roles=True)
        for name, _, rows in _sections(TrainConfig)
        if rows
    }


def infer_rows() -> list[Row]:
    """The keys of the inference TOML that are its own (not the training TOML's shared sections)."""
    rows = []
    for name, cls, section_rows in _sections(InferConfig):
        if cls in _SHARED_SECTIONS:
            continue
        rows += [dataclasses.replace(row, key=dotted(name, row.key)) for row in section_rows]
    return rows


def scheduler_rows() -> list[Row]:
    """The keys of ``[process.train.scheduler]`` (declared in :mod:`hamflow.config.scheduler_config`)."""
    return [Row(name, specs, used_by=used_by) for name, specs, used_by in scheduler_key_docs()]


def schedules_summary() -> str:
    """The short scheduler table of ``docs/schedules.md``: default per type, range, the types using it."""
    lines = ["| key | default (per type) | allowed | used by |", "|---|---|---|---|"]
    for row in scheduler_rows():
        used_by = ", ".join(f"`{t}`" for t in row.used_by) if len(row.used_by) < 6 else "all"
        cells = [f"`{row.key}`", _per_family(row, _default_text), _per_family(row, _allowed_text), used_by]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def key_tables() -> dict[str, str]:
    """{block name: markdown table} of every block of ``docs/config.md``."""
    tables = train_tables()
    tables["infer"] = render_table(infer_rows(), with_roles=False)
    return tables


#: The pages with generated blocks: {file under docs/: {block name: table}} (each page has all of its
#: blocks, and no other).
def pages() -> dict[str, dict[str, str]]:
    return {"config.md": key_tables(), "schedules.md": {"schedules": schedules_summary()}}


def render_document(text: str, tables: dict[str, str] | None = None, *, page: str = "config.md") -> str:
    """``text`` with every marked block replaced by its table; ValueError for missing/unknown blocks.

    ``tables`` defaults to the blocks of ``docs/<page>``.
    """
    if tables is None:
        tables = pages()[page]
    found = [match.group("name") for match in _MARKER.finditer(text)]
    unknown = sorted(set(found) - set(tables))
    missing = [name for name in tables if name not in found]
    if unknown or missing:
        raise ValueError(
            f"docs/{page}'s key blocks do not match the schema: missing {missing}, unknown {unknown}; "
            "add or remove the '<!-- keys:NAME begin -->' / '<!-- keys:NAME end -->' pairs"
        )

    def table(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"<!-- keys:{name} begin -->\n{tables[name]}\n<!-- keys:{name} end -->"

    return _MARKER.sub(table, text)


def update_document(path: str | Path, *, check: bool = False) -> bool:
    """Rewrite the tables of ``path`` (a page of :func:`pages`; with ``check`` only compare); True when
    it was up to date."""
    path = Path(path)
    old = path.read_text()
    new = render_document(old, page=path.name)
    if new != old and not check:
        path.write_text(new)
    return new == old
