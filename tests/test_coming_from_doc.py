"""docs/coming-from.md: linked from the README, its links resolve, and every `hamflow X` it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from hamflow.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "coming-from.md"


def test_linked_from_the_readme_and_its_links_resolve():
    assert "(docs/coming-from.md)" in (REPO / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", PAGE.read_text()):
        assert (PAGE.parent / link).is_file(), link


def test_every_hamflow_command_and_option_named_exists():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    text = PAGE.read_text()
    named = set(re.findall(r"`hamflow ([a-z][a-z-]*)", text))
    assert {"train", "infer", "test", "evaluate", "plot", "convert"} <= named
    for command in named:
        assert command in subparsers, command
    # options written right after a command, e.g. `hamflow train train.toml --finetune-from RUN_DIR`
    for command, rest in re.findall(r"`hamflow ([a-z][a-z-]*)([^`]*)`", text):
        sub = subparsers[command]
        nested = [a.choices for a in sub._actions if isinstance(a.choices, dict)]  # convert legacy
        words = rest.split()
        if nested and words and words[0] in nested[0]:
            sub = nested[0][words[0]]
        known = {opt for action in sub._actions for opt in action.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in known, f"hamflow {command} {option}"
