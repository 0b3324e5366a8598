"""Validation: each broken structure of the corpus yields exactly its one-line message; the CLI too."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from broken_corpus import (  # the fixture "broken_corpus" is used by name
    CASES,
    STRAY_FILE,
    Corpus,
    broken_corpus_fixture,  # noqa: F401
    write_valid_structure,
)

from hamflow.cli import main
from hamflow.data.discover import read_manifest, write_manifest
from hamflow.data.matrix_h5 import BlockMatrix, read_matrix_h5, write_matrix_h5
from hamflow.data.validate import (
    StructureProblem,
    ValidationReport,
    apply_bad_structure_policy,
    validate_structure,
    validate_tree,
)
from hamflow.errors import ConfigError, DataError

CASE_BY_NAME = {case.name: case for case in CASES}


def test_corpus_has_at_least_20_broken_structures_without_real_data() -> None:
    assert len({case.name for case in CASES if case.base != "real"}) >= 20
    assert len(CASE_BY_NAME) == len(CASES)


def test_valid_structures_have_no_problem(broken_corpus: Corpus) -> None:
    assert len(broken_corpus.valid) >= 2
    for sid in broken_corpus.valid:
        assert validate_structure(broken_corpus.path(sid), sid) == []


@pytest.mark.parametrize("name", sorted(CASE_BY_NAME))
def test_each_broken_structure_yields_its_one_line(broken_corpus: Corpus, name: str) -> None:
    case = CASE_BY_NAME[name]
    if case not in broken_corpus.cases:
        pytest.skip("real-data case: the DeepH-dock data in ../shared is absent")
    problems = validate_structure(broken_corpus.path(name), name)
    assert len(problems) == 1, [p.line() for p in problems]
    (problem,) = problems
    assert (problem.sid, problem.file, problem.key) == (name, case.file, case.key)
    assert case.fragment in problem.reason
    line = problem.line()
    assert "\n" not in line
    key = f": key '{case.key}'" if case.key else ""
    assert line.startswith(f"structure {name}: {case.file}{key}: ")


def test_tree_report_sorts_ok_and_bad(broken_corpus: Corpus) -> None:
    report = validate_tree(broken_corpus.root, depth=0)
    assert report.ok == sorted(broken_corpus.valid)
    assert report.bad == sorted(case.name for case in broken_corpus.cases)
    assert len(report.problems) == len(broken_corpus.cases)
    bad, total = len(broken_corpus.cases), len(broken_corpus.cases) + len(broken_corpus.valid)
    assert report.summary() == f"validated {total} structures: {len(broken_corpus.valid)} ok, {bad} bad"


def test_parallel_jobs_give_the_same_report(broken_corpus: Corpus) -> None:
    ids = [*broken_corpus.valid, "nan_entries", "poscar_counts_mismatch", "empty_folder"]
    serial = validate_tree(broken_corpus.root, depth=0, ids=ids)
    parallel = validate_tree(broken_corpus.root, depth=0, ids=ids, n_jobs=2)
    assert parallel == serial
    assert serial.ok == broken_corpus.valid


def test_report_json_round_trip_and_merge(broken_corpus: Corpus, tmp_path: Path) -> None:
    ids = ["valid_synthetic", "nan_entries", "missing_info_json"]
    report = validate_tree(broken_corpus.root, depth=0, ids=ids)
    path = tmp_path / "report.json"
    report.write(path)
    assert ValidationReport.read(path) == report
    assert json.loads(path.read_text())["bad"] == ["nan_entries", "missing_info_json"]
    merged = ValidationReport.merge([report, ValidationReport(ok=["x"])])
    assert merged.ok == ["valid_synthetic", "x"] and merged.bad == report.bad
    path.write_text("{}")
    with pytest.raises(DataError, match="not a hamflow validation report"):
        ValidationReport.read(path)


def test_several_problems_give_one_line_per_structure() -> None:
    report = ValidationReport(
        problems=[
            StructureProblem("a", "POSCAR", None, "file not found"),
            StructureProblem("a", "hamiltonian.h5", "entries", "NaN"),
            StructureProblem("a", "overlap.h5", "entries", "NaN"),
            StructureProblem("b", "info.json", "spinful", "missing"),
        ]
    )
    assert report.bad_lines() == [
        "structure a: POSCAR: file not found (+2 more problems in this structure)",
        "structure b: info.json: key 'spinful': missing",
    ]


def test_policy_fail_raises_with_the_first_line(broken_corpus: Corpus) -> None:
    report = validate_tree(
        broken_corpus.root, depth=0, ids=["valid_synthetic", "nan_entries", "empty_folder"]
    )
    with pytest.raises(DataError) as error:
        apply_bad_structure_policy(report, "fail")
    message = str(error.value)
    assert message.startswith("structure nan_entries: hamiltonian.h5: key 'entries': NaN in the block")
    assert "(and 1 more bad structure)" in message and 'on_bad_structure = "skip"' in message
    good = validate_tree(broken_corpus.root, depth=0, ids=broken_corpus.valid)
    assert apply_bad_structure_policy(good, "fail") == broken_corpus.valid


def test_policy_skip_logs_each_skipped_id(broken_corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    report = validate_tree(
        broken_corpus.root, depth=0, ids=["valid_synthetic", "nan_entries", "empty_folder"]
    )
    with caplog.at_level(logging.WARNING, logger="hamflow"):
        assert apply_bad_structure_policy(report, "skip") == ["valid_synthetic"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping bad structure")]
    assert len(skipped) == 2
    assert "structure nan_entries: hamiltonian.h5" in skipped[0]
    assert "structure empty_folder: .: empty folder" in skipped[1]
    with pytest.raises(ConfigError, match=r"\[data\.dft\.on_bad_structure\] = 'ignore'"):
        apply_bad_structure_policy(report, "ignore")


def test_mirror_tolerance_scales_with_the_block(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    write_valid_structure(folder)
    path = folder / "hamiltonian.h5"
    matrix = read_matrix_h5(path)
    row = matrix.pair_index()[(1, 0, 0, 0, 1)]
    start = int(matrix.chunk_boundaries[row])
    block_scale = max(1.0, float(np.abs(matrix.block(row)).max()))
    entries = matrix.entries.copy()
    entries[start] += 0.5e-6 * block_scale
    write_matrix_h5(
        path, BlockMatrix(matrix.atom_pairs, matrix.chunk_shapes, matrix.chunk_boundaries, entries)
    )
    assert validate_structure(folder, "s") == []
    (problem,) = validate_structure(folder, "s", mirror_atol=1e-7)
    assert "differs from the transpose of its mirror" in problem.reason


def test_quantities_choose_the_required_files(broken_corpus: Corpus) -> None:
    folder = broken_corpus.path("missing_hamiltonian")
    assert validate_structure(folder, "m", quantities=("S",)) == []
    assert validate_structure(folder, "m", quantities=("S", "Rho")) == []
    (problem,) = validate_structure(broken_corpus.path("inf_entries"), "i", quantities=("H", "S", "Rho"))
    assert problem.file == "density_matrix.h5"
    assert validate_structure(broken_corpus.path("inf_entries"), "i", quantities=("H", "S")) == []
    with pytest.raises(ConfigError, match="'Hamiltonian' is not a matrix quantity"):
        validate_structure(folder, "m", quantities=("Hamiltonian",))


def test_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (problem,) = validate_structure(tmp_path / "nowhere", "nowhere")
    assert problem.line().startswith("structure nowhere: .: structure folder not found")


@pytest.mark.parametrize("group", ["molecules", "h2o", "rotated", "periodic"])
def test_real_deeph_dock_data_passes(deeph_dock: Path, group: str) -> None:
    report = validate_tree(deeph_dock / group, depth=0)
    assert report.bad_lines() == [] and report.ok


def test_real_legacy_upgraded_passes(deeph_dock: Path) -> None:
    assert validate_structure(deeph_dock / "legacy/upgraded/MoTe2", "MoTe2") == []


# ------------------------------------------------------------------------------------------ CLI


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_cli_validate_prints_one_line_per_bad_structure(
    broken_corpus: Corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(broken_corpus.root)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = _lines(captured.out)
    bad = sorted(case.name for case in broken_corpus.cases)
    assert len(lines) == len(bad) + 1
    assert [line.split(":")[0] for line in lines[:-1]] == [f"structure {name}" for name in bad]
    for line, name in zip(lines, bad, strict=False):
        assert CASE_BY_NAME[name].fragment in line
    assert lines[-1] == (
        f"validated {len(bad) + len(broken_corpus.valid)} structures: {len(broken_corpus.valid)} ok, "
        f"{len(bad)} bad"
    )


def test_cli_validate_allow_bad_report_and_shards(
    broken_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.json"
    ids = [*broken_corpus.valid, "nan_entries", "truncated_h5"]
    write_manifest(manifest, inputs_dir=broken_corpus.root, depth=0, ids=ids)
    reports = []
    for shard in range(2):
        out = tmp_path / f"report{shard}.json"
        argv = ["validate", str(broken_corpus.root), "--manifest", str(manifest), "--shard", f"{shard}/2"]
        assert main([*argv, "--report", str(out), "--allow-bad"]) == 0
        reports.append(ValidationReport.read(out))
    merged = ValidationReport.merge(reports)
    assert merged.ok == broken_corpus.valid
    assert merged.bad == ["nan_entries", "truncated_h5"]
    capsys.readouterr()
    good = tmp_path / "good.json"
    write_manifest(good, inputs_dir=broken_corpus.root, depth=0, ids=broken_corpus.valid)
    assert main(["validate", str(broken_corpus.root), "--manifest", str(good), "--jobs", "1"]) == 0
    n = len(broken_corpus.valid)
    assert _lines(capsys.readouterr().out) == [f"validated {n} structures: {n} ok"]


def test_cli_validate_bad_arguments_are_one_line(
    broken_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hamflow: error: ") and "does not exist" in err and "Traceback" not in err
    assert main(["validate", str(broken_corpus.root), "--quantities", "X"]) == 2
    assert "'X' is not a matrix quantity" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", str(broken_corpus.root), "--shard", "2/2"])


def test_cli_discover_inputs_dir(
    broken_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["discover", "--inputs-dir", str(broken_corpus.root), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    manifest = read_manifest(out / "manifest.json")
    incomplete = ["broken_symlink", "empty_folder", "looping_symlink", "missing_info_json", "missing_poscar"]
    assert manifest.incomplete == incomplete
    assert "empty_folder" not in manifest.ids and "valid_synthetic" in manifest.ids
    stray, *warnings = _lines(captured.err)
    assert stray == (
        f"hamflow: warning: {broken_corpus.root / 'dft' / STRAY_FILE}: not a folder (a structure or "
        "data_dir_depth level must be one): ignored"
    )
    assert len(warnings) == 5 and all(
        line.startswith("hamflow: warning: skipping structure") for line in warnings
    )
    assert "a symlink that leads to no folder (broken or looping)" in warnings[0]
    assert "no info.json (a structure needs POSCAR and info.json)" in warnings[3]
    assert f"discovered {len(manifest.ids)} structures" in captured.out
    assert not (out / "dataset_split.json").exists()


def _train_toml(tmp_path: Path, inputs_dir: Path, extra: str = "") -> Path:
    path = tmp_path / "train.toml"
    path.write_text(
        f'[data]\ninputs_dir = "{inputs_dir}"\noutputs_dir = "{tmp_path / "outputs"}"\n'
        f'[data.dft]\non_bad_structure = "skip"\n'
        f'[model.advanced]\nnet_irreps = ""\n'
        f"[process.train.dataloader]\ntrain_size = 3\nvalidate_size = 1\ntest_size = 1\n{extra}"
    )
    return path


def test_cli_discover_with_toml_writes_the_split(
    broken_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _train_toml(tmp_path, broken_corpus.root)
    assert main(["discover", str(toml)]) == 0
    out = tmp_path / "outputs" / "discover"
    ids = read_manifest(out / "manifest.json").ids
    split = json.loads((out / "dataset_split.json").read_text())
    assert [len(split[p]) for p in ("train", "validate", "test")] == [3, 1, 1]
    assert set(split["train"]) <= set(ids)
    assert "split: train 3, validate 1, test 1" in capsys.readouterr().out

    user_split = tmp_path / "user_split.json"
    user_split.write_text(json.dumps({"train": ["valid_synthetic", "no_such_structure"]}))
    toml = _train_toml(tmp_path, broken_corpus.root, f'dataset_split_json = "{user_split}"\n')
    assert main(["discover", str(toml), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "key 'train': 1 structure id(s) not found" in err and "'no_such_structure'" in err


def test_cli_discover_fail_policy_stops_on_incomplete_folders(
    broken_corpus: Corpus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _train_toml(tmp_path, broken_corpus.root)
    toml.write_text(toml.read_text().replace('"skip"', '"fail"'))
    assert main(["discover", str(toml)]) == 1
    err = capsys.readouterr().err
    stray, error = _lines(err)
    assert stray.startswith("hamflow: warning: ") and STRAY_FILE in stray
    assert error.startswith("hamflow: error: structure broken_symlink:") and "(and 4 more)" in error
    assert not (tmp_path / "outputs" / "discover" / "manifest.json").exists()


def test_cli_discover_depth2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for sid in ("b/x/1", "a/y/2"):
        write_valid_structure(_mkdir(tmp_path / "in" / "dft" / sid))
    shutil.copytree(tmp_path / "in" / "dft" / "a", tmp_path / "in" / "dft" / "c")
    assert (
        main(["discover", "--inputs-dir", str(tmp_path / "in"), "--depth", "2", "--out", str(tmp_path)]) == 0
    )
    assert read_manifest(tmp_path / "manifest.json").ids == ["a/y/2", "b/x/1", "c/y/2"]
    assert main(["validate", str(tmp_path / "in"), "--manifest", str(tmp_path / "manifest.json")]) == 0
    assert _lines(capsys.readouterr().out)[-1] == "validated 3 structures: 3 ok"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
