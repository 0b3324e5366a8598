"""Shape buckets: every structure lands in exactly one bucket whose shape holds its batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hamflow.graph.buckets import assign_to_plan, epoch_batches, padding_waste, plan_buckets


def _sizes(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    edges = rng.integers(9, 400, size=n)
    nodes = np.ceil(np.sqrt(edges)).astype(int) + 1
    return nodes, edges


@pytest.mark.parametrize("buckets", [1, 2, 4, 10])
def test_every_structure_in_one_bucket_that_fits(buckets: int) -> None:
    nodes, edges = _sizes()
    plan = plan_buckets(nodes, edges, batch_size=3, max_buckets=buckets)
    assert len(plan.shapes) <= buckets
    members = np.concatenate(plan.groups)
    assert sorted(members.tolist()) == list(range(len(edges)))
    for group, shape in zip(plan.groups, plan.shapes, strict=True):
        assert shape.num_edges >= 3 * edges[group].max()
        assert shape.num_nodes >= 3 * nodes[group].max()
        assert shape.num_graphs == 3


def test_more_buckets_never_waste_more() -> None:
    nodes, edges = _sizes()
    wastes = [
        padding_waste(plan_buckets(nodes, edges, batch_size=2, max_buckets=k), edges) for k in (1, 2, 4, 8)
    ]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(wastes))
    assert wastes[-1] < wastes[0]


def test_dp_partition_is_optimal_on_a_small_case() -> None:
    # brute force over all cut positions of the sorted sizes into 2 groups
    edges = np.array([10, 11, 12, 50, 51, 90, 200, 210])
    nodes = np.ones_like(edges)
    plan = plan_buckets(nodes, edges, batch_size=1, max_buckets=2)

    def cost(groups: list[np.ndarray]) -> int:
        return int(sum(len(g) * g.max() - g.sum() for g in groups))

    best = min(cost([edges[:c], edges[c:]]) for c in range(1, len(edges)))
    assert cost([edges[g] for g in plan.groups]) == best


def test_epoch_batches_deterministic_and_complete() -> None:
    nodes, edges = _sizes(50)
    plan = plan_buckets(nodes, edges, batch_size=4, max_buckets=3)
    first = epoch_batches(plan, seed=7, epoch=2, shuffle=True)
    again = epoch_batches(plan, seed=7, epoch=2, shuffle=True)
    other = epoch_batches(plan, seed=7, epoch=3, shuffle=True)
    assert [(b, m.tolist()) for b, m in first] == [(b, m.tolist()) for b, m in again]
    assert [(b, m.tolist()) for b, m in first] != [(b, m.tolist()) for b, m in other]
    assert sorted(np.concatenate([m for _, m in first]).tolist()) == list(range(50))
    assert all(len(m) <= 4 for _, m in first)


def test_multi_device_shares() -> None:
    nodes, edges = _sizes(40)
    plan = plan_buckets(nodes, edges, batch_size=4, max_buckets=2, num_devices=2)
    assert all(shape.num_graphs == 2 for shape in plan.shapes)
    for group, shape in zip(plan.groups, plan.shapes, strict=True):
        assert shape.num_edges >= 2 * edges[group].max()


def test_validation_reuses_train_shapes_and_adds_one_for_larger() -> None:
    nodes, edges = _sizes(100)
    plan = plan_buckets(nodes, edges, batch_size=2, max_buckets=3)
    v_edges = np.array([edges.min(), edges.max(), edges.max() + 500])
    v_nodes = np.array([nodes.min(), nodes.max(), nodes.max() + 5])
    val = assign_to_plan(plan, v_nodes, v_edges)
    assert sorted(np.concatenate(val.groups).tolist()) == [0, 1, 2]
    assert set(plan.shapes) <= set(val.shapes) | set(plan.shapes)
    big = next(s for g, s in zip(val.groups, val.shapes, strict=True) if 2 in g.tolist())
    assert big.num_edges >= 2 * (edges.max() + 500)
