"""Where one compiled step spends its time: XLA's per-op trace events grouped by what the ops do.

JAX's profiler records one event per executed XLA instruction (a fusion, a dot, a scatter...) on the
CPU too; its Perfetto export is plain JSON. The compiled module's HLO text says what each instruction
computes (a fusion: every op of the computation it calls), which gives it a category:

- ``dot``: dots and convolutions (the einsums of the tensor products and linear layers);
- ``scatter``: scatters (segment sums over edges, the gradients of gathers);
- ``gather``: gathers and dynamic slices (reading node features per edge);
- ``reduce``: reductions (norms, sums over irreps or the batch);
- ``elementwise``: everything else (activations, products, copies, transposes).

A fusion that holds several kinds takes the first of that order. Used by ``train_step.py --profile``.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CATEGORIES = ("dot", "scatter", "gather", "reduce", "elementwise")

_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][\w\-]*)\(")
_CALLED = re.compile(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-]+)")


def _category_of(opcodes: set[str]) -> str:
    if opcodes & {"dot", "convolution"}:
        return "dot"
    if "scatter" in opcodes:
        return "scatter"
    if opcodes & {"gather", "dynamic-slice"}:
        return "gather"
    if opcodes & {"reduce", "reduce-window"}:
        return "reduce"
    return "elementwise"


def instruction_categories(hlo_text: str) -> dict[str, str]:
    """{instruction name: category} for every instruction of an HLO module's text (``compiled.as_text()``)."""
    own: dict[str, str] = {}  # instruction -> opcode
    calls: dict[str, list[str]] = {}  # instruction -> computations it calls
    body: dict[str, list[str]] = collections.defaultdict(list)  # computation -> its instructions
    current = None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and "=" not in line.split("{")[0]:
            current = head.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if match is None or current is None:
            continue
        name, opcode = match.groups()
        own[name] = opcode
        calls[name] = _CALLED.findall(line)
        body[current].append(name)

    memo: dict[str, set[str]] = {}

    def opcodes(computation: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if computation in memo:
            return memo[computation]
        found: set[str] = set()
        for name in body.get(computation, []):
            found.add(own[name])
            for called in calls[name]:
                if called not in seen:
                    found |= opcodes(called, seen | {computation})
        memo[computation] = found
        return found

    categories = {}
    for name, opcode in own.items():
        inner = {opcode}
        for called in calls[name]:
            inner |= opcodes(called)
        categories[name] = _category_of(inner)
    return categories


def profile_calls(run: Callable[[], Any], repeats: int) -> dict[str, float]:
    """{XLA event name: total microseconds} over ``repeats`` calls of ``run`` (which blocks until done)."""
    import jax

    with tempfile.TemporaryDirectory(prefix="hamflow-profile-") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(repeats):
                run()
        traces = glob.glob(str(Path(folder) / "**" / "perfetto_trace.json.gz"), recursive=True)
        if not traces:
            raise RuntimeError(f"the profiler wrote no Perfetto trace under {folder}")
        with gzip.open(traces[0], "rt") as handle:
            document = json.load(handle)
    events = document["traceEvents"] if isinstance(document, dict) else document
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            totals[str(event.get("name"))] += float(event["dur"])
    return dict(totals)


def step_profile(run: Callable[[], Any], hlo_text: str, repeats: int) -> dict[str, Any]:
    """Milliseconds per call by category (events of the module's own instructions only), the share
    of each, and the ten most expensive instructions with their categories."""
    categories = instruction_categories(hlo_text)
    totals = profile_calls(run, repeats)
    per_category = dict.fromkeys(CATEGORIES, 0.0)
    ops = []
    for name, micros in totals.items():
        category = categories.get(name)
        if category is None:
            continue
        per_category[category] += micros / 1e3 / repeats
        ops.append((micros / 1e3 / repeats, name, category))
    total = sum(per_category.values())
    ops.sort(reverse=True)
    return {
        "ms": per_category,
        "share": {k: (v / total if total else 0.0) for k, v in per_category.items()},
        "total_ms": total,
        "top_ops": [{"name": n, "category": c, "ms": ms} for ms, n, c in ops[:10]],
    }
