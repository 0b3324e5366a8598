"""Benchmark of structure discovery on a generated tree of placeholder folders.

Builds ``--count`` structure folders (each with an empty POSCAR and info.json) under a temporary
``dft/`` at data_dir_depth 0 (``dft/<sid>``) and 2 (``dft/<t1>/<t2>/<sid>``), times
:func:`hamflow.data.discover.discover_structures` (best and median of ``--repeat`` runs; the
folders are in the page cache after building, as on a warm file system) and prints a table.

    python benchmarks/discover.py [--count 100000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from hamflow.data.discover import discover_structures

FANOUT_T1 = 100  # depth 2: 100 x 10 branch folders (t1/t2), 100 structures each for 100,000
FANOUT_T2 = 10


def build_tree(dft_dir: Path, count: int, depth: int) -> list[str]:
    """Create ``count`` placeholder structure folders; return their ids."""
    if depth not in (0, 2):
        raise ValueError("the benchmark builds depth 0 or 2")
    ids = []
    for k in range(count):
        branch = "" if depth == 0 else f"{k % FANOUT_T1:03d}/{(k // FANOUT_T1) % FANOUT_T2:02d}/"
        sid = f"{branch}{k:07d}"
        folder = dft_dir / sid
        os.makedirs(folder)
        for marker in ("POSCAR", "info.json"):
            with open(folder / marker, "wb"):
                pass
        ids.append(sid)
    return sorted(ids)


def time_discovery(dft_dir: Path, depth: int, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        discover_structures(dft_dir, depth)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="structure folders per tree")
    parser.add_argument("--repeat", type=int, default=3, help="timed discovery runs per tree")
    parser.add_argument(
        "--keep", type=Path, default=None, help="build the trees in this (empty) folder and keep them"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hamflow-discover-bench-") as scratch:
        base = args.keep or Path(scratch)
        rows = []
        for depth in (0, 2):
            dft_dir = base / f"depth{depth}" / "dft"
            start = time.perf_counter()
            expected = build_tree(dft_dir, args.count, depth)
            build_s = time.perf_counter() - start
            if discover_structures(dft_dir, depth) != expected:
                raise SystemExit(f"discovery at depth {depth} did not find exactly the built folders")
            seconds = time_discovery(dft_dir, depth, args.repeat)
            rows.append((args.count, depth, min(seconds), statistics.median(seconds), build_s))

    print(f"discover_structures on {os.cpu_count()} CPU(s), warm page cache, {args.repeat} runs")
    header = ("structures", "depth", "best s", "median s", "structures/s", "build s")
    print("{:>10} {:>5} {:>8} {:>9} {:>13} {:>8}".format(*header))
    for count, depth, best, median, build_s in rows:
        print(f"{count:>10} {depth:>5} {best:>8.3f} {median:>9.3f} {count / median:>13,.0f} {build_s:>8.1f}")


if __name__ == "__main__":
    main()
