"""Large structures: chunked network == whole graph, streamed file == the old writer's, the neighbour
search, and the memory-bound chunk size (hamflow.infer.chunked, hamflow.infer.stream_write)."""

from __future__ import annotations

import itertools

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from cache_events import CacheEvents
from hamflow.data.poscar import Poscar
from hamflow.graph.basis import CommonBasis
from hamflow.graph.collate import collate
from hamflow.graph.neighbours import neighbour_edges
from hamflow.graph.structure_graph import StructureGraph
from hamflow.infer.chunked import ChunkedNetwork, chunk_edges_for_memory, resolve_chunk_edges
from hamflow.infer.predict import graph_prediction, make_predict_fn, write_prediction
from hamflow.infer.stream_write import mirror_index, write_streamed_prediction
from hamflow.nn.model import build_model, init_params
from hamflow.train.normaliser import fit_normaliser

SHELLS = (0, 0, 1, 1, 2)
ORBITALS = {"Si": SHELLS}
BASIS = CommonBasis(SHELLS)
CUTOFF = 4.6  # Angstrom: the first two neighbour shells of Si (16 neighbours), a few edges per atom
DIAMOND = np.array(
    [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.25, 0.75, 0.75],
     [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]
)  # fmt: skip


def _si_poscar(cells: int, seed: int = 0) -> Poscar:
    grid = np.array(list(itertools.product(range(cells), repeat=3)), dtype=float)
    fractional = (grid[:, None, :] + DIAMOND[None]).reshape(-1, 3)
    positions = fractional * 5.431 + np.random.default_rng(seed).normal(0, 0.05, fractional.shape)
    return Poscar("Si", np.eye(3) * 5.431 * cells, ("Si",) * positions.shape[0], positions)


def _graph(poscar: Poscar, labels: bool = False) -> StructureGraph:
    src, dst, shift = neighbour_edges(poscar, CUTOFF)
    lattice, positions = poscar.lattice, poscar.positions
    size = BASIS.size
    return StructureGraph(
        sid="si",
        atomic_numbers=np.full(poscar.num_atoms, 14, np.int32),
        positions=positions,
        lattice=lattice,
        edge_src=src,
        edge_dst=dst,
        edge_shift=shift,
        edge_vec=(positions[dst] + shift @ lattice - positions[src]).astype(np.float32),
        labels=np.random.default_rng(1).normal(0, 1, (src.shape[0], size, size)).astype(np.float32)
        if labels
        else None,
        label_mask=np.ones((src.shape[0], size, size), bool),
        overlap=None,
    )


@pytest.fixture(scope="module")
def si64() -> StructureGraph:
    return _graph(_si_poscar(2))


@pytest.fixture(scope="module")
def normaliser():
    """Fitted on seeded random labels: it has the two-centre, on-site and environment baselines,
    whose per-atom neighbour sums the chunked path must add up over the chunks."""
    fitted = fit_normaliser([_graph(_si_poscar(1, seed=3), labels=True)], SHELLS)
    assert fitted.onsite_baseline is not None and fitted.environment_baseline is not None
    return fitted


@pytest.mark.parametrize(
    ("net_type", "irreps", "parity"),
    [
        ("sparrow", "8x0e+4x1o+4x1e+2x2e+2x2o+2x3o+2x3e+2x4e", True),
        pytest.param("eagle", "8x0e+4x1e+4x2e+2x3e+2x4e", False, marks=pytest.mark.slow),  # ~1 min loaded
    ],
)
def test_chunked_prediction_equals_whole_graph(si64, normaliser, net_type, irreps, parity):
    module = build_model(
        net_type, SHELLS, net_irreps=irreps, num_blocks=2, rmax=CUTOFF, consider_parity=parity
    )
    batch = collate([si64], num_nodes=si64.num_nodes, num_edges=si64.num_edges, num_graphs=1)
    params = init_params(module, batch, seed=0)["params"]

    def apply_fn(p, b):
        return module.apply({"params": p}, b)

    predict = make_predict_fn(apply_fn, normaliser, spinful=False, out_dtype=jnp.float32)
    stacked = type(batch)(*(np.asarray(field)[None] for field in batch))
    whole = np.asarray(predict(params, stacked))[0]

    chunk = 300  # not a divisor of the edge count: the last chunk is padded
    assert si64.num_edges > 3 * chunk and si64.num_edges % chunk
    network = ChunkedNetwork(
        module, params, normaliser, spinful=False, out_dtype=jnp.float32, chunk_edges=chunk
    )
    nodes, edges, terms = network.features(si64)
    rows = np.random.default_rng(0).permutation(si64.num_edges)  # any edges in any order
    chunked = np.empty_like(whole)
    for start in range(0, rows.shape[0], chunk):
        part = rows[start : start + chunk]
        chunked[part] = network.blocks(si64, nodes, edges, terms, part)
    scale = np.abs(whole).max()
    assert scale > 0.1
    # float32 rounding: the per-atom sums add in another order; through two blocks with layer norms
    # that is ~2e-6 of the largest entry here (a wrong or missing sum over the chunks is ~1e-1)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=5e-6 * scale)


def test_programs_built_ahead_equal_the_plain_path(si64, normaliser):
    """``build_ahead`` builds every step program for the graph's shapes before the first is needed:
    the features and blocks equal those of programs jitted at first use, and no step falls back to
    a program jitted on the spot."""
    module = build_model(
        "sparrow",
        SHELLS,
        net_irreps="8x0e+4x1o+4x1e+2x2e+2x2o+2x3o+2x3e+2x4e",
        num_blocks=2,
        rmax=CUTOFF,
        consider_parity=True,
    )
    batch = collate([si64], num_nodes=si64.num_nodes, num_edges=si64.num_edges, num_graphs=1)
    params = init_params(module, batch, seed=0)["params"]

    def network():
        return ChunkedNetwork(
            module, params, normaliser, spinful=False, out_dtype=jnp.float32, chunk_edges=300
        )

    rows = np.arange(si64.num_edges)[:300]
    plain = network()
    nodes, edges, terms = plain.features(si64)
    expected = plain.blocks(si64, nodes, edges, terms, rows)
    assert plain._jitted  # the plain path jits at first use

    ahead = network()
    build = ahead.build_ahead(si64, workers=2)
    assert build is not None and ahead.build_ahead(si64) is None  # built once per atom count
    build.wait()
    got_nodes, got_edges, got_terms = ahead.features(si64)
    got = ahead.blocks(si64, got_nodes, got_edges, got_terms, rows)
    assert not ahead._jitted, f"steps jitted on the spot: {sorted(map(str, ahead._jitted))}"
    np.testing.assert_allclose(got_nodes, nodes, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_edges, edges, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def _datasets(path):
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in handle}


@pytest.mark.parametrize("case", ["symmetrized", "missing_mirror", "plain"])
def test_streamed_file_equals_old_writer(si64, tmp_path, case):
    graph = si64
    if case == "missing_mirror":  # drop two off-site edges: their mirrors are appended, as before
        keep = np.ones(graph.num_edges, bool)
        keep[[5, 40]] = False
        graph = StructureGraph(
            sid="si",
            atomic_numbers=graph.atomic_numbers,
            positions=graph.positions,
            lattice=graph.lattice,
            edge_src=graph.edge_src[keep],
            edge_dst=graph.edge_dst[keep],
            edge_shift=graph.edge_shift[keep],
            edge_vec=graph.edge_vec[keep],
            labels=None,
            label_mask=graph.label_mask[keep],
            overlap=None,
        )
    symmetrize = case != "plain"
    size = BASIS.size
    blocks = np.random.default_rng(2).normal(0, 1, (graph.num_edges, size, size)).astype(np.float32)
    old = tmp_path / "old.h5"
    write_prediction(old, graph_prediction(graph, blocks, BASIS, ORBITALS, symmetrize=symmetrize), np.float32)
    asked, computed = [], np.zeros(graph.num_edges, np.int64)

    def blocks_of(rows):
        asked.append(rows.shape[0])
        np.add.at(computed, rows, 1)
        return blocks[rows]

    new = tmp_path / "new.h5"
    write_streamed_prediction(
        new, graph, blocks_of, 256, BASIS, ORBITALS, spin=False, symmetrize=symmetrize, dtype=np.float32
    )
    assert max(asked) <= 256 and len(asked) > 3
    np.testing.assert_array_equal(computed, 1)  # every block once, mirrors included
    a, b = _datasets(old), _datasets(new)
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if case == "missing_mirror":
        assert b["atom_pairs"].shape[0] == graph.num_edges + 2
    assert not list(tmp_path.glob("*.tmp*")), "temporary file left behind"


def test_mirror_index(si64):
    mirror = mirror_index(si64.edge_src, si64.edge_dst, si64.edge_shift)
    assert (mirror >= 0).all()
    np.testing.assert_array_equal(si64.edge_src[mirror], si64.edge_dst)
    np.testing.assert_array_equal(si64.edge_shift[mirror], -si64.edge_shift)
    np.testing.assert_array_equal(mirror[mirror], np.arange(si64.num_edges))
    cut = mirror_index(si64.edge_src[1:], si64.edge_dst[1:], si64.edge_shift[1:])
    assert (cut == -1).sum() == (0 if mirror[0] == 0 else 1)


def test_neighbour_search_equals_brute_force():
    """Every pair (R, i, j) closer than the cutoff, from all lattice images: the same set, sorted."""
    poscar = _si_poscar(1, seed=5)
    lattice, positions = poscar.lattice, poscar.positions
    reach = int(np.ceil(CUTOFF / 5.431)) + 1
    expected = []
    for shift in itertools.product(range(-reach, reach + 1), repeat=3):
        offset = np.asarray(shift) @ lattice
        distance = np.linalg.norm(positions[None, :, :] + offset - positions[:, None, :], axis=-1)
        for i, j in zip(*np.nonzero(distance < CUTOFF), strict=True):
            expected.append((i, j, *shift))
    expected.sort()
    src, dst, shift = neighbour_edges(poscar, CUTOFF)
    found = [(int(i), int(j), *(int(v) for v in r)) for i, j, r in zip(src, dst, shift, strict=True)]
    assert found == expected


def test_chunk_size_from_memory(monkeypatch):
    gib = 1 << 30
    assert chunk_edges_for_memory(8 * gib, bytes_per_edge=1 << 17, share=0.25) == 16384
    assert (
        chunk_edges_for_memory(8 * gib, bytes_per_edge=100_000, share=0.5, maximum=1 << 20) == 42752
    )  # 42949
    assert chunk_edges_for_memory(0) == 1024  # the floor
    assert chunk_edges_for_memory(1 << 50) == 16384  # the ceiling
    assert chunk_edges_for_memory(2 * gib) < chunk_edges_for_memory(4 * gib)
    with pytest.raises(ValueError):
        chunk_edges_for_memory(gib, share=0.0)
    monkeypatch.delenv("HAMFLOW_CHUNK_EDGES", raising=False)
    assert resolve_chunk_edges(5000) == 5000
    monkeypatch.setattr("hamflow.infer.chunked.available_memory_bytes", lambda: 4 * gib)
    assert resolve_chunk_edges(0) == chunk_edges_for_memory(4 * gib)
    monkeypatch.setenv("HAMFLOW_CHUNK_EDGES", "777")
    assert resolve_chunk_edges(5000) == 777


def _si_inference(tmp_path, normaliser):
    """A POSCAR-only 64-atom Si cell and an untrained run folder for it: (graph, a function of the
    ``process.infer`` keys returning the parsed InferConfig)."""
    import jax

    from hamflow.config.infer_config import parse_infer_config
    from hamflow.data.info import StructureInfo, write_info
    from hamflow.data.poscar import write_poscar
    from hamflow.infer.predict import example_batch
    from hamflow.train import checkpoint as ckpt
    from hamflow.train.saved_model import ModelSpec, build_network

    poscar = _si_poscar(2)
    folder = tmp_path / "inputs" / "dft" / "si"
    folder.mkdir(parents=True)
    write_poscar(folder / "POSCAR", poscar)
    write_info(folder / "info.json", StructureInfo(64, 64 * 13, False, False, None, ORBITALS))
    spec = ModelSpec(
        net_type="sparrow",
        shell_ls=SHELLS,
        net_irreps="8x0e+4x1o+4x1e+2x2e+2x2o+2x3o+2x3e+2x4e",
        num_blocks=2,
        gaussian_basis_rmax=CUTOFF,
        consider_parity=True,
        spinful=False,
        target_type="H",
        elements_orbital_map=ORBITALS,
        float_type="fp32",
    )
    layout = ckpt.RunLayout(tmp_path / "run")
    layout.model.mkdir(parents=True)
    spec.save(layout.model_json)
    normaliser.save(layout.normaliser)
    graph = _graph(poscar)
    params = init_params(build_network(spec, jax.numpy.float32), example_batch(graph), seed=0)["params"]
    ckpt.save_best(layout, params, {"epoch": 0})

    def config(infer_keys: dict):
        return parse_infer_config(
            {
                "system": {"device": "cpu*1", "float_type": "fp32", "log_level": "warning"},
                "data": {
                    "inputs_dir": str(tmp_path / "inputs"),
                    "outputs_dir": str(tmp_path / "out"),
                    "graph": {"graph_type": "Sap", "parallel_num": 1},
                },
                "model": {"model_dir": str(layout.root)},
                "process": {"infer": infer_keys},
            }
        )

    return graph, config


@pytest.mark.slow  # two compilations of a small sparrow: ~1-2 min on 2 loaded cores
def test_hamflow_infer_chunked_equals_batched(tmp_path, normaliser):
    """run_inference (``hamflow infer``) on a POSCAR-only 64-atom Si cell: the chunked path
    (chunk_edges below the edge count) writes the file the batched path writes, to float32 rounding."""
    from hamflow.infer.stage import run_inference

    graph, config = _si_inference(tmp_path, normaliser)
    files = {}
    for name, chunk in (("batched", 100_000), ("chunked", 512)):
        keys = {"chunk_edges": chunk, "compilation_cache_dir": "none"}
        result = run_inference(config(keys), run_dir=tmp_path / name)
        files[name] = _datasets(result.output_dir / "si" / "hamiltonian_pred.h5")
    batched, chunked = files["batched"], files["chunked"]
    assert batched["atom_pairs"].shape[0] == graph.num_edges > 512
    for key in ("atom_pairs", "chunk_shapes", "chunk_boundaries"):
        np.testing.assert_array_equal(batched[key], chunked[key])
    scale = np.abs(batched["entries"]).max()
    np.testing.assert_allclose(chunked["entries"], batched["entries"], rtol=0, atol=5e-6 * scale)


@pytest.mark.slow  # one compilation of the chunked steps of a small sparrow
def test_hamflow_infer_rerun_loads_its_programs_from_the_compilation_cache(tmp_path, normaliser):
    """process.infer.compilation_cache_dir: the first run compiles and stores the chunked step
    programs, a rerun of the same shapes compiles nothing and writes the same file; "none" stores
    nothing."""
    import jax

    from hamflow.config.compilation_cache import use_persistent_cache
    from hamflow.infer.stage import run_inference

    _, config = _si_inference(tmp_path, normaliser)
    cache = tmp_path / "cache"
    events = []
    try:
        for name in ("first", "rerun"):
            counter = CacheEvents()
            jax.monitoring.register_event_listener(counter)
            try:
                keys = {"chunk_edges": 512, "compilation_cache_dir": str(cache)}
                result = run_inference(config(keys), run_dir=tmp_path / name)
            finally:
                jax.monitoring.unregister_event_listener(counter)
            events.append(counter)
        first, rerun = events
        assert first.misses > 0 and any(cache.iterdir())
        # the rerun compiles nothing: its new step programs come from the cache (programs that JAX
        # keeps in memory from the first run, such as one-op eager ones, are not asked for again)
        assert rerun.misses == 0 and rerun.hits > 0
        first_file = _datasets(tmp_path / "first" / "dft" / "si" / "hamiltonian_pred.h5")
        rerun_file = _datasets(result.output_dir / "si" / "hamiltonian_pred.h5")
        for key, value in first_file.items():
            np.testing.assert_array_equal(rerun_file[key], value)
        run_inference(config({"chunk_edges": 512, "compilation_cache_dir": "none"}), run_dir=tmp_path / "off")
        assert not (tmp_path / "out" / ".jax_cache").exists()
        assert jax.config.jax_enable_compilation_cache is False
    finally:
        use_persistent_cache(None)
