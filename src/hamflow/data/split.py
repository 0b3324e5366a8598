"""The dataset split: which structure ids train, validate and test (``dataset_split.json``).

The file is DeepH-pack's: ``{"train": [...], "validate": [...], "test": [...]}`` with structure ids
as strings. Either it is drawn from the sizes ``process.train.dataloader.{train,validate,test}_size``
and ``system.random_seed`` (:func:`make_split`), or the user gives one (``dataset_split_json``,
checked by :func:`load_split`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hamflow.atomic import atomic_write_text
from hamflow.errors import ConfigError, DataError

SPLIT_PARTS: tuple[str, ...] = ("train", "validate", "test")
_SIZE_KEY = "process.train.dataloader.{part}_size"
_SHOW_MISSING = 5


def make_split(
    ids: Sequence[str], *, train_size: int, validate_size: int, test_size: int, seed: int
) -> dict[str, list[str]]:
    """Draw disjoint train / validate / test parts of the given sizes from ``ids``.

    The ids are sorted, permuted with ``numpy.random.default_rng(seed)`` and cut in that order
    (train first); each part is returned sorted. The same ids, sizes and seed always give the same
    split. Ids left over when the sizes sum to less than ``len(ids)`` are in no part. Raises
    :class:`ConfigError` (naming ``process.train.dataloader.*_size``) for a negative or non-integer
    size or sizes summing to more than ``len(ids)``.
    """
    sizes = {"train": train_size, "validate": validate_size, "test": test_size}
    for part, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ConfigError(_SIZE_KEY.format(part=part), f"= {size!r} must be a whole number >= 0")
    ordered = sorted(set(ids))
    if len(ordered) != len(ids):
        raise DataError(f"the structure ids contain {len(ids) - len(ordered)} duplicate(s)")
    total = sum(int(size) for size in sizes.values())
    if total > len(ordered):
        raise ConfigError(
            "process.train.dataloader.train_size/validate_size/test_size",
            f"= {train_size} + {validate_size} + {test_size} = {total} exceeds the {len(ordered)} "
            "structures found: lower the sizes so that they sum to at most the number of structures",
        )
    order = np.random.default_rng(seed).permutation(len(ordered))
    split: dict[str, list[str]] = {}
    start = 0
    for part in SPLIT_PARTS:
        stop = start + int(sizes[part])
        split[part] = sorted(ordered[k] for k in order[start:stop])
        start = stop
    return split


def _as_id(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _describe_missing(missing: list[str]) -> str:
    shown = ", ".join(repr(sid) for sid in missing[:_SHOW_MISSING])
    more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
    return f"{shown}{more}"


def check_split(
    split: Mapping[str, Sequence[object]], ids: Sequence[str], *, source: str | Path | None = None
) -> dict[str, list[str]]:
    """Check a split against the discovered ``ids`` and return it with string ids.

    Every part must be a list of ids (strings, or integers for numeric folder names), every id must
    be one of ``ids`` and no id may appear twice. Parts other than ``train``, ``validate`` and ``test``
    are refused; a missing ``validate`` or ``test`` part is empty. Raises :class:`DataError` naming
    the file, the part and the first offending ids.
    """
    if not isinstance(split, Mapping):
        raise DataError(
            'must be a JSON object {"train": [...], "validate": [...], "test": [...]}', file=source
        )
    unknown = sorted(set(split) - set(SPLIT_PARTS))
    if unknown:
        raise DataError(
            f"unknown part(s) {', '.join(map(repr, unknown))}: allowed are train, validate, test",
            file=source,
        )
    if "train" not in split:
        raise DataError('the "train" part is missing', file=source, key="train")
    known = set(ids)
    seen: dict[str, str] = {}
    result: dict[str, list[str]] = {}
    for part in SPLIT_PARTS:
        values = split.get(part, [])
        if not isinstance(values, list | tuple):
            raise DataError("must be a list of structure ids", file=source, key=part)
        part_ids: list[str] = []
        for value in values:
            sid = _as_id(value)
            if sid is None:
                raise DataError(f"{value!r} is not a structure id (use strings)", file=source, key=part)
            if sid in seen:
                where = "twice in this part" if seen[sid] == part else f"also in {seen[sid]!r}"
                raise DataError(f"structure id {sid!r} appears {where}", file=source, key=part)
            seen[sid] = part
            part_ids.append(sid)
        missing = [sid for sid in part_ids if sid not in known]
        if missing:
            raise DataError(
                f"{len(missing)} structure id(s) not found among the {len(known)} discovered "
                f"structures: {_describe_missing(missing)}",
                file=source,
                key=part,
            )
        result[part] = part_ids
    return result


def load_split(path: str | Path, ids: Sequence[str]) -> dict[str, list[str]]:
    """Read the user's ``dataset_split_json`` and check it against the discovered ``ids``.

    Raises :class:`DataError` when the file is missing or not JSON, an id does not exist (naming the
    first missing ids) or an id is in two parts; see :func:`check_split`.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            "dataset split file not found (process.train.dataloader.dataset_split_json)", file=path
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"not a readable JSON file ({error})", file=path) from None
    return check_split(document, ids, source=path)


def write_split(path: str | Path, split: Mapping[str, Sequence[str]]) -> None:
    """Write ``{"train": [...], "validate": [...], "test": [...]}`` atomically (JSON, indented)."""
    document = {part: list(split.get(part, [])) for part in SPLIT_PARTS}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
