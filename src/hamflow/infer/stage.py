"""``hamflow infer``: one inference run from a resolved InferConfig (DeepH-pack's infer.toml).

Steps of :func:`run_inference`:
1. the run folder ``<outputs_dir>/<%Y-%m-%d_%H-%M-%S>/`` (or the one given): deepx.log, infer.toml
   (resolved), predictions.json (what was predicted, with which checkpoint, where it went);
2. structures: every folder under ``inputs_dir/dft`` (``data_dir_depth`` levels) holding POSCAR and
   info.json, optionally restricted to given ids; each is checked against the model (elements it was
   trained on, the same shells per element, spinful alike);
3. the graph store ``inputs_dir/graph/<dataset_name>.<graph_type>.<storage_type>.h5`` (reused when its
   fingerprint matches): structures with overlap.h5 take their edges from its atom pairs (graph_type
   S: with the overlap values and the |S| shell mask; Sap: the pairs only); structures with only
   POSCAR and info.json from the neighbour search within the model's ``neighbour_cutoff``;
   ``only_save_graph`` stops here;
4. the model ``[model]`` (``best``, or ``latest`` at ``load_model_epoch``), batched prediction
   (``batch_size``, ``multi_way_jit_num`` compiled shapes, the devices of ``system.device``),
   Hermitian symmetrisation (``target_symmetrize``), and one hamiltonian_pred.h5 (density_matrix_pred.h5
   for a Rho model) per structure, float64 for ``float_type = "fp64"`` else float32, written atomically
   into ``<run>/dft/<sid>/`` (``output_into = "to_output"``) or ``inputs_dir/dft/<sid>/`` ("to_input").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hamflow.atomic import atomic_write_text
from hamflow.data.discover import incomplete_reason, scan_dft_dir, stray_reason, structure_path
from hamflow.data.info import StructureInfo, read_info
from hamflow.data.matrix_h5 import MATRIX_FILES
from hamflow.data.structure import INFO_FILE, POSCAR_FILE
from hamflow.errors import DataError
from hamflow.graph.basis import CommonBasis
from hamflow.graph.structure_graph import StructureGraph
from hamflow.train.saved_model import ModelSpec

if TYPE_CHECKING:
    from hamflow.config.infer_config import InferConfig

LOG = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.json"
RESOLVED_TOML = "infer.toml"
OUTPUT_FILE = {"H": MATRIX_FILES["H_pred"], "Rho": MATRIX_FILES["Rho_pred"]}


@dataclass
class InferResult:
    """Where an inference run went and what it produced.

    output_dir: the folder holding ``<sid>/hamiltonian_pred.h5`` (``<run>/dft`` or ``inputs_dir/dft``).
    predicted:  structure ids written (empty with ``only_save_graph``).
    """

    run_dir: Path
    output_dir: Path
    graph_store: Path
    predicted: list[str] = field(default_factory=list)
    checkpoint: Path | None = None
    only_graph: bool = False


def check_against_model(infos: dict[str, StructureInfo], spec: ModelSpec, inputs_dir: Path) -> None:
    """DataError naming the structure when it has an element the model was not trained on, other
    shells for an element than the model's, or a different spinful flag."""
    known = {el: tuple(int(l) for l in ls) for el, ls in spec.elements_orbital_map.items()}
    for sid, info in infos.items():
        file = structure_path(inputs_dir, sid) / INFO_FILE
        if bool(info.spinful) != bool(spec.spinful):
            raise DataError(
                f"spinful = {str(info.spinful).lower()}, but the model was trained on "
                f"spinful = {str(spec.spinful).lower()} data",
                structure=sid,
                file=file,
                key="spinful",
            )
        for element, shells in info.elements_orbital_map.items():
            shells = tuple(int(l) for l in shells)
            if element not in known:
                raise DataError(
                    f"element {element} is not among the model's elements ({', '.join(sorted(known))})",
                    structure=sid,
                    file=file,
                    key="elements_orbital_map",
                )
            if shells != known[element]:
                raise DataError(
                    f"element {element} has shells {list(shells)}, the model was trained with "
                    f"{list(known[element])}",
                    structure=sid,
                    file=file,
                    key=f"elements_orbital_map.{element}",
                )


def _with_zero_overlap(graphs: Iterable[StructureGraph]) -> Iterator[StructureGraph]:
    """Neighbour-search graphs in an S store: no overlap values (zeros), shape mask kept."""
    for graph in graphs:
        if graph.overlap is None:
            graph.overlap = np.zeros(graph.label_mask.shape, dtype=graph.edge_vec.dtype)
        yield graph


def _inference_graphs(
    inputs_dir: Path,
    ids: Sequence[str],
    basis: CommonBasis,
    *,
    graph_type: str,
    dtype: np.dtype,
    workers: int,
    cutoff: float,
) -> Iterator[StructureGraph]:
    """Graphs of structures with overlap.h5 (graph_type), then of those without (neighbour search)."""
    from hamflow.graph.stage import build_graphs

    with_overlap = [sid for sid in ids if (structure_path(inputs_dir, sid) / MATRIX_FILES["S"]).is_file()]
    have = set(with_overlap)
    without = [sid for sid in ids if sid not in have]
    common = {"dtype": dtype, "workers": workers, "neighbour_cutoff": cutoff}
    yield from _with_zero_overlap(
        build_graphs(inputs_dir, with_overlap, basis, graph_type=graph_type, **common)
    )
    if without:
        LOG.info("%d structure(s) without overlap.h5: edges from the neighbour search", len(without))
        graphs = build_graphs(inputs_dir, without, basis, graph_type="Sap", **common)
        yield from (_with_zero_overlap(graphs) if graph_type == "S" else graphs)


def inference_store(cfg: InferConfig, ids: Sequence[str], spec: ModelSpec, *, workers: int) -> Path:
    """Build (or reuse, when its fingerprint matches) the inference graph store; return its path."""
    from hamflow.graph.stage import graph_dtype, structure_digest
    from hamflow.graph.store import StoreMeta, inputs_fingerprint, read_store_meta, store_path, write_store

    inputs_dir = Path(cfg.data.inputs_dir)
    graph = cfg.data.graph
    basis = CommonBasis(tuple(spec.shell_ls))
    dtype = graph_dtype(cfg.system.float_type)
    cutoff = spec.neighbour_cutoff
    settings = {
        "purpose": "inference",
        "graph_type": graph.graph_type,
        "storage_type": graph.storage_type,
        "basis": basis.to_string(),
        "elements_orbital_map": {el: list(ls) for el, ls in sorted(spec.elements_orbital_map.items())},
        "dtype": dtype.name,
        "neighbour_cutoff": cutoff,
        "data_dir_depth": cfg.data.dft.data_dir_depth,
    }
    inputs = [(sid, structure_digest(structure_path(inputs_dir, sid), graph.graph_type)) for sid in ids]
    fingerprint = inputs_fingerprint(settings, inputs)
    path = store_path(inputs_dir, graph.dataset_name, graph.graph_type, graph.storage_type)
    if path.is_file():
        try:
            old = read_store_meta(path)
        except DataError as error:
            LOG.warning("rebuilding the graph store: %s", error)
        else:
            if old.fingerprint == fingerprint:
                LOG.info("reusing graph store %s (%d structures)", path, len(old.ids))
                return path
            LOG.info("graph store %s is stale (other structures or settings): rebuilding", path)
    meta = StoreMeta(
        graph_type=graph.graph_type,
        storage_type=graph.storage_type,
        basis=basis,
        elements_orbital_map={el: tuple(ls) for el, ls in spec.elements_orbital_map.items()},
        spinful=bool(spec.spinful),
        dtype=dtype.name,
        settings=settings,
        inputs=inputs,
        fingerprint=fingerprint,
    )
    LOG.info("building graph store %s: %d structures, %d workers", path, len(ids), workers)
    graphs = _inference_graphs(
        inputs_dir, ids, basis, graph_type=graph.graph_type, dtype=dtype, workers=workers, cutoff=cutoff
    )
    try:
        write_store(path, graphs, meta)
    except OSError as error:
        raise DataError(f"cannot write the graph store: {error}", file=path) from None
    return path


def select_ids(cfg: InferConfig, ids: Sequence[str] | None) -> list[str]:
    """Structure ids under inputs_dir/dft (restricted to ``ids`` when given; unknown ids are an error).

    A folder at the structure level that lacks POSCAR or info.json (or a dead symlink) is an error
    naming it, never a structure silently left out of the prediction; with ``ids`` only the
    requested folders are checked. Stray files are logged.
    """
    dft_dir = Path(cfg.data.inputs_dir) / "dft"
    scanned = scan_dft_dir(dft_dir, cfg.data.dft.data_dir_depth)
    for stray in scanned.strays:
        LOG.warning("%s", stray_reason(dft_dir, stray))
    incomplete = scanned.incomplete if ids is None else [sid for sid in scanned.incomplete if sid in set(ids)]
    if incomplete:
        raise DataError(
            f"{len(incomplete)} folder(s) under {dft_dir} are not complete structures and would be left "
            f"out of the prediction; complete or remove them (first: "
            f"{incomplete_reason(dft_dir, incomplete[0])})",
            file=dft_dir,
        )
    found = scanned.ids
    if ids is not None:
        have = set(found)
        unknown = [sid for sid in ids if sid not in have]
        if unknown:
            raise DataError(
                f"{len(unknown)} requested structure(s) are not under {dft_dir} with {POSCAR_FILE} and "
                f"{INFO_FILE} (first: {unknown[0]})",
                file=dft_dir,
            )
        wanted = set(ids)
        found = [sid for sid in found if sid in wanted]
    if not found:
        raise DataError(
            f"no structure folders (with {POSCAR_FILE} and {INFO_FILE}) to predict, "
            f"data_dir_depth = {cfg.data.dft.data_dir_depth}",
            file=dft_dir,
        )
    return found


def run_inference(
    cfg: InferConfig, *, run_dir: str | Path | None = None, ids: Sequence[str] | None = None
) -> InferResult:
    """Predict for every structure of ``cfg`` (a resolved InferConfig); see the module docstring.

    run_dir: the run folder (default: a new ``<outputs_dir>/<timestamp>/``). ids: only these structures.
    Call :func:`hamflow.config.device.configure_jax_environment` before JAX starts (the CLI does).
    """
    from hamflow.config.compilation_cache import use_persistent_cache
    from hamflow.config.device import parse_device, select_jax_devices
    from hamflow.config.infer_config import dump_infer_config, infer_compilation_cache_path
    from hamflow.config.logging_setup import LOGGER_NAME, configure_logging
    from hamflow.config.precision import apply_float_type
    from hamflow.graph.stage import resolve_parallel_num
    from hamflow.train.run_dir import new_run_dir

    run = Path(run_dir) if run_dir is not None else new_run_dir(cfg.data.outputs_dir)
    run.mkdir(parents=True, exist_ok=True)
    handler = configure_logging(run / "deepx.log", cfg.system.log_level)
    try:
        atomic_write_text(run / RESOLVED_TOML, dump_infer_config(cfg))
        policy = apply_float_type(cfg.system.float_type)
        devices = select_jax_devices(parse_device(cfg.system.device))
        cache = use_persistent_cache(infer_compilation_cache_path(cfg))
        from hamflow.infer.predict import load_model_spec

        _, spec = load_model_spec(cfg.model.model_dir)
        inputs_dir = Path(cfg.data.inputs_dir)
        selected = select_ids(cfg, ids)
        infos = {
            sid: read_info(structure_path(inputs_dir, sid) / INFO_FILE, structure=sid) for sid in selected
        }
        check_against_model(infos, spec, inputs_dir)
        LOG.info(
            "hamflow infer: %d structures, run folder %s, devices %s, compilation cache %s",
            len(selected),
            run,
            devices,
            cache,
        )
        workers = resolve_parallel_num(cfg.data.graph.parallel_num)
        store_file = inference_store(cfg, selected, spec, workers=workers)
        output_dir = run / "dft" if cfg.process.infer.output_into == "to_output" else inputs_dir / "dft"
        result = InferResult(run_dir=run, output_dir=output_dir, graph_store=store_file)
        if cfg.data.graph.only_save_graph:
            LOG.info("only_save_graph = true: graph store written, no prediction")
            result.only_graph = True
            _write_record(run, result, spec, None)
            return result
        _predict_and_write(cfg, spec, store_file, output_dir, devices, policy, result)
        _write_record(run, result, spec, result.checkpoint)
        return result
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        handler.close()


class _Subset:
    """Some graphs of a store, as a GraphSource for :func:`hamflow.infer.predict.predict_graphs`."""

    def __init__(self, store: Any, indices: Sequence[int]) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def num_nodes(self) -> np.ndarray:
        return np.asarray(self.store.num_nodes)[self.indices]

    @property
    def num_edges(self) -> np.ndarray:
        return np.asarray(self.store.num_edges)[self.indices]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def get(self, index: int) -> StructureGraph:
        return self.store.get(int(self.indices[index]))


def _template_graph(store: Any) -> StructureGraph:
    """The smallest graph of ``store``, cut to its first 64 edges: the parameter shapes do not depend
    on the edges, and a large structure's whole batch would cost memory for nothing."""
    graph = store.get(int(np.argmin(np.asarray(store.num_edges))))
    keep = slice(0, min(graph.num_edges, 64))
    graph.edge_src, graph.edge_dst = graph.edge_src[keep], graph.edge_dst[keep]
    graph.edge_shift, graph.edge_vec = graph.edge_shift[keep], graph.edge_vec[keep]
    graph.label_mask = graph.label_mask[keep]
    graph.labels = None if graph.labels is None else graph.labels[keep]
    graph.overlap = None if graph.overlap is None else graph.overlap[keep]
    return graph


def _predict_and_write(
    cfg: InferConfig,
    spec: ModelSpec,
    store_file: Path,
    output_dir: Path,
    devices: list,
    policy: Any,
    result: InferResult,
) -> None:
    from hamflow.graph.store import GraphStore
    from hamflow.infer.chunked import ChunkedNetwork, predict_large_graph, resolve_chunk_edges
    from hamflow.infer.predict import (
        example_batch,
        graph_prediction,
        load_trained_model,
        make_predict_fn,
        output_dtype,
        predict_graphs,
        write_prediction,
    )

    store = GraphStore.open(store_file)
    infer = cfg.process.infer
    model = load_trained_model(
        cfg.model.model_dir,
        example_batch(_template_graph(store)),
        load_model_type=cfg.model.load_model_type,
        load_model_epoch=cfg.model.load_model_epoch,
        compute_dtype=policy.compute_dtype,
    )
    result.checkpoint = model.checkpoint.path
    real = np.dtype(policy.label_dtype)
    compute = np.result_type(real, np.complex64) if spec.spinful else real
    file_dtype = output_dtype(cfg.system.float_type, spec.spinful)
    file_name = OUTPUT_FILE.get(spec.target_type, OUTPUT_FILE["H"])
    chunk_edges = resolve_chunk_edges(infer.chunk_edges)
    edges_of = np.asarray(store.num_edges)
    large = [int(i) for i in np.nonzero(edges_of > chunk_edges)[0]]
    small = [int(i) for i in np.nonzero(edges_of <= chunk_edges)[0]]
    started = time.perf_counter()
    if small:
        predict_fn = make_predict_fn(
            model.apply_fn, model.normaliser, spinful=spec.spinful, out_dtype=compute
        )
        for count, (graph, blocks) in enumerate(
            predict_graphs(
                _Subset(store, small),
                predict_fn,
                model.params,
                batch_size=infer.dataloader.batch_size,
                multi_way_jit_num=infer.multi_way_jit_num,
                devices=devices,
            ),
            start=1,
        ):
            matrix = graph_prediction(
                graph, blocks, model.basis, spec.elements_orbital_map, symmetrize=infer.target_symmetrize
            )
            write_prediction(output_dir / graph.sid / file_name, matrix, file_dtype)
            result.predicted.append(graph.sid)
            if count % 100 == 0:
                LOG.info(
                    "%d / %d structures predicted (%.1f s)", count, len(store), time.perf_counter() - started
                )
    if large:
        LOG.info(
            "%d structure(s) with more than %d edges: predicted one by one in chunks of %d edges",
            len(large),
            chunk_edges,
            chunk_edges,
        )
        network = ChunkedNetwork(
            model.module,
            model.params,
            model.normaliser,
            spinful=spec.spinful,
            out_dtype=compute,
            chunk_edges=chunk_edges,
        )
        for index in large:
            graph = store.get(index)
            predict_large_graph(
                output_dir / graph.sid / file_name,
                graph,
                network,
                model.basis,
                spec.elements_orbital_map,
                symmetrize=infer.target_symmetrize,
                dtype=file_dtype,
            )
            result.predicted.append(graph.sid)
    LOG.info(
        "predicted %d structures in %.1f s -> %s/<sid>/%s",
        len(result.predicted),
        time.perf_counter() - started,
        output_dir,
        file_name,
    )


def _write_record(run: Path, result: InferResult, spec: ModelSpec, checkpoint: Path | None) -> None:
    record = {
        "target_type": spec.target_type,
        "output_dir": str(result.output_dir),
        "graph_store": str(result.graph_store),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "only_save_graph": result.only_graph,
        "predicted": sorted(result.predicted),
    }
    atomic_write_text(run / PREDICTIONS_FILE, json.dumps(record, indent=1) + "\n")
