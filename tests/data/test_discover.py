"""Discovery of structure folders, the manifest and shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hamflow.data.discover import (
    discover_structures,
    read_manifest,
    scan_dft_dir,
    shard_ids,
    structure_path,
    write_manifest,
)
from hamflow.errors import ConfigError, DataError


def _structure(folder: Path, *, poscar: bool = True, info: bool = True) -> None:
    folder.mkdir(parents=True)
    if poscar:
        (folder / "POSCAR").write_text("")
    if info:
        (folder / "info.json").write_text("{}")


def test_depth0_keeps_folders_with_poscar_and_info_sorted(tmp_path: Path) -> None:
    dft = tmp_path / "dft"
    for sid in ("b", "a", "10", "2"):
        _structure(dft / sid)
    _structure(dft / "only_poscar", info=False)
    _structure(dft / "only_info", poscar=False)
    (dft / "empty").mkdir()
    _structure(dft / ".hidden")
    (dft / "notes.txt").write_text("not a folder")
    result = scan_dft_dir(dft, 0)
    assert result.ids == ["10", "2", "a", "b"]
    assert result.incomplete == ["empty", "only_info", "only_poscar"]
    assert discover_structures(dft, 0) == result.ids


def test_depth2_ids_are_relative_paths_and_other_levels_ignored(tmp_path: Path) -> None:
    dft = tmp_path / "dft"
    _structure(dft / "t1" / "u1" / "s1")
    _structure(dft / "t1" / "u2" / "s0")
    _structure(dft / "t0" / "u1" / "s9")
    _structure(dft / "shallow")  # a structure one level too high: not at depth 2
    _structure(dft / "t0" / "u1" / "s9" / "deeper")  # too deep
    (dft / "t2").mkdir()  # an empty branch
    assert discover_structures(dft, 2) == ["t0/u1/s9", "t1/u1/s1", "t1/u2/s0"]
    assert structure_path(tmp_path, "t1/u1/s1") == dft / "t1" / "u1" / "s1"


def test_symlinked_structure_folder_is_found(tmp_path: Path) -> None:
    _structure(tmp_path / "elsewhere" / "x")
    (tmp_path / "dft").mkdir()
    (tmp_path / "dft" / "x").symlink_to(tmp_path / "elsewhere" / "x")
    assert discover_structures(tmp_path / "dft", 0) == ["x"]


def test_missing_dft_dir_and_bad_depth(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dft.*does not exist"):
        discover_structures(tmp_path / "dft", 0)
    (tmp_path / "dft").mkdir()
    with pytest.raises(ConfigError, match=r"data\.dft\.data_dir_depth.*-1"):
        discover_structures(tmp_path / "dft", -1)


def test_real_deeph_dock_folder(deeph_dock: Path) -> None:
    ids = discover_structures(deeph_dock / "h2o" / "dft", 0)
    assert ids == ["1009", "138", "1978", "282", "3563", "3573"]
    deeper = scan_dft_dir(deeph_dock / "h2o", 1)  # h2o/{dft,pred}/<x>: dft/<sid> are structures
    assert deeper.ids == ["dft/" + sid for sid in ids]
    assert deeper.incomplete == ["pred/dft"]


def test_manifest_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "manifest.json"
    write_manifest(path, inputs_dir=tmp_path, depth=2, ids=["a/b/c", "a/b/d"], incomplete=["a/b/e"])
    manifest = read_manifest(path)
    assert manifest.inputs_dir == str(tmp_path)
    assert manifest.depth == 2
    assert manifest.ids == ["a/b/c", "a/b/d"]
    assert manifest.incomplete == ["a/b/e"]
    assert manifest.dft_dir == tmp_path / "dft"
    assert json.loads(path.read_text())["num_structures"] == 2


def test_manifest_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not a readable JSON manifest"):
        read_manifest(bad)
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="not a hamflow manifest"):
        read_manifest(bad)
    write_manifest(bad, inputs_dir="x", depth=0, ids=["a"])
    document = json.loads(bad.read_text())
    document["ids"] = ["a", 3]
    bad.write_text(json.dumps(document))
    with pytest.raises(DataError, match="key 'ids'"):
        read_manifest(bad)


@pytest.mark.parametrize("count", [0, 1, 7, 10, 23])
@pytest.mark.parametrize("num_shards", [1, 3, 10])
def test_shards_are_contiguous_and_cover_every_id(count: int, num_shards: int) -> None:
    ids = [f"s{k:03d}" for k in range(count)]
    shards = [shard_ids(ids, k, num_shards) for k in range(num_shards)]
    assert [sid for shard in shards for sid in shard] == ids
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_shard_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"\[shard\] = 3 must be in 0\.\.2"):
        shard_ids(["a"], 3, 3)
    with pytest.raises(ConfigError, match="number of shards = 0"):
        shard_ids(["a"], 0, 0)
