"""Shape buckets: group structures by size so every batch pads to one of a few compiled shapes.

XLA compiles one program per input shape (10-30 s each on a CPU), so batches are padded to at most
``multi_way_jit_num`` shapes. Structures are sorted by edge count and cut into contiguous groups by
a dynamic programme that minimises the total padded edge slots; a batch draws its structures from
one group only and is padded to that group's largest structure times the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: sizes are rounded up to a multiple of this (friendlier memory layout, fewer distinct shapes)
ROUND_TO = 8
#: the DP runs on at most this many distinct edge counts (quantile bins beyond)
MAX_DP_BINS = 512


@dataclass(frozen=True)
class BucketShape:
    """Padded sizes of one device's share of a batch: nodes N, edges E, graphs G."""

    num_nodes: int
    num_edges: int
    num_graphs: int


@dataclass(frozen=True)
class BucketPlan:
    """Structures (indices into the caller's list) per bucket, and each bucket's padded shape.

    groups: one int array per bucket; shapes: the per-device shape of a batch from that bucket;
    max_nodes / max_edges: the largest structure of each bucket.
    """

    groups: tuple[np.ndarray, ...]
    shapes: tuple[BucketShape, ...]
    max_nodes: tuple[int, ...]
    max_edges: tuple[int, ...]
    batch_size: int
    num_devices: int


def _round_up(value: int, multiple: int = ROUND_TO) -> int:
    return int(math.ceil(max(value, 1) / multiple) * multiple)


def _partition_sorted(values: np.ndarray, max_groups: int) -> list[int]:
    """End positions (exclusive) of <= max_groups contiguous groups of the sorted ``values`` that
    minimise sum over groups of (count * group max - group sum)."""
    n = len(values)
    if n == 0:
        return []
    uniq, counts = np.unique(values, return_counts=True)
    if len(uniq) > MAX_DP_BINS:
        # merge into quantile bins; each bin is represented by its largest value (safe for padding)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, MAX_DP_BINS + 1)[1:], method="higher"))
        bin_of = np.searchsorted(edges, values, side="left")
        uniq = edges
        counts = np.bincount(bin_of, minlength=len(edges))
        keep = counts > 0
        uniq, counts = uniq[keep], counts[keep]
    m = len(uniq)
    k_max = min(max_groups, m)
    cum_c = np.concatenate([[0], np.cumsum(counts)])
    cum_s = np.concatenate([[0], np.cumsum(counts * uniq.astype(np.float64))])

    # cost of one group holding unique values i..j: count * value_j - sum
    best = np.full((k_max + 1, m), np.inf)
    back = np.zeros((k_max + 1, m), dtype=np.int64)
    best[1] = cum_c[1:] * uniq.astype(np.float64) - cum_s[1:]
    for k in range(2, k_max + 1):
        for j in range(k - 1, m):
            starts = np.arange(k - 1, j + 1)
            group_cost = (cum_c[j + 1] - cum_c[starts]) * float(uniq[j]) - (cum_s[j + 1] - cum_s[starts])
            candidates = best[k - 1, starts - 1] + group_cost
            pick = int(np.argmin(candidates))
            best[k, j] = candidates[pick]
            back[k, j] = starts[pick]
    k_best = int(np.argmin(best[1:, m - 1])) + 1
    cuts_unique = []
    j, k = m - 1, k_best
    while k >= 1:
        cuts_unique.append(j)
        i = back[k, j] if k > 1 else 0
        j, k = i - 1, k - 1
    cuts_unique.reverse()
    sorted_values = np.sort(values)
    return [int(np.searchsorted(sorted_values, uniq[c], side="right")) for c in cuts_unique]


def plan_buckets(
    num_nodes: np.ndarray,
    num_edges: np.ndarray,
    *,
    batch_size: int,
    max_buckets: int,
    num_devices: int = 1,
) -> BucketPlan:
    """Split structures into at most ``max_buckets`` size groups with the least padding.

    num_nodes, num_edges: (S,) per structure. A batch of ``batch_size`` structures is split over
    ``num_devices`` devices, so each device's share holds ceil(batch_size / num_devices) graphs.
    """
    num_nodes = np.asarray(num_nodes, dtype=np.int64)
    num_edges = np.asarray(num_edges, dtype=np.int64)
    order = np.argsort(num_edges, kind="stable")
    ends = _partition_sorted(num_edges[order], max_buckets)
    graphs_per_device = int(math.ceil(batch_size / num_devices))
    groups, shapes, max_nodes, max_edges = [], [], [], []
    start = 0
    for end in ends:
        members = np.sort(order[start:end])
        start = end
        if len(members) == 0:
            continue
        mn, me = int(num_nodes[members].max()), int(num_edges[members].max())
        groups.append(members)
        max_nodes.append(mn)
        max_edges.append(me)
        shapes.append(
            BucketShape(
                num_nodes=_round_up(graphs_per_device * mn),
                num_edges=_round_up(graphs_per_device * me),
                num_graphs=graphs_per_device,
            )
        )
    return BucketPlan(
        tuple(groups), tuple(shapes), tuple(max_nodes), tuple(max_edges), batch_size, num_devices
    )


def assign_to_plan(plan: BucketPlan, num_nodes: np.ndarray, num_edges: np.ndarray) -> BucketPlan:
    """Place other structures (validation/test) into an existing plan's shapes where they fit, so
    they reuse its compiled programs; structures larger than every bucket get buckets of their own."""
    num_nodes = np.asarray(num_nodes, dtype=np.int64)
    num_edges = np.asarray(num_edges, dtype=np.int64)
    members: list[list[int]] = [[] for _ in plan.shapes]
    overflow: list[int] = []
    for idx in range(len(num_edges)):
        for b in range(len(plan.shapes)):
            if num_edges[idx] <= plan.max_edges[b] and num_nodes[idx] <= plan.max_nodes[b]:
                members[b].append(idx)
                break
        else:
            overflow.append(idx)
    groups = [np.asarray(m, dtype=np.int64) for m in members]
    shapes, max_nodes, max_edges = list(plan.shapes), list(plan.max_nodes), list(plan.max_edges)
    if overflow:
        extra = plan_buckets(
            num_nodes[overflow],
            num_edges[overflow],
            batch_size=plan.batch_size,
            max_buckets=1,
            num_devices=plan.num_devices,
        )
        groups.append(np.asarray(overflow, dtype=np.int64)[extra.groups[0]])
        shapes.extend(extra.shapes)
        max_nodes.extend(extra.max_nodes)
        max_edges.extend(extra.max_edges)
    keep = [i for i, g in enumerate(groups) if len(g)]
    return BucketPlan(
        tuple(groups[i] for i in keep),
        tuple(shapes[i] for i in keep),
        tuple(max_nodes[i] for i in keep),
        tuple(max_edges[i] for i in keep),
        plan.batch_size,
        plan.num_devices,
    )


def epoch_batches(plan: BucketPlan, *, seed: int, epoch: int, shuffle: bool) -> list[tuple[int, np.ndarray]]:
    """The batches of one epoch as (bucket index, structure indices), deterministic in (seed, epoch).

    With ``shuffle`` the structures inside each bucket and the order of the batches are permuted by
    ``np.random.default_rng([seed, epoch])``: a resumed run replays the very same order.
    """
    rng = np.random.default_rng([seed, epoch])
    batches: list[tuple[int, np.ndarray]] = []
    for bucket, members in enumerate(plan.groups):
        members = rng.permutation(members) if shuffle else members
        for start in range(0, len(members), plan.batch_size):
            batches.append((bucket, members[start : start + plan.batch_size]))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padding_waste(plan: BucketPlan, num_edges: np.ndarray) -> float:
    """Fraction of padded (wasted) edge slots over one epoch of the plan's batches."""
    num_edges = np.asarray(num_edges)
    used = padded = 0
    for bucket, members in enumerate(plan.groups):
        n_batches = math.ceil(len(members) / plan.batch_size)
        padded += n_batches * plan.shapes[bucket].num_edges * plan.num_devices
        used += int(num_edges[members].sum())
    return 1.0 - used / padded if padded else 0.0
