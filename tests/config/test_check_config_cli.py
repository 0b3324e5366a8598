"""`hamflow check-config TOML [--infer]`: the resolved TOML and exit 0, or one error line and exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hamflow.cli import main
from hamflow.config.infer_config import load_infer_config
from hamflow.config.train_config import load_train_config

DATA = Path(__file__).resolve().parent / "data"
TRAIN_EXAMPLE = DATA / "deeph_pack_example_train.toml"
INFER_EXAMPLE = DATA / "deeph_pack_example_infer.toml"


def test_prints_the_resolved_training_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config", str(TRAIN_EXAMPLE)]) == 0
    out = capsys.readouterr().out
    resolved = tomllib.loads(out)
    assert resolved["model"]["net_type"] == "sparrow"  # alias "normal" resolved
    assert resolved["data"]["dft"]["on_bad_structure"] == "fail"  # default filled
    path = tmp_path / "resolved.toml"
    path.write_text(out)
    assert load_train_config(path) == load_train_config(TRAIN_EXAMPLE)


def test_prints_the_resolved_inference_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--infer", str(INFER_EXAMPLE)]) == 0
    resolved = tomllib.loads(capsys.readouterr().out)
    assert resolved["process"]["infer"]["output_type"] == "h5"
    assert resolved["model"]["model_dir"] == load_infer_config(INFER_EXAMPLE).model.model_dir


def test_bad_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(TRAIN_EXAMPLE.read_text().replace('graph_type = "H"', 'graph_type = "HX"'))
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f'hamflow: error: {path}: [data.graph.graph_type] = "HX" is not allowed; '
        'allowed: "H", "HS", "Rho", "Sap", "S"\n'
    )


def test_contradiction_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(
        TRAIN_EXAMPLE.read_text().replace("standardize_gauge = false", "standardize_gauge = true")
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[model.advanced.standardize_gauge]" in err


def test_training_toml_checked_as_inference_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--infer", str(TRAIN_EXAMPLE)]) == 2
    assert "is not a known key" in capsys.readouterr().err


@pytest.mark.parametrize("content, problem", [(None, "cannot be read"), ("[system\n", "not valid TOML")])
def test_unreadable_or_invalid_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "train.toml"
    if content is not None:
        path.write_text(content)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hamflow: error: {path}: ") and problem in err and err.count("\n") == 1
