"""Graph stores (memory and disk), metadata, shard join, and collation into padded batches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from graph_synthetic import WATER_MAP, synthetic_structure

from hamflow.errors import ConfigError, DataError
from hamflow.graph.basis import common_basis
from hamflow.graph.collate import collate
from hamflow.graph.store import GraphStore, StoreMeta, join_shards, read_store_meta, store_path, write_store
from hamflow.graph.structure_graph import StructureGraph, build_structure_graph

BASIS = common_basis(WATER_MAP)
FIELDS = (
    "atomic_numbers",
    "positions",
    "lattice",
    "edge_src",
    "edge_dst",
    "edge_shift",
    "edge_vec",
    "label_mask",
)


def _graphs(count: int, *, spinful: bool = False, graph_type: str = "HS") -> list[StructureGraph]:
    out = []
    for k in range(count):
        elements = ("O", "H", "H") if k % 2 == 0 else ("O", "H")
        structure = synthetic_structure(
            f"s{k}", elements=elements, seed=k, spinful=spinful, periodic=k % 3 == 0
        )
        out.append(build_structure_graph(structure, BASIS, graph_type=graph_type))
    return out


def _meta(storage_type: str, *, spinful: bool = False, graph_type: str = "HS", ids=()) -> StoreMeta:
    return StoreMeta(
        graph_type=graph_type,
        storage_type=storage_type,
        basis=BASIS,
        elements_orbital_map=dict(WATER_MAP),
        spinful=spinful,
        dtype="float32",
        settings={"graph_type": graph_type, "basis": BASIS.to_string()},
        inputs=[(sid, f"digest-{sid}") for sid in ids],
    )


def _assert_same_graph(a: StructureGraph, b: StructureGraph) -> None:
    assert a.sid == b.sid
    for name in FIELDS + ("labels", "overlap"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_store_path_is_deeph_packs_place(tmp_path):
    assert store_path(tmp_path, "DEMO", "HS", "disk") == tmp_path / "graph" / "DEMO.HS.disk.h5"


@pytest.mark.parametrize("spinful", [False, True])
def test_memory_and_disk_stores_give_back_the_graphs_and_identical_batches(tmp_path, spinful):
    graphs = _graphs(7, spinful=spinful)
    ids = [g.sid for g in graphs]
    stores = {}
    for storage in ("memory", "disk"):
        path = tmp_path / f"x.HS.{storage}.h5"
        write_store(path, iter(graphs), _meta(storage, spinful=spinful, ids=ids))
        stores[storage] = GraphStore.open(path)
    memory, disk = stores["memory"], stores["disk"]
    assert memory._handle is None and disk._handle is not None  # memory: loaded whole; disk: lazy
    for store in (memory, disk):
        assert store.ids == ids
        assert store.num_nodes.tolist() == [g.num_nodes for g in graphs]
        assert store.num_edges.tolist() == [g.num_edges for g in graphs]
        assert store.meta.basis == BASIS and store.meta.spinful == spinful
        for k, graph in enumerate(graphs):
            _assert_same_graph(store.get(k), graph)
    sizes = {"num_nodes": 16, "num_edges": int(sum(g.num_edges for g in graphs[:3])) + 5, "num_graphs": 4}
    for start in (0, 3):
        picks = range(start, start + 3)
        a = collate([memory.get(k) for k in picks], **sizes)
        b = collate([disk.get(k) for k in picks], **sizes)
        for name, x, y in zip(a._fields, a, b, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)
    with h5py.File(tmp_path / "x.HS.disk.h5") as handle:
        assert handle["edges/labels"].compression == "gzip"
        assert handle["edges/labels"].chunks[0] < handle["edges/labels"].shape[0]
    disk.close()


def test_metadata_round_trip(tmp_path):
    graphs = _graphs(3)
    meta = _meta("memory", ids=["s0", "s1", "s2", "bad"])
    write_store(tmp_path / "m.h5", graphs, meta)
    back = read_store_meta(tmp_path / "m.h5")
    assert back.ids == ["s0", "s1", "s2"]
    assert back.excluded_ids == ["bad"]
    assert back.fingerprint == meta.fingerprint and len(back.fingerprint) == 64
    assert back.elements_orbital_map == {"O": (0, 0, 1, 1, 2), "H": (0, 0, 1)}
    assert back.settings == meta.settings and back.dtype == "float32" and back.graph_type == "HS"


def test_a_file_that_is_not_a_store_is_reported(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = 1
    with pytest.raises(DataError, match="other.h5: not a hamflow graph store"):
        GraphStore.open(tmp_path / "other.h5")
    with pytest.raises(DataError, match="graph store not found"):
        GraphStore.open(tmp_path / "absent.h5")


def test_joined_shards_equal_one_unsharded_store(tmp_path):
    graphs = _graphs(5)
    ids = [g.sid for g in graphs]
    write_store(tmp_path / "whole.h5", graphs, _meta("disk", ids=ids))
    write_store(tmp_path / "a.h5", graphs[:2], _meta("disk", ids=ids[:2]))
    write_store(tmp_path / "b.h5", graphs[2:], _meta("disk", ids=ids[2:]))
    join_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "joined.h5")
    with GraphStore.open(tmp_path / "whole.h5") as whole, GraphStore.open(tmp_path / "joined.h5") as joined:
        assert joined.meta.fingerprint == whole.meta.fingerprint
        assert joined.ids == ids
        for k in range(len(ids)):
            _assert_same_graph(joined.get(k), whole.get(k))
    with pytest.raises(DataError, match="structure s0: .*also in shard"):
        join_shards([tmp_path / "a.h5", tmp_path / "a.h5"], tmp_path / "twice.h5")
    write_store(tmp_path / "c.h5", graphs[2:], _meta("memory", ids=ids[2:]))
    with pytest.raises(DataError, match="c.h5: shard differs .* in storage_type"):
        join_shards([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "mixed.h5")
    assert not (tmp_path / "twice.h5").exists() and not (tmp_path / "mixed.h5").exists()


def test_a_failed_write_leaves_no_file(tmp_path):
    def broken():
        yield from _graphs(2)
        raise DataError("boom", structure="s2")

    with pytest.raises(DataError, match="boom"):
        write_store(tmp_path / "x.h5", broken(), _meta("memory"))
    assert list(tmp_path.iterdir()) == []


def test_collate_pads_and_offsets():
    graphs = _graphs(2)
    n, e = graphs[0].num_nodes + graphs[1].num_nodes, graphs[0].num_edges + graphs[1].num_edges
    batch = collate(graphs, num_nodes=n + 3, num_edges=e + 4, num_graphs=3)
    assert batch.num_nodes == n + 3 and batch.num_edges == e + 4 and batch.num_graphs == 3
    assert batch.node_mask.tolist() == [True] * n + [False] * 3
    assert batch.graph_mask.tolist() == [True, True, False]
    assert batch.atomic_numbers[n:].tolist() == [0, 0, 0]
    e0, n0 = graphs[0].num_edges, graphs[0].num_nodes
    np.testing.assert_array_equal(batch.edge_src[e0:e], graphs[1].edge_src + n0)
    np.testing.assert_array_equal(batch.edge_dst[e0:e], graphs[1].edge_dst + n0)
    assert batch.edge_graph[:e].tolist() == [0] * e0 + [1] * (e - e0)
    assert not batch.edge_mask[e:].any() and not batch.label_mask[e:].any()
    assert (
        (batch.edge_src[e:] == 0).all() and (batch.labels[e:] == 0).all() and (batch.overlap[e:] == 0).all()
    )
    np.testing.assert_array_equal(batch.labels[e0:e], graphs[1].labels)
    np.testing.assert_array_equal(batch.overlap[:e0], graphs[0].overlap)
    assert batch.edge_onsite.sum() == n
    assert batch.labels.dtype == np.float32 and batch.edge_vec.dtype == np.float32
    with pytest.raises(ValueError, match="do not fit"):
        collate(graphs, num_nodes=n - 1, num_edges=e, num_graphs=2)


def test_collate_of_graphs_without_labels_gives_zeros():
    graphs = _graphs(2, graph_type="Sap")
    total = sum(g.num_edges for g in graphs)
    batch = collate(graphs, num_nodes=10, num_edges=total, num_graphs=2)
    assert batch.labels.shape == (total, BASIS.size, BASIS.size)
    assert not batch.labels.any() and not batch.overlap.any() and batch.label_mask.any()


def _cache_bytes(store: GraphStore) -> list[int]:
    """HDF5 chunk-cache size (bytes) of every array a lazy store reads."""
    names = [name for name in store._arrays if name.startswith(("nodes/", "edges/"))]
    return [store._arrays[name].id.get_access_plist().get_chunk_cache()[1] for name in names]


def test_disk_mem_buffer_size_sets_the_disk_stores_chunk_cache(tmp_path):
    """data.graph.disk_mem_buffer_size (MiB) is the chunk cache of a disk store read while training,
    shared out over its arrays; without it (GraphStore.open's default) HDF5's own per-array cache stays."""
    from pathlib import Path

    from hamflow.config.train_config import load_train_config, with_overrides
    from hamflow.graph.stage import open_graph_store

    graphs = _graphs(3)
    ids = [g.sid for g in graphs]
    write_store(tmp_path / "x.disk.h5", graphs, _meta("disk", ids=ids))
    write_store(tmp_path / "x.memory.h5", graphs, _meta("memory", ids=ids))
    seed = load_train_config(Path(__file__).resolve().parents[2] / "config" / "train.toml")
    cfg = with_overrides(seed, {"data.graph.disk_mem_buffer_size": 64})
    with open_graph_store(cfg, tmp_path / "x.disk.h5") as store:
        sizes = _cache_bytes(store)
        assert len(sizes) >= 7 and len(set(sizes)) == 1
        assert 64 * 2**20 - len(sizes) < sum(sizes) <= 64 * 2**20
        assert [g.sid for g in store] == ids  # reads as before
    assert seed.data.graph.disk_mem_buffer_size == 2048  # the template's default
    with open_graph_store(seed, tmp_path / "x.disk.h5") as store:
        assert sum(_cache_bytes(store)) == pytest.approx(2048 * 2**20, abs=64)
    with GraphStore.open(tmp_path / "x.disk.h5") as store, h5py.File(tmp_path / "x.disk.h5") as plain:
        default = plain["edges/vec"].id.get_access_plist().get_chunk_cache()[1]
        assert set(_cache_bytes(store)) == {default}  # no buffer given: HDF5's own
    with open_graph_store(cfg, tmp_path / "x.memory.h5") as store:
        assert store._handle is None  # a memory store is read whole: no buffer
    with pytest.raises(ConfigError, match=r"\[data.graph.disk_mem_buffer_size\] = 0"):
        with_overrides(seed, {"data.graph.disk_mem_buffer_size": 0})
