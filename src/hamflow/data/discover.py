"""Discovery: find the structure folders under ``inputs_dir/dft`` and record them in a manifest.

A structure folder sits exactly ``depth`` levels below ``dft/`` (``data.dft.data_dir_depth``):
depth 0 is ``dft/<sid>``, depth 2 is ``dft/<t1>/<t2>/<sid>`` and the structure id is the relative
path ``"t1/t2/sid"`` (always ``/``-separated). A folder is a structure when it holds both ``POSCAR``
and ``info.json``; a folder at the structure level that lacks either (an empty one too), or a
symlink there that leads to no folder (broken or looping), is *incomplete*: it is not a structure
id, but it is reported and ``[data.dft] on_bad_structure`` decides (``fail`` names it, ``skip``
reports it) in discover, validate, graph and train alike. Any other entry that is not a folder (a
regular file where a folder should be) is a *stray*, reported as a warning. Names starting with
``.`` are skipped at every level (hidden folders, the temporary folders of atomic writes). Zero
structures is an error, with a hint when structures sit at another depth (:func:`no_structures_error`).

The walk uses ``os.scandir`` (directory type from the directory entry, no stat) and one ``stat``
per marker file of each leaf folder, so 100,000 folders take well under a second of Python work
(see ``benchmarks/discover.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from hamflow.atomic import atomic_write_text
from hamflow.errors import ConfigError, DataError

STRUCTURE_MARKERS: tuple[str, ...] = ("POSCAR", "info.json")
"""Files whose presence makes a folder a structure."""

MANIFEST_FORMAT = "hamflow-manifest-1"


@dataclass(frozen=True)
class DiscoveryResult:
    """What a walk of ``dft/`` found.

    ids:        sorted structure ids (folders holding POSCAR and info.json).
    incomplete: sorted ids of folders at the structure level missing POSCAR and/or info.json, and of
                symlinks there that lead to no folder.
    strays:     sorted relative paths of other entries that are not folders (regular files).
    """

    ids: list[str]
    incomplete: list[str]
    strays: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """The discovered structures of one inputs folder (``manifest.json``).

    inputs_dir: the inputs folder as given (its ``dft/`` holds the structures).
    depth:      ``data.dft.data_dir_depth`` used for the walk.
    ids:        sorted structure ids.
    incomplete: folders at the structure level that lack POSCAR or info.json (not structures).
    """

    inputs_dir: str
    depth: int
    ids: list[str]
    incomplete: list[str] = field(default_factory=list)

    @property
    def dft_dir(self) -> Path:
        return Path(self.inputs_dir) / "dft"


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigError("data.dft.data_dir_depth", f"= {depth!r} is not allowed: use a whole number >= 0")


def _entries(path: str) -> tuple[list[str], list[str], list[str]]:
    """Non-hidden entries of ``path``: (sub-folders incl. symlinks to folders, symlinks that lead to
    no folder (broken or looping), other non-folders)."""
    folders: list[str] = []
    dead_links: list[str] = []
    others: list[str] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    folders.append(entry.name)
                elif entry.is_symlink():
                    dead_links.append(entry.name)
                else:
                    others.append(entry.name)
    except (NotADirectoryError, PermissionError):
        return [], [], []
    return folders, dead_links, others


def _subfolders(path: str) -> list[str]:
    """Names of the non-hidden sub-folders of ``path`` (symlinks to folders included)."""
    return _entries(path)[0]


def _is_structure(folder: str) -> bool:
    """Whether ``folder`` holds every marker file (one ``stat`` each, the walk's main cost)."""
    for marker in STRUCTURE_MARKERS:
        try:
            if not S_ISREG(os.stat(f"{folder}/{marker}").st_mode):
                return False
        except (OSError, ValueError):
            return False
    return True


def _report_strays(root: str, prefix: str, names: list[str]) -> bool:
    """Whether the non-folders ``names`` in ``root/prefix`` are strays: not when that folder is itself
    a structure (the files of a structure above the structure level: the depth is wrong, and
    :func:`no_structures_error` says so)."""
    return bool(names) and not (prefix and _is_structure(os.path.join(root, prefix)))


def scan_dft_dir(dft_dir: str | Path, depth: int) -> DiscoveryResult:
    """Walk ``dft_dir`` exactly ``depth`` levels deep and sort the folders found there.

    Returns the structure ids and the incomplete folders (see the module docstring). Raises
    :class:`DataError` when ``dft_dir`` is not a folder, :class:`ConfigError` when ``depth`` is not
    a whole number >= 0.
    """
    _check_depth(depth)
    root = os.fspath(dft_dir)
    if not os.path.isdir(root):
        raise DataError("the DFT data folder does not exist (expected inputs_dir/dft/)", file=root)
    prefixes: list[str] = [""]
    strays: list[str] = []
    for _ in range(depth):
        deeper = []
        for prefix in prefixes:
            folders, dead_links, others = _entries(os.path.join(root, prefix))
            deeper += [f"{prefix}{name}/" for name in folders]
            if _report_strays(root, prefix, dead_links + others):
                strays += [prefix + name for name in dead_links + others]
        prefixes = deeper
    ids: list[str] = []
    incomplete: list[str] = []
    for prefix in prefixes:
        parent = os.path.join(root, prefix)
        folders, dead_links, others = _entries(parent)
        for name in folders:
            sid = prefix + name
            (ids if _is_structure(f"{parent}{name}") else incomplete).append(sid)
        incomplete += [prefix + name for name in dead_links]
        if _report_strays(root, prefix, others):
            strays += [prefix + name for name in others]
    return DiscoveryResult(ids=sorted(ids), incomplete=sorted(incomplete), strays=sorted(strays))


def depth_hint(dft_dir: str | Path, depth: int, *, max_depth: int = 4) -> str:
    """``"; 12 structures are at depth 1: set [data.dft] data_dir_depth = 1"`` when structures sit at
    another depth than ``depth`` (the nearest such depth up to ``max_depth``), else ``""``."""
    others = sorted((d for d in range(max_depth + 1) if d != depth), key=lambda d: (abs(d - depth), d))
    for other in others:
        found = scan_dft_dir(dft_dir, other).ids
        if found:
            return (
                f"; {len(found)} structure(s) are at depth {other} (e.g. {found[0]}): set [data.dft] "
                f"data_dir_depth = {other} (--depth {other})"
            )
    return ""


def no_structures_error(dft_dir: str | Path, depth: int, found: DiscoveryResult) -> DataError:
    """The one-line error for a walk that found no structure, with a depth hint when one applies."""
    seen = ""
    if found.incomplete:
        seen = f" ({len(found.incomplete)} incomplete folder(s) there, first {found.incomplete[0]})"
    return DataError(
        f"no structure folder (holding {' and '.join(STRUCTURE_MARKERS)}) at depth {depth}"
        + seen
        + depth_hint(dft_dir, depth),
        file=dft_dir,
    )


def stray_reason(dft_dir: str | Path, path: str) -> str:
    """The one-line warning for a non-folder where a folder belongs."""
    return str(
        DataError(
            "not a folder (a structure or data_dir_depth level must be one): ignored",
            file=Path(dft_dir) / path,
        )
    )


def discover_structures(dft_dir: str | Path, depth: int) -> list[str]:
    """Sorted structure ids under ``dft_dir`` at ``depth`` levels (``"t1/t2/sid"`` for depth 2).

    Raises :class:`DataError` if ``dft_dir`` is missing.
    """
    return scan_dft_dir(dft_dir, depth).ids


def incomplete_reason(dft_dir: str | Path, sid: str) -> str:
    """The one-line message for an incomplete folder: which marker files it lacks."""
    folder = Path(dft_dir) / sid
    if folder.is_symlink() and not folder.is_dir():
        return str(
            DataError("a symlink that leads to no folder (broken or looping)", structure=sid, file=folder)
        )
    missing = [marker for marker in STRUCTURE_MARKERS if not (folder / marker).is_file()]
    return str(
        DataError(
            f"not a structure folder: no {' and no '.join(missing)} (a structure needs "
            f"{' and '.join(STRUCTURE_MARKERS)})",
            structure=sid,
            file=folder,
        )
    )


def structure_path(inputs_dir: str | Path, sid: str) -> Path:
    """The folder of structure ``sid``: ``inputs_dir/dft/<sid>``."""
    return Path(inputs_dir) / "dft" / sid


def write_manifest(
    path: str | Path,
    *,
    inputs_dir: str | Path,
    depth: int,
    ids: Sequence[str],
    incomplete: Sequence[str] = (),
) -> None:
    """Write the manifest JSON atomically: ``{"format", "inputs_dir", "depth", "ids", "incomplete"}``."""
    document = {
        "format": MANIFEST_FORMAT,
        "inputs_dir": os.fspath(inputs_dir),
        "depth": int(depth),
        "num_structures": len(ids),
        "ids": list(ids),
        "incomplete": list(incomplete),
    }
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest written by :func:`write_manifest`; :class:`DataError` if it is not one."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("manifest not found (run `hamflow discover` first)", file=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"not a readable JSON manifest ({error})", file=path) from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise DataError(f'not a hamflow manifest (expected "format": "{MANIFEST_FORMAT}")', file=path)
    inputs_dir, depth = document.get("inputs_dir"), document.get("depth")
    ids, incomplete = document.get("ids"), document.get("incomplete", [])
    if not isinstance(inputs_dir, str):
        raise DataError("must be a string", file=path, key="inputs_dir")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise DataError(f"= {depth!r} must be a whole number >= 0", file=path, key="depth")
    for key, value in (("ids", ids), ("incomplete", incomplete)):
        if not isinstance(value, list) or not all(isinstance(sid, str) for sid in value):
            raise DataError("must be a list of structure id strings", file=path, key=key)
    return Manifest(inputs_dir=inputs_dir, depth=depth, ids=list(ids), incomplete=list(incomplete))


def shard_ids(ids: Sequence[str], shard: int, num_shards: int) -> list[str]:
    """The ``shard``-th (0-based) of ``num_shards`` contiguous slices of ``ids``.

    Deterministic; the shards cover every id exactly once, the first ``len(ids) % num_shards``
    shards hold one id more than the others (a shard may be empty when shards outnumber ids).
    Raises :class:`ConfigError` unless ``0 <= shard < num_shards``.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError("shard", f"number of shards = {num_shards!r} must be a whole number >= 1")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ConfigError("shard", f"= {shard!r} must be in 0..{num_shards - 1} (0-based)")
    base, extra = divmod(len(ids), num_shards)
    start = shard * base + min(shard, extra)
    stop = start + base + (1 if shard < extra else 0)
    return list(ids[start:stop])
