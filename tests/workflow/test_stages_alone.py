"""One stage at a time: --until graph prepares the data without training; a changed graph setting
rebuilds the graph stores and leaves discovery and parsing alone."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from workflow_harness import Workflow

pytestmark = pytest.mark.slow


def test_until_graph_then_a_graph_setting_change_rebuilds_only_the_graphs(
    new_workflow: Callable[[], Workflow],
) -> None:
    workflow = new_workflow()
    ran = workflow.ran(workflow.snakemake("--until", "graph"))
    assert ran == Counter({"discover": 1, "parse": 3, "graph_shard": 3, "graph": 1})
    assert not (workflow.root / "results" / "runs").exists(), "--until graph must not train"

    data = workflow.root / "results" / "data" / "A"
    upstream = [data / "manifest.json", data / "dataset_split.json", *sorted((data / "parse").glob("*.json"))]
    upstream_mtimes = [path.stat().st_mtime_ns for path in upstream]
    store_mtime = (data / "graph.h5").stat().st_mtime_ns

    workflow.write_config({"train_overrides": {"data.graph.common_orbital_types": "s3p2d1"}}, "change.yaml")
    ran = workflow.ran(workflow.snakemake("--configfile", "test.yaml", "change.yaml", "--until", "graph"))
    assert ran == Counter({"graph_shard": 3, "graph": 1})
    assert [path.stat().st_mtime_ns for path in upstream] == upstream_mtimes
    assert (data / "graph.h5").stat().st_mtime_ns > store_mtime
