"""Graph stores: many structure graphs in one HDF5 file (format in docs/graph-store.md).

Two storage types share one layout and one reader, :class:`GraphStore`:
  memory  uncompressed; opening it loads every array into RAM (fast batches, RAM grows with data);
  disk    chunked along the edge axis and gzip-compressed; opening it reads only the per-structure
          offsets, and :meth:`GraphStore.get` reads one structure's rows (resident memory stays flat).

Structures are concatenated along the node and edge axes with offsets (CSR style); ``get(k)`` slices
rows ``node_offsets[k]:node_offsets[k+1]`` and ``edge_offsets[k]:edge_offsets[k+1]``. The store also
records what produced it: the settings and a fingerprint over the inputs (structure ids with a
digest of their files), used to reuse an up-to-date store and to rebuild a stale one, and a content
digest of every structure's rows (``graphs/digests``, written at build time): :meth:`GraphStore.get`
checks it the first time it reads a structure, so an altered store is refused, never trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hamflow import __version__
from hamflow.atomic import atomic_path
from hamflow.errors import DataError
from hamflow.graph.basis import CommonBasis
from hamflow.graph.structure_graph import CARRIES_OVERLAP, LABEL_SOURCE, StructureGraph

STORE_FORMAT = "hamflow-graph-store"
STORE_FORMAT_VERSION = 2
STORAGE_TYPES: tuple[str, ...] = ("memory", "disk")

#: Structures buffered before one append to the file (fewer, larger HDF5 writes).
_WRITE_BUFFER_STRUCTURES = 256
#: Target uncompressed bytes of one chunk of a disk store's per-edge arrays.
_DISK_CHUNK_BYTES = 64 * 1024
_MEMORY_CHUNK_BYTES = 1024 * 1024
_GZIP_LEVEL = 1


def store_path(inputs_dir: str | Path, dataset_name: str, graph_type: str, storage_type: str) -> Path:
    """DeepH-pack's place for a graph file: ``inputs_dir/graph/<name>.<type>.<storage>.h5``."""
    return Path(inputs_dir) / "graph" / f"{dataset_name}.{graph_type}.{storage_type}.h5"


def inputs_fingerprint(settings: Mapping[str, Any], inputs: Iterable[tuple[str, str]]) -> str:
    """sha256 hex over the format, hamflow version, settings and the sorted (id, file digest) pairs."""
    document = {
        "format": [STORE_FORMAT, STORE_FORMAT_VERSION],
        "hamflow": __version__,
        "settings": dict(settings),
        "inputs": sorted([str(sid), str(digest)] for sid, digest in inputs),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass
class StoreMeta:
    """What a store holds and what produced it.

    graph_type:           H, S, HS, Rho or Sap.
    storage_type:         memory or disk.
    basis:                the common orbital basis (B orbitals).
    elements_orbital_map: {element: shell l's} of the dataset (to cut blocks back out of the basis).
    spinful:              blocks are (2B, 2B) complex.
    dtype:                real float dtype of edge vectors / overlap ("float32" or "float64").
    settings:             the graph settings that produced the store (JSON-able dict).
    inputs:               (structure id, file digest) of every structure considered, including
                          structures left out by validation (the fingerprint covers all of them).
    ids:                  structure ids in store order (filled by :func:`write_store`).
    fingerprint:          :func:`inputs_fingerprint` of settings and inputs.
    hamflow_version:      version that wrote the store.
    """

    graph_type: str
    storage_type: str
    basis: CommonBasis
    elements_orbital_map: dict[str, tuple[int, ...]]
    spinful: bool
    dtype: str
    settings: dict[str, Any]
    inputs: list[tuple[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    fingerprint: str = ""
    hamflow_version: str = __version__

    @property
    def block_size(self) -> int:
        """b = B, or 2B for spinful data."""
        return self.basis.size * (2 if self.spinful else 1)

    @property
    def has_labels(self) -> bool:
        return LABEL_SOURCE[self.graph_type] is not None

    @property
    def has_overlap(self) -> bool:
        return CARRIES_OVERLAP[self.graph_type]

    @property
    def label_dtype(self) -> np.dtype:
        real = np.dtype(self.dtype)
        return np.result_type(real, np.complex64) if self.spinful else real

    @property
    def excluded_ids(self) -> list[str]:
        """Inputs that are not in the store (left out by validation)."""
        kept = set(self.ids)
        return sorted(sid for sid, _ in self.inputs if sid not in kept)


def _per_edge_arrays(meta: StoreMeta) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    b = meta.block_size
    real = np.dtype(meta.dtype)
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {
        "edges/src": ((), np.dtype(np.int32)),
        "edges/dst": ((), np.dtype(np.int32)),
        "edges/shift": ((3,), np.dtype(np.int32)),
        "edges/vec": ((3,), real),
        "edges/label_mask": ((b, b), np.dtype(bool)),
    }
    if meta.has_labels:
        arrays["edges/labels"] = ((b, b), meta.label_dtype)
    if meta.has_overlap:
        arrays["edges/overlap"] = ((b, b), real)
    return arrays


_PER_NODE_ARRAYS: dict[str, tuple[tuple[int, ...], np.dtype]] = {
    "nodes/atomic_numbers": ((), np.dtype(np.int32)),
    "nodes/positions": ((3,), np.dtype(np.float64)),
}

#: the StructureGraph field stored in each per-node / per-edge dataset
_FIELDS = {
    "nodes/atomic_numbers": "atomic_numbers",
    "nodes/positions": "positions",
    "edges/src": "edge_src",
    "edges/dst": "edge_dst",
    "edges/shift": "edge_shift",
    "edges/vec": "edge_vec",
    "edges/label_mask": "label_mask",
    "edges/labels": "labels",
    "edges/overlap": "overlap",
}


def graph_digest(graph: StructureGraph, dtypes: Mapping[str, np.dtype]) -> str:
    """blake2b (128 bit) hex over one structure's rows as stored (each array cast to ``dtypes[name]``)
    and its lattice: the content digest written at build time and checked on read."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(dtypes):
        array = np.ascontiguousarray(np.asarray(getattr(graph, _FIELDS[name]), dtype=dtypes[name]))
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(np.ascontiguousarray(np.asarray(graph.lattice, dtype=np.float64)).tobytes())
    return digest.hexdigest()


def _stored_dtypes(meta: StoreMeta) -> dict[str, np.dtype]:
    return {name: dtype for name, (_, dtype) in {**_PER_NODE_ARRAYS, **_per_edge_arrays(meta)}.items()}


class _Writer:
    """Appends structure graphs to growing HDF5 datasets, a buffer at a time."""

    def __init__(self, handle: h5py.File, meta: StoreMeta) -> None:
        self.handle = handle
        self.meta = meta
        self.edge_arrays = _per_edge_arrays(meta)
        disk = meta.storage_type == "disk"
        chunk_bytes = _DISK_CHUNK_BYTES if disk else _MEMORY_CHUNK_BYTES
        for name, (shape, dtype) in {**_PER_NODE_ARRAYS, **self.edge_arrays}.items():
            row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            rows = int(min(max(1, chunk_bytes // row_bytes), 1 << 16))
            options: dict[str, Any] = {}
            if disk:
                options = {"compression": "gzip", "compression_opts": _GZIP_LEVEL, "shuffle": True}
            handle.create_dataset(
                name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=(rows, *shape),
                **options,
            )
        self.node_offsets = [0]
        self.edge_offsets = [0]
        self.lattices: list[np.ndarray] = []
        self.ids: list[str] = []
        self.digests: list[str] = []
        self.dtypes = _stored_dtypes(meta)
        self.buffer: list[StructureGraph] = []

    def add(self, graph: StructureGraph) -> None:
        b = self.meta.block_size
        if graph.label_mask.shape[1:] != (b, b):
            raise DataError(
                f"graph blocks {graph.label_mask.shape[1:]} differ from the store's ({b}, {b})",
                structure=graph.sid,
            )
        if self.meta.has_labels and graph.labels is None:
            raise DataError(
                f"graph has no labels but the store is of type {self.meta.graph_type}", structure=graph.sid
            )
        self.ids.append(graph.sid)
        self.digests.append(graph_digest(graph, self.dtypes))
        self.node_offsets.append(self.node_offsets[-1] + graph.num_nodes)
        self.edge_offsets.append(self.edge_offsets[-1] + graph.num_edges)
        self.lattices.append(np.asarray(graph.lattice, dtype=np.float64))
        self.buffer.append(graph)
        if len(self.buffer) >= _WRITE_BUFFER_STRUCTURES:
            self.flush()

    def _append(self, name: str, parts: list[np.ndarray]) -> None:
        dataset = self.handle[name]
        data = np.concatenate(parts) if parts else np.zeros((0, *dataset.shape[1:]), dtype=dataset.dtype)
        start = dataset.shape[0]
        dataset.resize(start + data.shape[0], axis=0)
        if data.shape[0]:
            dataset[start:] = data.astype(dataset.dtype, copy=False)

    def flush(self) -> None:
        if not self.buffer:
            return
        graphs, self.buffer = self.buffer, []
        self._append("nodes/atomic_numbers", [g.atomic_numbers for g in graphs])
        self._append("nodes/positions", [g.positions for g in graphs])
        columns = {
            "edges/src": lambda g: g.edge_src,
            "edges/dst": lambda g: g.edge_dst,
            "edges/shift": lambda g: g.edge_shift,
            "edges/vec": lambda g: g.edge_vec,
            "edges/label_mask": lambda g: g.label_mask,
            "edges/labels": lambda g: g.labels,
            "edges/overlap": lambda g: g.overlap,
        }
        for name in self.edge_arrays:
            self._append(name, [columns[name](g) for g in graphs])

    def finish(self) -> None:
        self.flush()
        h = self.handle
        h.create_dataset("graphs/node_offsets", data=np.asarray(self.node_offsets, dtype=np.int64))
        h.create_dataset("graphs/edge_offsets", data=np.asarray(self.edge_offsets, dtype=np.int64))
        lattices = np.stack(self.lattices) if self.lattices else np.zeros((0, 3, 3))
        h.create_dataset("graphs/lattice", data=lattices)
        strings = h5py.string_dtype("utf-8")
        h.create_dataset("ids", data=np.array(self.ids, dtype=object), dtype=strings)
        h.create_dataset("graphs/digests", data=np.array(self.digests, dtype=object), dtype=strings)
        h.create_dataset(
            "inputs/ids", data=np.array([s for s, _ in self.meta.inputs], dtype=object), dtype=strings
        )
        h.create_dataset(
            "inputs/digests", data=np.array([d for _, d in self.meta.inputs], dtype=object), dtype=strings
        )
        meta = self.meta
        attrs = {
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "hamflow_version": meta.hamflow_version,
            "graph_type": meta.graph_type,
            "storage_type": meta.storage_type,
            "basis": meta.basis.to_string(),
            "basis_shell_ls": np.asarray(meta.basis.shell_ls, dtype=np.int64),
            "basis_size": meta.basis.size,
            "block_size": meta.block_size,
            "spinful": bool(meta.spinful),
            "dtype": meta.dtype,
            "label_dtype": meta.label_dtype.name if meta.has_labels else "",
            "has_labels": meta.has_labels,
            "has_overlap": meta.has_overlap,
            "elements_orbital_map": json.dumps(
                {el: list(ls) for el, ls in sorted(meta.elements_orbital_map.items())}
            ),
            "settings": json.dumps(meta.settings, sort_keys=True),
            "fingerprint": meta.fingerprint,
            "num_structures": len(self.ids),
            "num_nodes_total": self.node_offsets[-1],
            "num_edges_total": self.edge_offsets[-1],
        }
        for key, value in attrs.items():
            h.attrs[key] = value


def write_store(path: str | Path, graphs: Iterable[StructureGraph], meta: StoreMeta) -> None:
    """Write the graphs (streamed, in order) and ``meta`` to a store at ``path``, atomically.

    ``meta.ids`` is set from the graphs (if given beforehand it must match them). An empty
    ``meta.fingerprint`` is computed from settings and inputs.
    """
    if meta.storage_type not in STORAGE_TYPES:
        raise ValueError(f"storage_type must be one of {STORAGE_TYPES}, got {meta.storage_type!r}")
    if not meta.fingerprint:
        meta.fingerprint = inputs_fingerprint(meta.settings, meta.inputs)
    expected_ids = list(meta.ids)
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as handle:
        writer = _Writer(handle, meta)
        for graph in graphs:
            writer.add(graph)
        if expected_ids and expected_ids != writer.ids:
            raise ValueError("the graphs' structure ids differ from meta.ids")
        meta.ids = list(writer.ids)
        if len(set(meta.ids)) != len(meta.ids):
            duplicate = next(sid for sid, count in Counter(meta.ids).items() if count > 1)
            raise DataError("structure appears twice in the store", structure=duplicate, file=path)
        writer.finish()


def _chunk_cache(handle: h5py.File, buffer_mb: int) -> tuple[int, int]:
    """(bytes, slots) of HDF5's per-dataset chunk cache that share ``buffer_mb`` MiB out over the
    datasets a lazy store reads (one cache each); slots ~10x the chunks held, HDF5's advice."""
    count = sum(1 for name in _FIELDS if name in handle) or 1
    nbytes = max(buffer_mb * 2**20 // count, 1)
    return nbytes, max(521, 10 * (nbytes // _DISK_CHUNK_BYTES))


def _storage_type(handle: h5py.File) -> str:
    """The ``storage_type`` attribute of an open store ("" if absent; full checks in read_store_meta)."""
    return _attr_text(handle.attrs.get("storage_type", ""))


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [_attr_text(v) for v in dataset[()]]


def read_store_meta(path: str | Path, handle: h5py.File | None = None) -> StoreMeta:
    """The metadata of a store (attributes and id lists only); DataError if ``path`` is not a store."""
    path = Path(path)
    if handle is None:
        try:
            with h5py.File(path, "r") as opened:
                return read_store_meta(path, opened)
        except FileNotFoundError:
            raise DataError("graph store not found", file=path) from None
        except OSError as error:
            raise DataError(f"cannot open as HDF5 (truncated or corrupt?): {error}", file=path) from None
    attrs = handle.attrs
    if _attr_text(attrs.get("format", "")) != STORE_FORMAT:
        raise DataError(f"not a hamflow graph store (no format = {STORE_FORMAT!r})", file=path)
    version = int(attrs.get("format_version", -1))
    if version != STORE_FORMAT_VERSION:
        raise DataError(
            f"graph store format version {version}, this hamflow reads {STORE_FORMAT_VERSION}: rebuild it "
            "(`hamflow graph TRAIN.toml`)",
            file=path,
        )
    return StoreMeta(
        graph_type=_attr_text(attrs["graph_type"]),
        storage_type=_attr_text(attrs["storage_type"]),
        basis=CommonBasis(tuple(int(l) for l in attrs["basis_shell_ls"])),
        elements_orbital_map={
            el: tuple(ls) for el, ls in json.loads(_attr_text(attrs["elements_orbital_map"])).items()
        },
        spinful=bool(attrs["spinful"]),
        dtype=_attr_text(attrs["dtype"]),
        settings=json.loads(_attr_text(attrs["settings"])),
        inputs=list(zip(_strings(handle["inputs/ids"]), _strings(handle["inputs/digests"]), strict=True)),
        ids=_strings(handle["ids"]),
        fingerprint=_attr_text(attrs["fingerprint"]),
        hamflow_version=_attr_text(attrs["hamflow_version"]),
    )


class GraphStore:
    """Read side of a store: ``get(k)`` returns the k-th structure graph (store order = ``ids``).

    A memory store (or ``lazy=False``) is read whole on :meth:`open` and the file closed; a disk store
    (or ``lazy=True``) keeps the file open and reads one structure's rows per :meth:`get`.
    """

    def __init__(self, path: Path, meta: StoreMeta, handle: h5py.File | None, arrays: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._handle = handle
        self._arrays = arrays
        self._node_offsets = np.asarray(arrays["graphs/node_offsets"][()], dtype=np.int64)
        self._edge_offsets = np.asarray(arrays["graphs/edge_offsets"][()], dtype=np.int64)
        self._lattice = np.asarray(arrays["graphs/lattice"][()], dtype=np.float64)
        self._digests = _strings(arrays["graphs/digests"])
        self._dtypes = _stored_dtypes(meta)
        self._verified: set[int] = set()

    @classmethod
    def open(cls, path: str | Path, *, lazy: bool | None = None, buffer_mb: int | None = None) -> GraphStore:
        """Open a store; ``lazy`` defaults to True for disk stores and False for memory stores.

        buffer_mb: for a lazily read store, the in-memory buffer in MiB (``data.graph.disk_mem_buffer_size``):
        HDF5's chunk cache, shared out evenly over the arrays :meth:`get` reads (each keeps its own
        cache); None keeps HDF5's default per array. Ignored when the store is read whole.
        """
        path = Path(path)
        if buffer_mb is not None and buffer_mb < 1:
            raise ValueError(f"buffer_mb must be >= 1 (MiB), got {buffer_mb}")
        try:
            handle = h5py.File(path, "r")
            if buffer_mb is not None and (lazy or (lazy is None and _storage_type(handle) == "disk")):
                nbytes, slots = _chunk_cache(handle, buffer_mb)
                handle.close()
                handle = h5py.File(path, "r", rdcc_nbytes=nbytes, rdcc_nslots=slots)
        except FileNotFoundError:
            raise DataError("graph store not found", file=path) from None
        except OSError as error:
            raise DataError(f"cannot open as HDF5 (truncated or corrupt?): {error}", file=path) from None
        try:
            meta = read_store_meta(path, handle)
            names = ["graphs/node_offsets", "graphs/edge_offsets", "graphs/lattice", "graphs/digests"]
            names += list(_PER_NODE_ARRAYS)
            names += list(_per_edge_arrays(meta))
            missing = [name for name in names if name not in handle]
            if missing:
                raise DataError("graph store is incomplete", file=path, key=missing[0])
            if lazy is None:
                lazy = meta.storage_type == "disk"
            if lazy:
                return cls(path, meta, handle, {name: handle[name] for name in names})
            arrays = {name: handle[name][()] for name in names}
        except BaseException:
            handle.close()
            raise
        handle.close()
        return cls(path, meta, None, arrays)

    @property
    def ids(self) -> list[str]:
        return self.meta.ids

    @property
    def num_nodes(self) -> np.ndarray:
        """(S,) int64 atoms per structure."""
        return np.diff(self._node_offsets)

    @property
    def num_edges(self) -> np.ndarray:
        """(S,) int64 edges (atom pairs) per structure."""
        return np.diff(self._edge_offsets)

    def __len__(self) -> int:
        return len(self.meta.ids)

    def get(self, index: int) -> StructureGraph:
        """The graph of structure ``index`` (0 <= index < len(store))."""
        if not 0 <= index < len(self):
            raise IndexError(f"structure index {index} out of range 0..{len(self) - 1}")
        nodes = slice(int(self._node_offsets[index]), int(self._node_offsets[index + 1]))
        edges = slice(int(self._edge_offsets[index]), int(self._edge_offsets[index + 1]))
        a = self._arrays
        labels = a["edges/labels"][edges] if "edges/labels" in a else None
        overlap = a["edges/overlap"][edges] if "edges/overlap" in a else None
        graph = StructureGraph(
            sid=self.meta.ids[index],
            atomic_numbers=a["nodes/atomic_numbers"][nodes],
            positions=a["nodes/positions"][nodes],
            lattice=self._lattice[index],
            edge_src=a["edges/src"][edges],
            edge_dst=a["edges/dst"][edges],
            edge_shift=a["edges/shift"][edges],
            edge_vec=a["edges/vec"][edges],
            labels=labels,
            label_mask=a["edges/label_mask"][edges],
            overlap=overlap,
        )
        if index not in self._verified:
            self._check_digest(index, graph)
        return graph

    def _check_digest(self, index: int, graph: StructureGraph) -> None:
        """DataError unless the rows of structure ``index`` hash to the digest written at build time."""
        if graph_digest(graph, self._dtypes) != self._digests[index]:
            raise DataError(
                "content differs from the digest written when the store was built (altered or corrupt): "
                "delete the store and rebuild it with `hamflow graph TRAIN.toml`",
                file=self.path,
                structure=self.meta.ids[index],
            )
        self._verified.add(index)

    def altered(self, indices: Sequence[int] | None = None) -> list[str]:
        """Ids among ``indices`` (default: all) whose content differs from their build-time digest."""
        bad = []
        for index in range(len(self)) if indices is None else indices:
            try:
                self.get(int(index))
            except DataError:
                bad.append(self.meta.ids[int(index)])
        return bad

    def __iter__(self) -> Iterator[StructureGraph]:
        for index in range(len(self)):
            yield self.get(index)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARD_MUST_AGREE = ("graph_type", "storage_type", "spinful", "dtype", "settings")


def join_shards(shard_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Concatenate shard stores (in the order given) into one store at ``out_path``, atomically.

    The shards must agree on graph type, storage type, basis, spin, dtype and settings, and hold
    disjoint structures; the joined fingerprint covers the union of the shards' inputs, so it equals
    that of one unsharded build of the same structures.
    """
    if not shard_paths:
        raise DataError("no shard stores to join", file=out_path)
    metas = [read_store_meta(path) for path in shard_paths]
    first = metas[0]
    orbital_map: dict[str, tuple[int, ...]] = {}
    seen_ids: dict[str, Path] = {}
    inputs: list[tuple[str, str]] = []
    for path, meta in zip(shard_paths, metas, strict=True):
        for key in _SHARD_MUST_AGREE:
            if getattr(meta, key) != getattr(first, key):
                raise DataError(
                    f"shard differs from {shard_paths[0]} in {key}: "
                    f"{getattr(meta, key)!r} vs {getattr(first, key)!r}",
                    file=path,
                )
        if meta.basis != first.basis:
            raise DataError(f"shard basis {meta.basis.to_string()} != {first.basis.to_string()}", file=path)
        for element, shells in meta.elements_orbital_map.items():
            if orbital_map.setdefault(element, tuple(shells)) != tuple(shells):
                raise DataError(
                    f"element {element} has shells {list(shells)} here, "
                    f"{list(orbital_map[element])} in another shard",
                    file=path,
                    key="elements_orbital_map",
                )
        for sid in meta.ids:
            if sid in seen_ids:
                raise DataError(f"structure is also in shard {seen_ids[sid]}", structure=sid, file=path)
            seen_ids[sid] = Path(path)
        inputs.extend(meta.inputs)
    joined = StoreMeta(
        graph_type=first.graph_type,
        storage_type=first.storage_type,
        basis=first.basis,
        elements_orbital_map=orbital_map,
        spinful=first.spinful,
        dtype=first.dtype,
        settings=first.settings,
        inputs=inputs,
    )

    def graphs() -> Iterator[StructureGraph]:
        for path in shard_paths:
            with GraphStore.open(path, lazy=True) as store:
                yield from store

    write_store(out_path, graphs(), joined)
