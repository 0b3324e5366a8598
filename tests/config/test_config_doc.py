"""docs/config.md's key tables are the schema's: generated from it, and checked to be up to date."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from hamflow.config import key_tables
from hamflow.config.infer_config import InferConfig
from hamflow.config.key_tables import REGENERATE, infer_rows, pages, render_document
from hamflow.config.key_tables import key_tables as all_tables
from hamflow.config.scheduler_config import ALL_KEYS as SCHEDULER_KEYS
from hamflow.config.schema import REQUIRED, KeySpec, key_roles, option, section, toml_repr
from hamflow.config.train_config import AdvancedConfig, ModelConfig, TrainConfig, train_key_roles

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


@pytest.mark.parametrize("page", sorted(pages()))
def test_the_generated_tables_are_up_to_date(page):
    text = (DOC.parent / page).read_text()
    assert render_document(text, page=page) == text, (
        f"docs/{page}'s key tables are out of date: run {REGENERATE}"
    )


def test_the_schedules_summary_has_every_scheduler_key():
    text = (DOC.parent / "schedules.md").read_text()
    assert all(f"| `{key}` |" in text for key in SCHEDULER_KEYS)


def _documented_keys(text: str) -> set[str]:
    """The dotted keys of every generated table of the page (first column of each row)."""
    keys = set()
    for block in re.finditer(r"<!-- keys:([\w.]+) begin -->\n(.*?)<!-- keys:\1 end -->", text, re.DOTALL):
        name, table = block.groups()
        prefix = name.removeprefix("train").removeprefix("infer").lstrip(".")
        for row in table.splitlines()[2:]:
            key = row.split("|")[1].strip().strip("`")
            keys.add(f"{name.split('.')[0]}:{prefix + '.' if prefix else ''}{key}")
    return keys


def test_every_schema_key_is_on_the_page_and_no_other():
    train = {f"train:{key}" for key in train_key_roles()}
    train |= {f"train:process.train.scheduler.{key}" for key in SCHEDULER_KEYS}
    infer = {f"infer:{row.key}" for row in infer_rows()}
    assert _documented_keys(DOC.read_text()) == train | infer


def test_inference_only_leaves_out_the_training_tomls_shared_sections():
    shared = {key for key in key_roles(InferConfig) if key.startswith(("system.", "data.dft."))}
    assert shared and not shared & {row.key for row in infer_rows()}


def test_every_key_has_a_description():
    rows = [row for table_rows in _all_rows() for row in table_rows]
    assert [row.key for row in rows if not row.specs[0][1].doc.strip()] == []


def _all_rows():
    for _, _, rows in key_tables._sections(TrainConfig):
        yield rows
    yield infer_rows()


def test_a_key_added_to_the_schema_makes_the_page_stale(monkeypatch):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class GrownAdvanced(AdvancedConfig):
        new_key: int = option(1, doc="a key added without regenerating the page")

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class GrownModel(ModelConfig):
        advanced: GrownAdvanced = section(GrownAdvanced)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class GrownTrain(TrainConfig):
        model: GrownModel = section(GrownModel)

    text = DOC.read_text()
    monkeypatch.setattr(key_tables, "TrainConfig", GrownTrain)
    assert "| `new_key` |" in render_document(text)
    assert not key_tables.update_document(DOC, check=True)


def test_a_missing_block_is_named():
    text = DOC.read_text().replace("<!-- keys:train.data.dft begin -->", "")
    with pytest.raises(ValueError, match=r"missing \['train.data.dft'\]"):
        render_document(text)


def test_rendered_cells():
    spec = KeySpec(kind="float_list", default=(0.9, 0.999), length=2, allowed="each in (0, 1)", doc="a | b")
    table = key_tables.render_table([key_tables.Row("betas", (("", spec),), roles=spec)], with_roles=True)
    row = table.splitlines()[2]
    assert row == "| `betas` | list of 2 floats | `[0.9, 0.999]` | each in (0, 1) | train | no | A \\| b. |"
    assert set(all_tables()) >= {"train.system", "train.process.train.scheduler", "infer"}


def test_the_hand_written_defaults_table_agrees_with_the_schema():
    """'Defaults: per-key values win over DeepH-pack's example' states defaults outside the generated
    blocks; each one it names must be the schema's."""
    text = DOC.read_text()
    table = text[text.index("### Defaults: per-key values win") : text.index("## Training TOML")]
    defaults = {key: spec.default for key, spec in train_key_roles().items()}
    defaults |= {
        f"process.train.scheduler.{row.key}": row.specs[0][1].default for row in key_tables.scheduler_rows()
    }
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 5
    for row in rows:
        key, used = row[1].strip().strip("`"), row[3].strip()
        if used.startswith("none"):
            assert defaults[key] is REQUIRED, key
        else:
            assert used.split("`")[1] == toml_repr(defaults[key]), key
