"""The training's final test pass: per test structure, DeepH-pack's ``test-step`` lines in deepx.log.

After the last epoch, ``hamflow train`` evaluates every structure of the split's ``test`` part on its
own (one structure per step, with the best model when one was saved, else the final parameters) and
logs two lines per structure, in the form DeepH-dock's training-log readers
(``deepx_dock.analyze.error.with_train_log``, ``dock analyze error structure-logfile`` and
``element-logfile``) parse::

    ... [INFO] test-step | Step 3 | Structure ID(s): ['h2o/0007']
    ... [INFO] test-step | Step 3 | Curr-Loss 1.234567e-03 | loss (mse, normalised) 4.2e-02 | entries 529

``Curr-Loss`` is the structure's mean absolute error over its masked entries, in target units (eV for
H): DeepH-dock scales it by 1000 and labels it "MAE (meV)". ``Step`` counts the structures of the pass
from 1. ``test_metrics.csv`` in the run folder is the machine-readable twin (one row per structure).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from hamflow.atomic import atomic_write_text
from hamflow.graph.batch import GraphBatch
from hamflow.graph.buckets import BucketPlan, assign_to_plan
from hamflow.train.checkpoint import RunLayout

if TYPE_CHECKING:
    from hamflow.graph.store import GraphStore

LOG = logging.getLogger(__name__)

TEST_METRICS_COLUMNS = ("step", "structure_id", "mae", "loss", "entries")
TEST_TAG = "test-step"


@dataclass(frozen=True)
class StructureResult:
    """One structure's test result. step: 1-based position in the pass; mae: mean |pred - label| over
    its masked entries (target units, eV for H); loss: the configured loss on normalised residuals;
    entries: number of masked entries."""

    step: int
    sid: str
    mae: float
    loss: float
    entries: int


def step_lines(result: StructureResult, loss_type: str) -> tuple[str, str]:
    """The two deepx.log lines of one test structure (without the logger's time/level prefix)."""
    ids = repr([result.sid])
    head = f"{TEST_TAG} | Step {result.step} | Structure ID(s): {ids}"
    loss = (
        f"{TEST_TAG} | Step {result.step} | Curr-Loss {result.mae:.9e} | loss ({loss_type}, normalised) "
        f"{result.loss:.9e} | entries {result.entries}"
    )
    return head, loss


def evaluate_structures(
    eval_fn: Callable[[Any, GraphBatch], Any],
    params: Any,
    store: GraphStore,
    indices: Sequence[int],
    plan: BucketPlan,
    stop: Callable[[], bool] | None = None,
    programs: dict | None = None,
) -> list[StructureResult] | None:
    """Evaluate each structure ``store.get(i)`` for i in ``indices`` alone, in that order; None as
    soon as ``stop()`` holds (checked before each structure: a signal arrived).

    eval_fn(params, stacked_batch) -> StepMetrics (``make_steps``' eval step, jitted). Each structure is
    padded to the shape of the training ``plan``'s bucket it fits (one compile per bucket used), with a
    device axis of 1. programs: compiled eval steps by bucket shape (the run's ahead-of-time
    programs), used instead of ``eval_fn`` for the shapes they cover.
    """
    from hamflow.graph.collate import collate

    nodes = np.asarray(store.num_nodes)[np.asarray(indices, dtype=np.int64)]
    edges = np.asarray(store.num_edges)[np.asarray(indices, dtype=np.int64)]
    placed = assign_to_plan(plan, nodes, edges)
    bucket_of = {int(m): b for b, group in enumerate(placed.groups) for m in group}
    results = []
    for position, index in enumerate(indices):
        if stop is not None and stop():
            return None
        shape = placed.shapes[bucket_of[position]]
        graph = store.get(int(index))
        batch = collate(
            [graph], num_nodes=shape.num_nodes, num_edges=shape.num_edges, num_graphs=shape.num_graphs
        )
        stacked = GraphBatch(*(np.asarray(field)[None] for field in batch))
        step = (programs or {}).get(shape, eval_fn)
        loss, abs_err, entries, _ = jax.device_get(step(params, stacked))
        count = int(entries)
        results.append(
            StructureResult(
                step=position + 1,
                sid=str(graph.sid),
                mae=float(abs_err) / max(count, 1),
                loss=float(loss),
                entries=count,
            )
        )
    return results


def write_test_metrics(path: Any, results: Sequence[StructureResult]) -> None:
    """``test_metrics.csv``: one row per structure (columns TEST_METRICS_COLUMNS), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TEST_METRICS_COLUMNS)
    for r in results:
        writer.writerow([r.step, r.sid, f"{r.mae:.9e}", f"{r.loss:.9e}", r.entries])
    atomic_write_text(path, buffer.getvalue())


def read_test_metrics(path: Any) -> list[StructureResult]:
    """The rows of a ``test_metrics.csv`` written by :func:`write_test_metrics`."""
    with open(path, newline="") as handle:
        return [
            StructureResult(
                int(row["step"]),
                row["structure_id"],
                float(row["mae"]),
                float(row["loss"]),
                int(row["entries"]),
            )
            for row in csv.DictReader(handle)
        ]


def final_test_pass(
    layout: RunLayout,
    eval_fn: Callable[[Any, GraphBatch], Any],
    params: Any,
    store: GraphStore,
    indices: Sequence[int],
    plan: BucketPlan,
    *,
    loss_type: str,
    stop: Callable[[], bool] | None = None,
    programs: dict | None = None,
) -> list[StructureResult] | None:
    """Evaluate the test structures (best model if saved, else ``params``), log their ``test-step``
    lines and write ``test_metrics.csv``. Nothing when the test part is empty, or with several
    processes (a multi-node run: use ``hamflow test`` afterwards). None, and nothing written, when
    ``stop()`` holds before a structure (a signal: a rerun does the whole pass). programs: as in
    :func:`evaluate_structures`."""
    if not len(indices):
        return []
    if jax.process_count() > 1:
        LOG.info("test pass skipped in a multi-process run: run `hamflow test` on the run folder")
        return []
    from hamflow.train.checkpoint import read_meta
    from hamflow.train.saved_model import find_params, load_params

    which = "final parameters"
    if read_meta(layout.best) is not None:
        params = load_params(find_params(layout, "best"), jax.device_get(params))
        which = "best model"
    results = evaluate_structures(eval_fn, params, store, indices, plan, stop, programs)
    if results is None:
        LOG.info("test pass interrupted: nothing written; a rerun of the same command does it")
        return None
    LOG.info("test pass: %d structure(s), %s", len(results), which)
    for result in results:
        for line in step_lines(result, loss_type):
            LOG.info("%s", line)
    mean = float(np.mean([r.mae for r in results]))
    LOG.info("test pass: mean of the structures' MAE %.6g (target units; eV for H)", mean)
    write_test_metrics(layout.test_metrics, results)
    return results
