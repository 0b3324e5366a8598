"""The dataset split: drawn from sizes and a seed, or the user's dataset_split_json checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hamflow.data.split import check_split, load_split, make_split, write_split
from hamflow.errors import ConfigError, DataError

IDS = [f"{k}" for k in range(20)]


def test_sizes_disjoint_and_deterministic_in_seed() -> None:
    split = make_split(IDS, train_size=12, validate_size=5, test_size=3, seed=7)
    assert [len(split[p]) for p in ("train", "validate", "test")] == [12, 5, 3]
    assert sorted(split["train"] + split["validate"] + split["test"]) == sorted(IDS)
    assert split == make_split(list(reversed(IDS)), train_size=12, validate_size=5, test_size=3, seed=7)
    other = make_split(IDS, train_size=12, validate_size=5, test_size=3, seed=8)
    assert other != split
    assert all(part == sorted(part) for part in split.values())


def test_leftover_ids_are_in_no_part() -> None:
    split = make_split(IDS, train_size=3, validate_size=0, test_size=1, seed=0)
    assert (len(split["train"]), split["validate"], len(split["test"])) == (3, [], 1)


def test_sizes_exceeding_ids_name_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"process\.train\.dataloader\.train_size.*= 15 \+ 5 \+ 1 = 21"):
        make_split(IDS, train_size=15, validate_size=5, test_size=1, seed=0)
    with pytest.raises(ConfigError, match=r"\[process\.train\.dataloader\.test_size\] = -1"):
        make_split(IDS, train_size=1, validate_size=0, test_size=-1, seed=0)


def test_load_split_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["1", "3", 5], "validate": ["2"]}))
    assert load_split(path, IDS) == {"train": ["1", "3", "5"], "validate": ["2"], "test": []}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"train": ["1", "x1", "x2"]}, r"key 'train': 2 structure id\(s\) not found .*'x1', 'x2'"),
        ({"train": ["1"], "test": ["2", "1"]}, r"key 'test': structure id '1' appears also in 'train'"),
        ({"train": ["1", "1"]}, r"key 'train': structure id '1' appears twice in this part"),
        ({"train": ["1"], "valid": ["2"]}, r"unknown part\(s\) 'valid'"),
        ({"validate": ["1"]}, r"key 'train': the \"train\" part is missing"),
        ({"train": "1"}, r"key 'train': must be a list"),
        ({"train": [1.5]}, r"key 'train': 1\.5 is not a structure id"),
        (["1"], "must be a JSON object"),
    ],
)
def test_load_split_errors(tmp_path: Path, document: object, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=message) as error:
        load_split(path, IDS)
    assert str(path) in str(error.value)


def test_missing_ids_message_is_shortened() -> None:
    with pytest.raises(DataError, match=r"7 structure id\(s\).*'x4' and 2 more$"):
        check_split({"train": [f"x{k}" for k in range(7)]}, IDS)


def test_unreadable_split_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset split file not found"):
        load_split(tmp_path / "none.json", IDS)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not a readable JSON file"):
        load_split(tmp_path / "broken.json", IDS)


def test_write_split_round_trip(tmp_path: Path) -> None:
    split = make_split(IDS, train_size=10, validate_size=4, test_size=6, seed=3)
    path = tmp_path / "run" / "dataset_split.json"
    write_split(path, split)
    assert list(json.loads(path.read_text())) == ["train", "validate", "test"]
    assert load_split(path, IDS) == split
