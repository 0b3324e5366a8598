"""Checkpoints in DeepH-pack's run-directory layout, written atomically and verified on load.

    <run>/model/params/best/            params.msgpack + meta.json (lowest monitored loss)
    <run>/model/params/latest/epoch_N/  params.msgpack + meta.json (every latest_interval epochs)
    <run>/model/states/epoch_N/         state.msgpack + meta.json (optimizer, schedule, step, ...)

Each folder is written under a temporary name and renamed into place (``hamflow.atomic.atomic_dir``);
``meta.json`` records the SHA-256 of the payload, checked before a checkpoint is trusted. A job
killed mid-write leaves only a ``.epoch_N.*.tmp`` folder, which loading ignores and the next save
removes: a rerun never resumes from a torn checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from hamflow.atomic import atomic_dir
from hamflow.errors import DataError, HamflowError, os_errors

LOG = logging.getLogger(__name__)
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint folder found on disk and its metadata (epoch, step, ...)."""

    path: Path
    epoch: int
    meta: dict


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_payload(target: Path, name: str, tree: Any, meta: dict) -> None:
    """Serialise ``tree`` (flax msgpack) into ``target/name`` with ``meta.json``, atomically."""
    data = serialization.to_bytes(tree)
    with os_errors("write the checkpoint", target), atomic_dir(target) as tmp:
        (tmp / name).write_bytes(data)
        full_meta = {**meta, "payload": name, "sha256": _digest(data), "bytes": len(data)}
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=1, sort_keys=True))


def read_meta(folder: Path) -> dict | None:
    """The verified meta of a checkpoint folder, or None if it is incomplete or corrupt."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        data = (folder / meta["payload"]).read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(data) != meta.get("bytes") or _digest(data) != meta.get("sha256"):
        return None
    return meta


def read_payload(
    folder: Path,
    template: Any,
    upgrade: Callable[[Any, Any], Any] | None = None,
    *,
    check_shapes: bool = True,
) -> Any:
    """Deserialise a verified checkpoint folder into the structure of ``template``.

    upgrade(saved, fresh): maps the saved state dict (flax's nested dicts) onto the layout of
    ``template``'s (``fresh``) before the restore, for payloads written by an earlier version.
    check_shapes: every array must have the template's shape (DataError otherwise); off for training
    states, whose partial-epoch loss record varies in length (their parameters, read with the check,
    carry the architecture test).
    """
    meta = read_meta(folder)
    if meta is None:
        raise DataError("checkpoint is incomplete or corrupt (hash mismatch)", file=folder)
    data = (folder / meta["payload"]).read_bytes()
    try:
        saved = serialization.msgpack_restore(data)
        if upgrade is not None:
            saved = upgrade(saved, serialization.to_state_dict(template))
        restored = serialization.from_state_dict(template, saved)
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"checkpoint does not match this model/optimizer: {error}", file=folder) from None
    if check_shapes:
        _check_same_shapes(template, restored, folder)
    return restored


def _check_same_shapes(template: Any, restored: Any, folder: Path) -> None:
    """DataError when a restored array's shape is not the template's (from_state_dict does not check:
    a checkpoint of another architecture with the same parameter names would load silently)."""
    paths = jax.tree_util.tree_flatten_with_path(template)[0]
    for (path, expected), got in zip(paths, jax.tree_util.tree_leaves(restored), strict=True):
        want, have = np.shape(expected), np.shape(got)
        if want != have:
            name = jax.tree_util.keystr(path)
            raise DataError(
                f"checkpoint does not match this model/optimizer: {name} has shape {have}, the model "
                f"{want} (written by another architecture or setting, e.g. model.advanced.spin_orbit)",
                file=folder,
            )


def list_epochs(parent: Path) -> list[CheckpointInfo]:
    """Valid ``epoch_N`` folders under ``parent``, ascending by N (torn or corrupt ones skipped)."""
    found = []
    if not parent.is_dir():
        return found
    for child in parent.iterdir():
        match = _EPOCH_DIR.match(child.name)
        if not match or not child.is_dir():
            continue
        meta = read_meta(child)
        if meta is None:
            LOG.warning("ignoring incomplete checkpoint %s", child)
            continue
        found.append(CheckpointInfo(child, int(match.group(1)), meta))
    return sorted(found, key=lambda info: info.epoch)


def remove_stale_temporaries(parent: Path) -> None:
    """Delete temporary folders left by a killed write (names starting with '.' and ending '.tmp')."""
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if child.name.startswith(".") and (child.name.endswith(".tmp") or ".old-" in child.name):
            shutil.rmtree(child, ignore_errors=True)


@dataclass(frozen=True)
class RunLayout:
    """Paths of a run directory (DeepH-pack's layout)."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def best(self) -> Path:
        return self.model / "params" / "best"

    @property
    def latest(self) -> Path:
        return self.model / "params" / "latest"

    @property
    def states(self) -> Path:
        return self.model / "states"

    @property
    def log(self) -> Path:
        return self.root / "deepx.log"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def test_metrics(self) -> Path:
        """One row per test structure of the final test pass (``hamflow.train.test_pass``)."""
        return self.root / "test_metrics.csv"

    @property
    def split(self) -> Path:
        return self.root / "dataset_split.json"

    @property
    def train_toml(self) -> Path:
        return self.model / "train.toml"

    @property
    def model_json(self) -> Path:
        return self.model / "model.json"

    @property
    def normaliser(self) -> Path:
        return self.model / "normaliser.npz"

    @property
    def done(self) -> Path:
        return self.root / "TRAINING_DONE"


def mid_step_save_due(interval: int, step: int, batches_done: int, num_batches: int) -> bool:
    """Whether ``data.model_save.latest_cache_mid_step_interval`` asks for a resumable checkpoint now.

    interval: the key (<= 0: never); step: optimizer steps done so far (whole run, 1-based after the
    first step); batches_done / num_batches: position inside the current epoch. Due every ``interval``
    steps, except after an epoch's last batch, where the end-of-epoch logic takes over. The checkpoint
    is the one SIGTERM writes (``latest/epoch_N`` + ``states/epoch_N`` with the position inside epoch
    N + 1), so a run killed later resumes at that step on the uninterrupted loss curve.
    """
    return interval > 0 and step % interval == 0 and batches_done < num_batches


def save_latest(
    layout: RunLayout, epoch: int, params: Any, state_tree: Any, meta: dict, *, keep: int
) -> None:
    """Save params and full training state for ``epoch``; keep only the newest ``keep`` of each.

    The state is written first: a ``latest/epoch_N`` folder is only ever trusted together with its
    ``states/epoch_N``.
    """
    for parent in (layout.latest, layout.states):
        remove_stale_temporaries(parent)
    write_payload(layout.states / f"epoch_{epoch}", "state.msgpack", state_tree, meta)
    write_payload(layout.latest / f"epoch_{epoch}", "params.msgpack", params, meta)
    for parent in (layout.latest, layout.states):
        infos = list_epochs(parent)
        for old in infos[: max(len(infos) - keep, 0)]:
            shutil.rmtree(old.path, ignore_errors=True)


def save_best(layout: RunLayout, params: Any, meta: dict) -> None:
    """Replace the best-model folder atomically."""
    remove_stale_temporaries(layout.best.parent)
    write_payload(layout.best, "params.msgpack", params, meta)


def newest_resumable(layout: RunLayout, epoch: int = -1) -> CheckpointInfo | None:
    """The newest (or the given) epoch that has both a valid params and a valid state folder."""
    states = {info.epoch: info for info in list_epochs(layout.states)}
    candidates = [info for info in list_epochs(layout.latest) if info.epoch in states]
    if epoch >= 0:
        candidates = [info for info in candidates if info.epoch == epoch]
    return candidates[-1] if candidates else None


# --------------------------------------------------------------------------------------- the lock

LOCK_FILE = ".hamflow-train.lock"
"""The run folder's lock file: ``flock``-ed by the trainer while it runs; holds its PID and host."""


class RunFolderLocked(HamflowError):
    """Another trainer holds the run folder's lock."""

    exit_code = 1


class RunLock:
    """An exclusive ``flock`` on ``<run>/.hamflow-train.lock``, released by :meth:`release` or when the
    process ends (however it ends: the kernel drops the lock with the last descriptor)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, root: Path) -> RunLock:
        """Take the lock of run folder ``root`` without waiting; :class:`RunFolderLocked` naming the
        holder's PID and host when another process holds it."""
        path = Path(root) / LOCK_FILE
        with os_errors("create the lock file", path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderLocked(
                f"run folder {root} is in use by another `hamflow train` ({holder}); wait for it to end, "
                "or give another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        """Drop the lock (the file stays; its content names the last holder)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    """``PID 123 on host node7`` from a lock file's content (``holder unknown`` if unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        document = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"PID {int(document['pid'])} on host {document['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
