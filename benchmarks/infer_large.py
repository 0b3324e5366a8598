"""Benchmark of ``hamflow infer`` on large periodic structures: time and peak memory per phase and atom.

Builds Si diamond supercells (conventional cell a = 5.431 Angstrom, n^3 cells: 512, 4,096, 13,824
atoms for n = 4, 8, 12; small random displacements so no two edges are alike) as POSCAR + info.json
only (``elements_orbital_map`` Si: s2p2d1, 13 orbitals), so every edge comes from the neighbour search.

The model is a real hamflow run folder written by the project's own code, but **untrained**: there
is no Si DFT data here to train on. ``model.json`` is the sparrow of config/train.toml (net_irreps
``16x0e+8x1o+8x1e+8x2e+4x2o+4x3o+4x3e+4x4e``, 2 blocks, gaussian_basis_rmax 7.5 Angstrom; 127k
parameters for the Si basis), the parameters are :func:`hamflow.nn.model.init_params` (seeded), and
``normaliser.npz`` is :func:`hamflow.train.normaliser.fit_normaliser` on one 64-atom Si cell with
seeded random labels, so it carries the two-centre, on-site and environment baselines a trained
model has. The timings and memory do not depend on the values of the weights.

Each size runs in its own child process (``run_inference``, the function behind ``hamflow infer``,
with ``parallel_num = 1``), which samples its resident memory every 20 ms (psutil) and reports per
phase: ``neighbours`` (the periodic neighbour search), ``graph`` (the rest of the graph store: masks,
writing, reading back), ``model`` (loading the run folder), ``network`` (the backbone over all
edges, in chunks), ``write`` (readout, normaliser, symmetrisation and the incremental file writing),
each with its seconds and the peak RSS while it ran, and the whole run's wall time and peak RSS.

    python benchmarks/infer_large.py [--cells 4,8,12] [--chunk-edges 0] [--cache DIR] [--json OUT]
        [--compilation-cache DIR]

``--chunk-edges 0`` (the default) lets hamflow choose the chunk from the memory available.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SI_A = 5.431  # Angstrom
SI_SHELLS = (0, 0, 1, 1, 2)
NET_IRREPS = "16x0e+8x1o+8x1e+8x2e+4x2o+4x3o+4x3e+4x4e"
DIAMOND = np.array(
    [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.25, 0.75, 0.75],
     [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]
)  # fmt: skip


def si_supercell(cells: int, *, seed: int = 0, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(lattice (3, 3), positions (8 cells^3, 3)) of a Si diamond supercell in Angstrom, with Gaussian
    displacements of ``noise`` Angstrom."""
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    fractional = (grid + DIAMOND[None]).reshape(-1, 3)
    positions = fractional * SI_A + np.random.default_rng(seed).normal(0.0, noise, fractional.shape)
    return np.eye(3) * SI_A * cells, positions


def write_si_structure(folder: Path, cells: int, *, seed: int = 0) -> int:
    """POSCAR + info.json of an n^3 Si supercell in ``folder``; returns the number of atoms."""
    from hamflow.data.info import StructureInfo, write_info
    from hamflow.data.poscar import Poscar, write_poscar

    lattice, positions = si_supercell(cells, seed=seed)
    count = positions.shape[0]
    folder.mkdir(parents=True, exist_ok=True)
    write_poscar(
        folder / "POSCAR", Poscar(f"Si {cells}x{cells}x{cells}", lattice, ("Si",) * count, positions)
    )
    orbitals = sum(2 * l + 1 for l in SI_SHELLS)
    write_info(
        folder / "info.json",
        StructureInfo(count, count * orbitals, False, False, None, {"Si": SI_SHELLS}),
    )
    return count


def write_model(run: Path) -> int:
    """An untrained sparrow run folder for Si (see the module docstring); returns its parameter count."""
    import jax

    from hamflow.data.poscar import Poscar
    from hamflow.graph.basis import CommonBasis
    from hamflow.graph.neighbours import neighbour_edges
    from hamflow.graph.structure_graph import StructureGraph
    from hamflow.infer.predict import example_batch
    from hamflow.nn.model import count_parameters, init_params
    from hamflow.train import checkpoint as ckpt
    from hamflow.train.normaliser import fit_normaliser
    from hamflow.train.saved_model import ModelSpec, build_network

    spec = ModelSpec(
        net_type="sparrow",
        shell_ls=SI_SHELLS,
        net_irreps=NET_IRREPS,
        num_blocks=2,
        gaussian_basis_rmax=7.5,
        consider_parity=True,
        spinful=False,
        target_type="H",
        elements_orbital_map={"Si": SI_SHELLS},
        float_type="fp32",
    )
    lattice, positions = si_supercell(2, seed=1)
    poscar = Poscar("Si", lattice, ("Si",) * positions.shape[0], positions)
    src, dst, shift = neighbour_edges(poscar, spec.neighbour_cutoff)
    size = CommonBasis(SI_SHELLS).size
    rng = np.random.default_rng(0)
    labels = rng.normal(0.0, 1.0, (src.shape[0], size, size)).astype(np.float32)
    graph = StructureGraph(
        sid="si64",
        atomic_numbers=np.full(positions.shape[0], 14, np.int32),
        positions=positions,
        lattice=lattice,
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift,
        edge_vec=(positions[dst] + shift @ lattice - positions[src]).astype(np.float32),
        labels=labels,
        label_mask=np.ones(labels.shape, bool),
        overlap=None,
    )
    layout = ckpt.RunLayout(run)
    layout.model.mkdir(parents=True, exist_ok=True)
    spec.save(layout.model_json)
    fit_normaliser([graph], SI_SHELLS).save(layout.normaliser)
    module = build_network(spec, jax.numpy.float32)
    params = init_params(module, example_batch(graph), seed=0)["params"]
    ckpt.save_best(layout, params, {"epoch": 0})
    return count_parameters(params)


class PhaseMemory:
    """Peak RSS (psutil, every 20 ms) and seconds of named phases of this process."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.phase = "start"
        self.peaks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self.process.memory_info().rss
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            time.sleep(0.02)

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[None]:
        outer = self.phase
        rss = self.process.memory_info().rss
        self.peaks[name] = max(self.peaks.get(name, 0), rss)
        self.phase = name
        started = time.perf_counter()
        cpu = sum(self.process.cpu_times()[:2])
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            self.cpu[name] = self.cpu.get(name, 0.0) + sum(self.process.cpu_times()[:2]) - cpu
            self.peaks[name] = max(self.peaks.get(name, 0), self.process.memory_info().rss)
            self.phase = outer

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.measure(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child(work: Path, chunk_edges: int, compilation_cache: str = "") -> dict[str, Any]:
    """Run ``hamflow infer``'s run_inference on ``work/inputs`` with the model ``work/run``; phase table.
    ``compilation_cache``: process.infer.compilation_cache_dir when given (else the key is left out)."""
    import hamflow.graph.structure_graph as structure_graph
    import hamflow.infer.chunked as chunked
    import hamflow.infer.predict as predict
    import hamflow.infer.stage as stage
    import hamflow.infer.stream_write as stream_write
    from hamflow.config.device import configure_jax_environment
    from hamflow.config.infer_config import parse_infer_config

    memory = PhaseMemory()
    # neighbour search inside the graph phase; the graph phase's own figure excludes it below
    memory.wrap(stage, "inference_store", "graph")
    memory.wrap(structure_graph, "neighbour_edges", "neighbours")
    memory.wrap(predict, "load_trained_model", "model")
    memory.wrap(chunked.ChunkedNetwork, "features", "network")
    memory.wrap(stream_write, "write_streamed_prediction", "write")
    infer_keys: dict[str, Any] = {"chunk_edges": chunk_edges}
    if compilation_cache:
        infer_keys["compilation_cache_dir"] = compilation_cache
    cfg = parse_infer_config(
        {
            "system": {"device": "cpu*1", "float_type": "fp32", "log_level": "info"},
            "data": {
                "inputs_dir": str(work / "inputs"),
                "outputs_dir": str(work / "outputs"),
                "graph": {"dataset_name": "SI-LARGE", "graph_type": "S", "parallel_num": 1},
            },
            "model": {"model_dir": str(work / "run")},
            "process": {"infer": infer_keys},
        }
    )
    configure_jax_environment(cfg.system)
    started = time.perf_counter()
    with memory.measure("total"):
        result = stage.run_inference(cfg, run_dir=work / "outputs" / "run")
    wall = time.perf_counter() - started
    memory.stop()
    path = result.output_dir / "si" / "hamiltonian_pred.h5"
    import h5py

    with h5py.File(path, "r") as handle:
        pairs = int(handle["atom_pairs"].shape[0])
        entries = int(handle["entries"].shape[0])
    seconds = dict(memory.seconds)
    seconds["graph"] = seconds.get("graph", 0.0) - seconds.get("neighbours", 0.0)
    cpu = dict(memory.cpu)
    cpu["graph"] = cpu.get("graph", 0.0) - cpu.get("neighbours", 0.0)
    return {
        "wall_s": wall,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss": memory.peaks,
        "pairs": pairs,
        "entries": entries,
        "file_bytes": path.stat().st_size,
        "chunk_edges": chunked.resolve_chunk_edges(chunk_edges),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="4,8,12", help="supercells n^3 conventional cells (8 n^3 atoms)")
    parser.add_argument("--chunk-edges", type=int, default=0, help="process.infer.chunk_edges (0: auto)")
    parser.add_argument("--cache", default="", help="folder for the structures and the model (default: temp)")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument(
        "--compilation-cache",
        default="",
        help="process.infer.compilation_cache_dir (default: a fresh folder per size, so every run compiles)",
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child), args.chunk_edges, args.compilation_cache)))
        return 0
    root_context = (
        contextlib.nullcontext(args.cache)
        if args.cache
        else tempfile.TemporaryDirectory(prefix="infer-large-")
    )
    rows = []
    with root_context as root_name:
        root = Path(root_name)
        run = root / "run"
        if not (run / "model" / "model.json").is_file():
            print(f"model: {write_model(run)} parameters (untrained, see the docstring)", flush=True)
        for cells in [int(c) for c in args.cells.split(",")]:
            work = root / f"si{cells}"
            atoms = write_si_structure(work / "inputs" / "dft" / "si", cells)
            if not (work / "run").exists():
                os.symlink(run, work / "run")
            env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "src")])),
            )  # a version put on PYTHONPATH (an A/B's "before") comes first
            command = [sys.executable, __file__, "--child", str(work), "--chunk-edges", str(args.chunk_edges)]
            if args.compilation_cache:
                command += ["--compilation-cache", args.compilation_cache]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-4000:], file=sys.stderr)
                return done.returncode
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["atoms"] = atoms
            rows.append(row)
            _print_row(row)
            subprocess.run(["rm", "-rf", str(work / "outputs"), str(work / "inputs" / "graph")], check=False)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


PHASES = ("neighbours", "graph", "model", "network", "write")


def _print_row(row: dict[str, Any]) -> None:
    atoms = row["atoms"]
    gib = 1 << 30
    wall, cpu, peak = row["wall_s"], row["cpu_seconds"]["total"], row["peak_rss_bytes"]
    print(
        f"\n{atoms} atoms, {row['pairs']} pairs, chunks of {row['chunk_edges']} edges: "
        f"wall {wall:.1f} s ({1e3 * wall / atoms:.2f} ms/atom), CPU {cpu:.1f} s ({1e3 * cpu / atoms:.2f} "
        f"ms/atom), peak RSS {peak / gib:.2f} GiB ({peak / atoms / 1024:.0f} KiB/atom), "
        f"file {row['file_bytes'] / 2**20:.0f} MiB",
        flush=True,
    )
    print(f"  {'phase':<11}{'wall s':>8}{'CPU s':>8}{'CPU ms/atom':>12}{'peak RSS GiB':>14}")
    for phase in PHASES:
        seconds = row["seconds"].get(phase, 0.0)
        cpu = row["cpu_seconds"].get(phase, 0.0)
        peak = row["peak_rss"].get(phase, 0)
        print(
            f"  {phase:<11}{seconds:>8.1f}{cpu:>8.1f}{1e3 * cpu / atoms:>12.2f}{peak / gib:>14.2f}",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
