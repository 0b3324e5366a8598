"""Benchmark of the graph stage: build rate per worker process, peak memory, disk-store iteration.

Replicates the structures of ``--source`` (default: the demo molecules in data/demo, else the
DeepH-dock H2O set in ../shared) by symbolic links to ``--count`` structure folders in a temporary
inputs_dir, then for each worker count of ``--workers``:

* ``build``: :func:`hamflow.graph.stage.build_graphs` + :func:`hamflow.graph.store.write_store`
  (read the files, pad the blocks, masks, write a disk store); the joblib pool is started by a
  small warm-up run first, so the figure is the steady rate, not process start-up;
* ``stage``: the whole :func:`hamflow.graph.stage.build_graph_store` (validation included).

It prints structures per second, the same per worker process, the speed-up over one worker and the
peak resident memory of the benchmark process plus its workers (psutil, sampled every 20 ms). Then it
iterates the whole disk store and prints the resident memory every tenth of the way (it must stay
flat: the disk store reads one structure at a time), next to the memory store's.

    python benchmarks/graph_build.py [--count 2000] [--workers 1,2] [--source DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from hamflow.config.train_config import parse_train_config
from hamflow.graph.basis import common_basis
from hamflow.graph.stage import build_graph_store, build_graphs, dataset_orbital_map, read_infos
from hamflow.graph.store import GraphStore, StoreMeta, write_store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = (
    REPO / "data" / "demo" / "molecules" / "dft",
    REPO.parent / "shared" / "data" / "deeph-dock" / "h2o" / "dft",
)


def structure_folders(root: Path) -> list[Path]:
    """Every folder below ``root`` holding POSCAR and info.json, sorted."""
    return sorted(Path(d) for d, _, files in os.walk(root) if "POSCAR" in files and "info.json" in files)


def replicate(sources: list[Path], dft_dir: Path, count: int) -> list[str]:
    dft_dir.mkdir(parents=True)
    ids = [f"{k:06d}" for k in range(count)]
    for k, sid in enumerate(ids):
        os.symlink(sources[k % len(sources)].resolve(), dft_dir / sid)
    return ids


class PeakMemory:
    """Largest resident memory (bytes) of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _total(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of (this process, its live children: the joblib workers)."""
    me = psutil.Process()
    children = 0.0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children += sum(child.cpu_times()[:2])
    return sum(me.cpu_times()[:2]), children


def timed(function: Callable[[], object]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds of this process and of the workers, peak resident bytes."""
    with PeakMemory() as memory:
        parent, children = cpu_seconds()
        start = time.perf_counter()
        function()
        seconds = time.perf_counter() - start
        parent_end, children_end = cpu_seconds()
    return seconds, parent_end - parent, children_end - children, memory.peak


def config(inputs: Path, workers: int, storage: str):
    return parse_train_config(
        {
            "data": {
                "inputs_dir": str(inputs),
                "outputs_dir": str(inputs / "out"),
                "graph": {"graph_type": "HS", "parallel_num": workers, "storage_type": storage},
            },
            "model": {"advanced": {"net_irreps": ""}},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="structures after replication")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--source", type=Path, help="folder holding the structures to replicate")
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()

    source = args.source or next(p for p in DEFAULT_SOURCES if p.is_dir() and structure_folders(p))
    sources = structure_folders(source)
    root = args.keep or Path(tempfile.mkdtemp(prefix="hamflow-graph-bench-"))
    inputs = root / "inputs"
    ids = replicate(sources, inputs / "dft", args.count)
    infos = read_infos(inputs, ids[: len(sources)])
    orbital_map = dataset_orbital_map(inputs, infos)
    basis = common_basis(orbital_map)
    atoms = np.mean([info.atoms_quantity for info in infos.values()])
    print(f"source: {source} ({len(sources)} structures, {atoms:.1f} atoms on average)")
    print(f"common basis {basis.to_string()}")
    print(f"replicated to {len(ids)} structures in {inputs}; cores available: {len(os.sched_getaffinity(0))}")
    print()

    def meta(storage: str) -> StoreMeta:
        return StoreMeta(
            graph_type="HS",
            storage_type=storage,
            basis=basis,
            elements_orbital_map=orbital_map,
            spinful=False,
            dtype="float32",
            settings={"benchmark": True},
        )

    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:

        def build(n: int = len(ids), w: int = workers) -> None:
            graphs = build_graphs(inputs, ids[:n], basis, graph_type="HS", workers=w, progress=False)
            write_store(root / f"bench-{w}.disk.h5", graphs, meta("disk"))

        build(4 * workers)  # start the worker pool (loky keeps it for the timed run)
        build_s, parent_cpu, worker_cpu, build_peak = timed(build)
        cfg = config(inputs, workers, "disk")
        (inputs / "graph" / "DATASET-DEMO.HS.disk.h5").unlink(missing_ok=True)
        stage_s, _, _, stage_peak = timed(lambda cfg=cfg: build_graph_store(cfg, progress=False))
        rows.append((workers, build_s, parent_cpu, worker_cpu, build_peak, stage_s, stage_peak))

    n = len(ids)
    print("build = read files + graphs + write a disk store; stage = build_graph_store (validation included)")
    print("CPU-s: CPU seconds of the main process + workers (a rate that the machine's load does not")
    print("dilute); main CPU %: the main process's share (reading results, writing the store).")
    print(
        "| workers | build s | structures/s | per process | speed-up | structures/CPU-s | main CPU % "
        "| peak MiB | stage s | stage structures/s | stage peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = rows[0][1]
    for workers, build_s, parent_cpu, worker_cpu, build_peak, stage_s, stage_peak in rows:
        rate = n / build_s
        cpu = parent_cpu + worker_cpu
        print(
            f"| {workers} | {build_s:.2f} | {rate:.0f} | {rate / workers:.0f} | {base / build_s:.2f}x "
            f"| {n / cpu:.0f} | {100 * parent_cpu / cpu:.0f} "
            f"| {build_peak / 2**20:.0f} | {stage_s:.2f} | {n / stage_s:.0f} | {stage_peak / 2**20:.0f} |"
        )
    print(f"load average during the run: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print()

    memory_store = root / "bench-memory.h5"
    write_store(memory_store, GraphStore.open(root / f"bench-{rows[0][0]}.disk.h5"), meta("memory"))
    me = psutil.Process()
    print("| store | file MiB | RSS after open MiB | RSS while iterating (every 10%) MiB |")
    print("|---|---|---|---|")
    for label, path in (("disk", root / f"bench-{rows[0][0]}.disk.h5"), ("memory", memory_store)):
        before = me.memory_info().rss
        store = GraphStore.open(path)
        opened = me.memory_info().rss
        marks = []
        step = max(1, len(store) // 10)
        for k in range(len(store)):
            store.get(k)
            if (k + 1) % step == 0:
                marks.append(me.memory_info().rss)
        store.close()
        del store
        trace = " ".join(f"{m / 2**20:.0f}" for m in marks)
        size = path.stat().st_size / 2**20
        grown = (opened - before) / 2**20
        print(f"| {label} | {size:.1f} | {opened / 2**20:.0f} (+{grown:.0f}) | {trace} |")
    if args.keep is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
