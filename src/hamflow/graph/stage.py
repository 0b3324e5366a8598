"""The graph stage: DFT structure folders -> one graph store (or one shard of it), from a TrainConfig.

Steps of :func:`build_graph_store`:
1. candidates: the given ids, the ids of validation reports, or discovery under ``inputs_dir/dft``;
2. common basis: from the ``info.json`` of every candidate of the whole dataset that can be read
   (so all shards of one dataset agree), or ``data.graph.common_orbital_types``;
3. reuse: under a lock on ``graph/.<store>.lock`` (a second build of the same store waits; stale
   temporary files of a killed build are removed), a store at the output path whose fingerprint
   (structure ids + size/mtime of their files, graph settings, basis, hamflow version) matches and
   whose content digests check (a sample of :data:`REUSE_CHECKED` structures; training checks every
   structure on first read) is returned as is; a mismatch is logged and rebuilt;
4. validation (``data.dft.on_bad_structure``: fail or skip), unless reports already give the ok ids;
5. parallel build (``data.graph.parallel_num`` joblib workers, progress bar, output in id order);
6. atomic write of the store at ``inputs_dir/graph/<dataset_name>.<graph_type>.<storage_type>.h5``;
   SIGTERM/SIGINT stop it with one line (:class:`GraphBuildInterrupted`), the workers are stopped
   when it ends, however it ends, and OS errors name the path (``cannot write the graph store ...``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from hamflow.data.discover import no_structures_error, scan_dft_dir, shard_ids, stray_reason, structure_path
from hamflow.data.info import StructureInfo, read_info
from hamflow.data.matrix_h5 import MATRIX_FILES
from hamflow.data.structure import INFO_FILE, POSCAR_FILE, load_structure
from hamflow.errors import ConfigError, DataError, HamflowError, Interrupted, os_errors
from hamflow.graph.basis import CommonBasis, common_basis
from hamflow.graph.stage_config import GraphStageConfig
from hamflow.graph.store import (
    GraphStore,
    StoreMeta,
    inputs_fingerprint,
    read_store_meta,
    store_path,
    write_store,
)
from hamflow.graph.structure_graph import (
    DEFAULT_OVERLAP_THRESHOLD,
    StructureGraph,
    build_structure_graph,
    check_graph_type,
    required_quantities,
    wanted_quantities,
)

if TYPE_CHECKING:
    from hamflow.data.validate import ValidationReport

logger = logging.getLogger(__name__)

#: Most structures handed to a worker at once (fewer, larger tasks amortise the process round trip).
_MAX_CHUNK = 64
#: Structures (evenly spaced) whose content digest is checked before an up-to-date store is reused;
#: every other structure is checked when training first reads it (GraphStore.get).
REUSE_CHECKED = 64


def graph_dtype(float_type: str) -> np.dtype:
    """Real dtype of a graph's arrays for ``system.float_type``: float64 for fp64, else float32."""
    return np.dtype(np.float64 if float_type == "fp64" else np.float32)


def cpu_cores() -> int:
    """CPU cores this process may run on (affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def accelerator_count() -> int:
    """Accelerators JAX sees, counted only when the caller already imported JAX (training does);
    the graph command alone never initialises JAX, which would claim GPU memory."""
    jax = sys.modules.get("jax")
    if jax is None:
        return 0
    try:
        return sum(1 for device in jax.devices() if device.platform != "cpu")
    except RuntimeError:
        return 0


def resolve_parallel_num(parallel_num: int) -> int:
    """Workers for ``data.graph.parallel_num``: as given when 1..available, where available is the
    larger of CPU cores and accelerators; a non-positive or larger value becomes ``available``."""
    available = max(cpu_cores(), accelerator_count(), 1)
    if parallel_num <= 0 or parallel_num > available:
        return available
    return int(parallel_num)


def structure_digest(folder: Path, graph_type: str) -> str:
    """Digest of the size and mtime of the files a graph of this type reads ("-" for a missing one)."""
    names = [POSCAR_FILE, INFO_FILE, *(MATRIX_FILES[q] for q in wanted_quantities(graph_type))]
    parts = []
    for name in names:
        try:
            stat = os.stat(folder / name)
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:20]


def read_infos(inputs_dir: Path, ids: Sequence[str]) -> dict[str, StructureInfo]:
    """info.json of every structure whose file reads (unreadable ones are left to validation)."""
    infos = {}
    for sid in ids:
        try:
            infos[sid] = read_info(structure_path(inputs_dir, sid) / INFO_FILE, structure=sid)
        except DataError:
            continue
    return infos


def dataset_orbital_map(inputs_dir: Path, infos: Mapping[str, StructureInfo]) -> dict[str, tuple[int, ...]]:
    """{element: shells} over the structures; DataError when two give one element different shells."""
    merged: dict[str, tuple[int, ...]] = {}
    first_seen: dict[str, str] = {}
    for sid, info in infos.items():
        for element, shells in info.elements_orbital_map.items():
            shells = tuple(int(l) for l in shells)
            if element not in merged:
                merged[element], first_seen[element] = shells, sid
            elif merged[element] != shells:
                raise DataError(
                    f"element {element} has shells {list(shells)} here but {list(merged[element])} in "
                    f"structure {first_seen[element]}; one dataset needs one basis per element",
                    structure=sid,
                    file=structure_path(inputs_dir, sid) / INFO_FILE,
                    key=f"elements_orbital_map.{element}",
                )
    if not merged:
        raise DataError("no readable info.json among the structures", file=Path(inputs_dir) / "dft")
    return merged


def dataset_spinful(infos: Mapping[str, StructureInfo], ids: Sequence[str]) -> bool:
    """Whether the structures ``ids`` are spinful (all alike; DataError naming two that differ)."""
    flags: dict[bool, str] = {}
    for sid in ids:
        flags.setdefault(bool(infos[sid].spinful), sid)
    if len(flags) > 1:
        raise DataError(
            f"spinful = true in structure {flags[True]} but false in structure {flags[False]}: one store "
            "holds one kind",
            key="spinful",
        )
    return bool(flags and next(iter(flags)))


def graph_settings(
    cfg: GraphStageConfig, basis: CommonBasis, orbital_map: dict[str, tuple[int, ...]]
) -> dict[str, Any]:
    """The settings a store records and its fingerprint covers.

    The TOML keys among them are those declared with ``store=`` in the training schema
    (``cfg.graph_store_settings()``: graph_type, storage_type, common_orbital_types, float_type as
    ``dtype``, on_bad_structure, data_dir_depth, and for Sap graphs the resolved ``neighbour_cutoff``);
    the store adds the basis, the orbital map and the overlap threshold.
    """
    settings: dict[str, Any] = dict(cfg.graph_store_settings())
    settings["dtype"] = graph_dtype(settings["dtype"]).name
    settings["basis"] = basis.to_string()
    settings["elements_orbital_map"] = {el: list(ls) for el, ls in sorted(orbital_map.items())}
    settings["overlap_threshold"] = DEFAULT_OVERLAP_THRESHOLD
    return settings


def _build_chunk(
    inputs_dir: str,
    sids: Sequence[str],
    basis: CommonBasis,
    graph_type: str,
    dtype: str,
    neighbour_cutoff: float | None,
) -> list[StructureGraph]:
    """Worker task: load and build the graphs of a few structures (module level: picklable)."""
    graphs = []
    for sid in sids:
        structure = load_structure(
            structure_path(inputs_dir, sid),
            sid=sid,
            quantities=wanted_quantities(graph_type),
            required=required_quantities(graph_type),
        )
        graphs.append(
            build_structure_graph(
                structure,
                basis,
                graph_type=graph_type,
                dtype=np.dtype(dtype),
                neighbour_cutoff=neighbour_cutoff,
            )
        )
    return graphs


def build_graphs(
    inputs_dir: str | Path,
    ids: Sequence[str],
    basis: CommonBasis,
    *,
    graph_type: str,
    dtype: Any = np.float32,
    workers: int = 1,
    neighbour_cutoff: float | None = None,
    progress: bool | None = None,
) -> Iterator[StructureGraph]:
    """Graphs of ``ids`` in that order, built by ``workers`` joblib processes (1: in this process).

    ``progress``: show a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    check_graph_type(graph_type)
    ids = list(ids)
    if not ids:
        return
    size = max(1, min(_MAX_CHUNK, math.ceil(len(ids) / (max(workers, 1) * 8))))
    chunks = [ids[k : k + size] for k in range(0, len(ids), size)]
    arguments = [
        (str(inputs_dir), chunk, basis, graph_type, np.dtype(dtype).name, neighbour_cutoff)
        for chunk in chunks
    ]
    if workers > 1:
        results = Parallel(n_jobs=workers, return_as="generator")(
            delayed(_build_chunk)(*a) for a in arguments
        )
    else:
        results = (_build_chunk(*a) for a in arguments)
    disable = not sys.stderr.isatty() if progress is None else not progress
    with tqdm(total=len(ids), unit="structure", desc="graphs", disable=disable) as bar:
        for graphs in results:
            yield from graphs
            bar.update(len(graphs))


def _describe_mismatch(old: StoreMeta, settings: dict[str, Any], inputs: list[tuple[str, str]]) -> str:
    changed = sorted(
        key for key in set(old.settings) | set(settings) if old.settings.get(key) != settings.get(key)
    )
    if changed:
        return "settings changed: " + ", ".join(
            f"{key} {old.settings.get(key)!r} -> {settings.get(key)!r}" for key in changed
        )
    before, now = dict(old.inputs), dict(inputs)
    added = len(set(now) - set(before))
    removed = len(set(before) - set(now))
    modified = sum(1 for sid in set(now) & set(before) if now[sid] != before[sid])
    if added or removed or modified:
        return f"inputs changed: {added} structures added, {removed} removed, {modified} modified"
    return f"written by hamflow {old.hamflow_version}"


def _ok_ids(
    cfg: GraphStageConfig, ids: list[str], reports: Sequence[ValidationReport] | None, workers: int
) -> list[str]:
    """Validated ids among ``ids``: from the reports when given, else by validating now."""
    from hamflow.data.validate import ValidationReport, apply_bad_structure_policy, validate_tree

    policy = cfg.data.dft.on_bad_structure
    graph_type = cfg.data.graph.graph_type
    if reports:
        merged = ValidationReport.merge(reports)
        wanted = set(ids)
        unreported = [sid for sid in ids if sid not in set(merged.ok) | set(merged.bad)]
        if unreported:
            raise DataError(
                f"{len(unreported)} structure(s) are in no validation report (first: {unreported[0]}); "
                "validate them, or build without --reports",
                structure=unreported[0],
            )
        report = ValidationReport(
            ok=[sid for sid in merged.ok if sid in wanted],
            problems=[problem for problem in merged.problems if problem.sid in wanted],
        )
        ok = set(apply_bad_structure_policy(report, policy))
        return [sid for sid in ids if sid in ok]
    report = validate_tree(
        Path(cfg.data.inputs_dir),
        depth=cfg.data.dft.data_dir_depth,
        ids=ids,
        # the files read for the graph; Sap checks none (overlap.h5 is optional there)
        quantities=() if graph_type == "Sap" else wanted_quantities(graph_type),
        n_jobs=workers,
    )
    ok = set(apply_bad_structure_policy(report, policy))
    return [sid for sid in ids if sid in ok]


class GraphBuildInterrupted(Interrupted):
    """SIGTERM/SIGINT during a graph build: nothing was written, the temporary file is removed."""

    def __init__(self, signum: int, out: Path) -> None:
        self.exit_code = 128 + signum
        super().__init__(
            f"{signal.Signals(signum).name} received while building graph store {out}: nothing written "
            "(its temporary file was removed); rerun to build it"
        )


@contextlib.contextmanager
def _signals_interrupt(out: Path) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into :class:`GraphBuildInterrupted` while the block runs, unless the caller
    (``hamflow train``) handles them itself; outside the main thread nothing is installed."""
    installed: dict[int, Any] = {}

    def interrupt(signum: int, frame: Any) -> None:
        raise GraphBuildInterrupted(signum, out)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                installed[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)


def stop_workers() -> None:
    """Stop joblib's reusable worker processes now (they would idle on for loky's 10 s timeout, or
    outlive a build stopped by a signal)."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``graph/.<store>.lock`` (waiting for another build of the same
    store to end) and yield True; yield False, unlocked, when the folder is read-only (a store there
    can still be reused; a build then fails with its own line). Creates the graph folder."""
    with os_errors("create the graph folder", out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out.parent / f".{out.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("graph store %s: waiting for another build of it to end", out)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the ``.<store>.*.tmp`` files a killed build of ``out`` left (call under :func:`build_lock`)."""
    removed = []
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
            logger.warning("removed %s, left by a graph build that was killed", tmp)
    return removed


def altered_sample(path: Path, count: int = REUSE_CHECKED) -> list[str]:
    """Ids among ``count`` evenly spaced structures of a store whose content differs from the digest
    written at build time (all of them when the store cannot be read)."""
    try:
        with GraphStore.open(path, lazy=True) as store:
            if not len(store):
                return []
            indices = sorted(set(np.linspace(0, len(store) - 1, min(count, len(store))).round().astype(int)))
            return store.altered(indices)
    except (DataError, OSError, KeyError, ValueError) as error:
        return [f"(unreadable: {error})"]


def discovered_candidates(dft_dir: Path, depth: int) -> list[str]:
    """Structure ids and incomplete folders under ``dft_dir`` (sorted): incomplete ones go through
    validation like the others, so ``on_bad_structure`` fails on them or skips them with a report;
    strays are logged. :class:`DataError` (with a depth hint) when there is no structure at all."""
    found = scan_dft_dir(dft_dir, depth)
    for stray in found.strays:
        logger.warning("%s", stray_reason(dft_dir, stray))
    if not found.ids:
        raise no_structures_error(dft_dir, depth, found)
    return sorted(found.ids + found.incomplete)


def default_shard_path(cfg: GraphStageConfig, shard: tuple[int, int]) -> Path:
    """``inputs_dir/graph/<name>.<type>.<storage>.shard-K-of-N.h5`` (K 0-based)."""
    whole = store_path(
        cfg.data.inputs_dir,
        cfg.data.graph.dataset_name,
        cfg.data.graph.graph_type,
        cfg.data.graph.storage_type,
    )
    return whole.with_name(whole.name.removesuffix(".h5") + f".shard-{shard[0]}-of-{shard[1]}.h5")


def open_graph_store(cfg: GraphStageConfig, path: str | Path) -> GraphStore:
    """The :class:`~hamflow.graph.store.GraphStore` at ``path`` as training reads it: a disk store lazily,
    with an HDF5 chunk cache of ``data.graph.disk_mem_buffer_size`` MiB in all; a memory store whole."""
    from hamflow.graph.store import GraphStore

    return GraphStore.open(path, buffer_mb=int(cfg.data.graph.disk_mem_buffer_size))


def validation_check_report(cfg: GraphStageConfig) -> ValidationReport:
    """``[data.dft] validation_check = true``: validate every structure folder first, as ``hamflow
    validate`` does (the files the graph type reads), on every run, also when the store is reused.

    The report then replaces the graph stage's own validation (``on_bad_structure`` applies to it).
    """
    from hamflow.data.validate import validate_tree

    graph_type = check_graph_type(cfg.data.graph.graph_type)
    report = validate_tree(
        Path(cfg.data.inputs_dir),
        depth=cfg.data.dft.data_dir_depth,
        quantities=() if graph_type == "Sap" else wanted_quantities(graph_type),
        n_jobs=resolve_parallel_num(cfg.data.graph.parallel_num),
    )
    logger.info(
        "validation_check: validated %d structures (%d ok, %d bad)",
        report.num_structures,
        len(report.ok),
        len(report.bad),
    )
    return report


def build_graph_store(
    cfg: GraphStageConfig,
    *,
    ids: Sequence[str] | None = None,
    out: Path | None = None,
    shard: tuple[int, int] | None = None,
    reports: Sequence[ValidationReport] | None = None,
    progress: bool | None = None,
) -> Path:
    """Build (or reuse) the graph store of ``cfg`` and return its path.

    ids:     candidate structure ids (default: the ids of ``reports``, else discovery).
    out:     output path (default: DeepH-pack's place, :func:`store_path`; a shard's default is
             :func:`default_shard_path`).
    shard:   (k, n): build only the k-th (0-based) of n contiguous slices of the candidates.
    reports: ``hamflow.data.validate.ValidationReport`` objects covering the candidates; their ok ids
             are used and validation is not run again.
    """
    graph = cfg.data.graph
    graph_type = check_graph_type(graph.graph_type)
    inputs_dir = Path(cfg.data.inputs_dir)
    if ids is None and not reports and getattr(cfg.data.dft, "validation_check", False):
        reports = [validation_check_report(cfg)]
    if ids is not None:
        candidates = list(ids)
    elif reports:
        from hamflow.data.validate import ValidationReport

        merged = ValidationReport.merge(reports)
        candidates = sorted(set(merged.ok) | set(merged.bad))
    else:
        candidates = discovered_candidates(inputs_dir / "dft", cfg.data.dft.data_dir_depth)
    if not candidates:
        raise DataError("no structures to build graphs of", file=inputs_dir / "dft")
    mine = shard_ids(candidates, shard[0], shard[1]) if shard is not None else candidates
    if out is None:
        out = (
            default_shard_path(cfg, shard)
            if shard is not None
            else store_path(inputs_dir, graph.dataset_name, graph_type, graph.storage_type)
        )
    out = Path(out)

    infos = read_infos(inputs_dir, candidates)
    orbital_map = dataset_orbital_map(inputs_dir, infos)
    try:
        basis = common_basis(orbital_map, graph.common_orbital_types)
    except ConfigError as error:
        source = error.source or getattr(cfg, "source", None)
        raise ConfigError(error.key, error.problem, source=source) from None
    settings = graph_settings(cfg, basis, orbital_map)
    inputs = [(sid, structure_digest(structure_path(inputs_dir, sid), graph_type)) for sid in mine]
    with build_lock(out) as locked, _signals_interrupt(out):
        try:
            if locked:
                remove_stale_temporaries(out)
            return _reuse_or_build(
                cfg, out, mine, reports, infos, basis, orbital_map, settings, inputs, progress
            )
        finally:
            stop_workers()  # validation's and the build's joblib workers, however the build ended


def _reuse_or_build(
    cfg: GraphStageConfig,
    out: Path,
    mine: list[str],
    reports: Sequence[ValidationReport] | None,
    infos: Mapping[str, StructureInfo],
    basis: CommonBasis,
    orbital_map: dict[str, tuple[int, ...]],
    settings: dict[str, Any],
    inputs: list[tuple[str, str]],
    progress: bool | None,
) -> Path:
    """The store at ``out`` if it is up to date and unaltered, else a new one built from ``mine``."""
    graph = cfg.data.graph
    graph_type = graph.graph_type
    inputs_dir = Path(cfg.data.inputs_dir)
    fingerprint = inputs_fingerprint(settings, inputs)
    if out.exists():
        try:
            old = read_store_meta(out)
        except HamflowError as error:
            logger.warning("rebuilding graph store %s: the existing file is unusable (%s)", out, error)
        else:
            altered = altered_sample(out) if old.fingerprint == fingerprint else []
            if old.fingerprint == fingerprint and not altered:
                logger.info("graph store %s is up to date (%d structures): reused", out, len(old.ids))
                return out
            if altered:
                logger.warning(
                    "rebuilding graph store %s: structure %s differs from the content digest written at "
                    "build time (altered or corrupt)",
                    out,
                    altered[0],
                )
            else:
                logger.warning(
                    "rebuilding graph store %s: %s", out, _describe_mismatch(old, settings, inputs)
                )

    workers = resolve_parallel_num(graph.parallel_num)
    ok = _ok_ids(cfg, mine, reports, workers)
    if len(ok) < len(mine):
        logger.warning(
            "graph store %s: %d of %d structures left out by validation", out, len(mine) - len(ok), len(mine)
        )
    if not ok:
        raise DataError("no structure passed validation: nothing to build", file=inputs_dir / "dft")
    spinful = dataset_spinful(infos, ok)
    meta = StoreMeta(
        graph_type=graph_type,
        storage_type=graph.storage_type,
        basis=basis,
        elements_orbital_map=orbital_map,
        spinful=spinful,
        dtype=settings["dtype"],
        settings=settings,
        inputs=inputs,
        fingerprint=fingerprint,
    )
    logger.info(
        "building graph store %s: %d structures, basis %s, graph_type %s, %d workers",
        out,
        len(ok),
        basis.to_string(),
        graph_type,
        workers,
    )
    graphs = build_graphs(
        inputs_dir,
        ok,
        basis,
        graph_type=graph_type,
        dtype=settings["dtype"],
        workers=workers,
        neighbour_cutoff=settings.get("neighbour_cutoff"),
        progress=progress,
    )
    with os_errors("write the graph store", out):
        write_store(out, graphs, meta)
    return out
