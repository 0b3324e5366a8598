"""One policy for folders that are not structures, in discover, validate, graph and train (issue 16).

An incomplete folder (no POSCAR or no info.json, empty, or a symlink leading nowhere) is never
dropped silently: ``on_bad_structure = "fail"`` names it, ``"skip"`` reports it. A regular file where
a folder belongs is reported as a warning. Zero structures is an error, with a hint when the
structures sit at another ``data_dir_depth``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from hamflow.cli import main
from hamflow.config.train_config import parse_train_config
from hamflow.data.discover import depth_hint, no_structures_error, scan_dft_dir
from hamflow.errors import DataError
from hamflow.graph.stage import build_graph_store
from hamflow.graph.store import read_store_meta

DEMO_H2O = Path(__file__).resolve().parents[2] / "data" / "demo" / "molecules" / "dft" / "h2o"


def _structure(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "POSCAR").write_text("")
    (folder / "info.json").write_text("{}")


def test_files_and_dead_symlinks_are_reported_not_ignored(tmp_path: Path) -> None:
    dft = tmp_path / "dft"
    _structure(dft / "ok")
    (dft / "notes.txt").write_text("a regular file")
    (dft / "loop").symlink_to("loop")
    (dft / "gone").symlink_to(tmp_path / "nowhere")
    found = scan_dft_dir(dft, 0)
    assert found.ids == ["ok"]
    assert found.incomplete == ["gone", "loop"]
    assert found.strays == ["notes.txt"]


def test_files_at_an_intermediate_level_are_strays(tmp_path: Path) -> None:
    dft = tmp_path / "dft"
    _structure(dft / "t" / "s")
    (dft / "README").write_text("x")
    assert scan_dft_dir(dft, 1).strays == ["README"]


def test_zero_structures_hints_at_the_depth(tmp_path: Path) -> None:
    dft = tmp_path / "dft"
    for sid in ("a", "b"):
        _structure(dft / "group" / sid)
    # one level too deep: nothing there at all (and the structures' files are not called strays)
    found = scan_dft_dir(dft, 2)
    assert found.strays == [] and found.incomplete == []
    error = no_structures_error(dft, 2, found)
    assert str(error) == (
        f"{dft}: no structure folder (holding POSCAR and info.json) at depth 2; 2 structure(s) are at "
        "depth 1 (e.g. group/a): set [data.dft] data_dir_depth = 1 (--depth 1)"
    )
    # one level too shallow: the group folder looks like an incomplete structure
    assert "(1 incomplete folder(s) there, first group); 2 structure(s) are at depth 1" in str(
        no_structures_error(dft, 0, scan_dft_dir(dft, 0))
    )
    assert depth_hint(dft, 1) == ""


def test_cli_validate_and_discover_exit_non_zero_on_zero_structures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dft").mkdir()
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hamflow: error: ") and "no structure folder" in err and err.count("\n") == 1
    assert main(["discover", "--inputs-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no structure folder" in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()

    _structure(tmp_path / "dft" / "group" / "a")
    assert main(["validate", str(tmp_path), "--depth", "2"]) == 1
    assert "set [data.dft] data_dir_depth = 1 (--depth 1)" in capsys.readouterr().err


def test_cli_validate_reports_a_stray_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(DEMO_H2O / sorted(p.name for p in DEMO_H2O.iterdir())[0], tmp_path / "dft" / "s0")
    (tmp_path / "dft" / "s1.tar").write_text("an archived structure")
    assert main(["validate", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"hamflow: warning: {tmp_path / 'dft' / 's1.tar'}: not a folder (a structure or data_dir_depth "
        "level must be one): ignored\n"
    )
    assert "validated 1 structure: 1 ok" in captured.out


# ------------------------------------------------------------------------------------ graph


@pytest.fixture
def inputs_with_incomplete(tmp_path: Path, demo_dir: Path) -> Path:
    """3 demo H2O structures and, beside them, an empty folder and one without POSCAR (depth 0);
    ``demo_dir`` (tests/conftest.py) skips, naming the generator, without the committed demo data."""
    inputs = tmp_path / "inputs"
    for sid in sorted(p.name for p in DEMO_H2O.iterdir())[:3]:
        shutil.copytree(DEMO_H2O / sid, inputs / "dft" / sid)
    (inputs / "dft" / "empty").mkdir()
    shutil.copytree(
        inputs / "dft" / sorted(p.name for p in DEMO_H2O.iterdir())[0], inputs / "dft" / "no_poscar"
    )
    (inputs / "dft" / "no_poscar" / "POSCAR").unlink()
    return inputs


def _graph_config(inputs: Path, policy: str):
    return parse_train_config(
        {
            "data": {
                "inputs_dir": str(inputs),
                "outputs_dir": str(inputs / "out"),
                "dft": {"on_bad_structure": policy},
                "graph": {"graph_type": "HS", "parallel_num": 1},
            },
            "model": {"advanced": {"net_irreps": ""}},
        }
    )


def test_graph_fails_naming_the_incomplete_folder(inputs_with_incomplete: Path) -> None:
    with pytest.raises(DataError, match=r"^structure empty: \.: empty folder .*\(and 1 more bad structure\)"):
        build_graph_store(_graph_config(inputs_with_incomplete, "fail"), progress=False)


def test_graph_skips_and_reports_the_incomplete_folders(
    inputs_with_incomplete: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hamflow"):
        path = build_graph_store(_graph_config(inputs_with_incomplete, "skip"), progress=False)
    meta = read_store_meta(path)
    assert len(meta.ids) == 3 and meta.excluded_ids == ["empty", "no_poscar"]
    assert "skipping bad structure empty" in caplog.text and "skipping bad structure no_poscar" in caplog.text


def test_cli_graph_from_a_manifest_keeps_the_policy(
    inputs_with_incomplete: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "train.toml"
    toml.write_text(
        f'[data]\ninputs_dir = "{inputs_with_incomplete}"\noutputs_dir = "{tmp_path / "out"}"\n'
        '[data.graph]\ngraph_type = "HS"\nparallel_num = 1\n[model.advanced]\nnet_irreps = ""\n'
    )
    out = tmp_path / "disc"
    assert main(["discover", "--inputs-dir", str(inputs_with_incomplete), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["graph", str(toml), "--ids-from", str(out / "manifest.json")]) == 1
    assert capsys.readouterr().err.startswith("hamflow: error: structure empty: .: empty folder")
