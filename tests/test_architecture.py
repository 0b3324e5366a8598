"""docs/architecture.md's rules, checked: no import circle, no import from a lower layer to a higher one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "scripts" / "check_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_circle_and_no_import_upwards(capsys) -> None:
    assert _checker().main(["check_imports", str(REPO / "src")]) == 0, capsys.readouterr().out


def test_config_never_imports_train_and_infer_never_imports_the_loop() -> None:
    checker = _checker()
    src = REPO / "src"
    modules = {checker.module_name(p, src): p for p in (src / "hamflow").rglob("*.py")}
    known = set(modules)
    for name, path in modules.items():
        targets = checker.imports_of(path, name, known)
        if name.startswith("hamflow.config"):
            assert not [t for t in targets if t.startswith("hamflow.train")], name
        if name.startswith("hamflow.infer"):
            loop = {"hamflow.train.run", "hamflow.train.loop", "hamflow.train.state"}
            assert not targets & loop, name


def test_the_map_is_linked_from_the_readme() -> None:
    assert "(docs/architecture.md)" in (REPO / "README.md").read_text()
