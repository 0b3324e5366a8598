"""The run directory of ``hamflow train`` (DeepH-pack's layout): its name, creation and metrics file.

:func:`new_run_dir` names a fresh ``<outputs_dir>/<%Y-%m-%d_%H-%M-%S>`` folder (``hamflow infer``
names its runs the same way); :func:`make_run_dir` creates it and takes the one-trainer lock;
:func:`write_metrics` / :func:`read_metrics` are ``metrics.csv``, one row per epoch.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from pathlib import Path

from hamflow.atomic import atomic_write_text
from hamflow.errors import FileSystemError, os_errors
from hamflow.train import checkpoint as ckpt

#: The columns of ``metrics.csv`` (the machine-readable twin of the epoch lines of ``deepx.log``).
METRICS_COLUMNS = (
    "epoch",
    "step",
    "wall_time_s",
    "train_loss",
    "validate_loss",
    "validate_mae",
    "learning_rate",
    "lr_scale",
)


def new_run_dir(outputs_dir: str | Path) -> Path:
    """``outputs_dir/<%Y-%m-%d_%H-%M-%S>`` (DeepH-pack's naming), made unique if it exists."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(outputs_dir) / stamp
    suffix = 1
    while path.exists():
        path = Path(outputs_dir) / f"{stamp}_{suffix}"
        suffix += 1
    return path


def make_run_dir(layout: ckpt.RunLayout) -> ckpt.RunLock:
    """Create the run folder (one-line errors for a file in the way, no permission, a full disk) and
    take its lock; :class:`~hamflow.train.checkpoint.RunFolderLocked` when another trainer holds it."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise FileSystemError("create the run folder", root, "a file of that name is in the way")
    with os_errors("create the run folder", root):
        root.mkdir(parents=True, exist_ok=True)
    lock = ckpt.RunLock.acquire(root)
    try:
        with os_errors("create the model folder", layout.model):
            layout.model.mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write ``metrics.csv`` (all rows, atomically); only process 0 of a multi-process run writes."""
    import jax

    if jax.process_index() != 0:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.csv`` ([] when there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
