"""Round trip: a prediction written by hamflow, read back by DeepH-dock's own reader, gives the same
dense H(k) as hamflow's reader (periodic MoTe2, k off Gamma, so cell shifts and phases count).

DeepH-dock needs Python >= 3.12, so the reader runs in a subprocess of the interpreter the ``deepx_run``
fixture finds (``$HAMFLOW_DEEPX_PYTHON``, else a cached venv on pyenv's 3.12+; tests/deepx_venv.py);
the test skips, saying why, only where there is no such Python or no package index to install from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from hamflow.data.kspace import dense_at_k
from hamflow.data.matrix_h5 import read_matrix_h5
from hamflow.data.structure import load_structure
from hamflow.graph.basis import union_basis
from hamflow.graph.structure_graph import build_structure_graph
from hamflow.infer.predict import graph_prediction, make_predict_fn, predict_graphs, write_prediction
from hamflow.train.normaliser import MAX_Z, Normaliser

K_POINTS = [[0.0, 0.0, 0.0], [0.25, 0.1, 0.0], [1 / 3, 1 / 3, 0.0], [0.5, 0.0, 0.2]]

READER_SCRIPT = """
import json, sys
import numpy as np
from deepx_dock.compute.eigen.hamiltonian import HamiltonianObj
folder, out, ks = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]))
obj = HamiltonianObj(folder, folder + "/hamiltonian_pred.h5")
s_k, h_k = obj.Sk_and_Hk(ks)
np.savez(out, h_k=h_k, s_k=s_k)
"""


def _deeph_dock_dense(folder: Path, tmp_path: Path, deepx_run) -> tuple[np.ndarray, np.ndarray]:
    """(H(k), S(k)) stacked over K_POINTS, as DeepH-dock's HamiltonianObj builds them."""
    out = tmp_path / "deeph_dock_dense.npz"
    deepx_run(READER_SCRIPT, str(folder), str(out), json.dumps(K_POINTS))
    with np.load(out) as data:
        return data["h_k"], data["s_k"]


def test_hamflow_prediction_reads_back_in_deeph_dock(deeph_dock: Path, tmp_path: Path, deepx_run) -> None:
    source = deeph_dock / "periodic" / "dft" / "MoTe2"
    structure = load_structure(source)
    basis = union_basis(structure.info.elements_orbital_map)
    graph = build_structure_graph(structure, basis, graph_type="H", dtype=np.float32)

    def lopsided(params, batch):
        tilt = jnp.asarray(batch.edge_vec)[:, 1][:, None, None] * jnp.ones((basis.size, basis.size))
        return jnp.asarray(batch.labels) + params["k"] * jnp.tril(tilt)

    normaliser = Normaliser(
        species_of_z=np.zeros(MAX_Z, dtype=np.int32),
        onsite_scale=np.ones((1, basis.size, basis.size), dtype=np.float32),
        offsite_scale=np.ones((1, 1, basis.size, basis.size), dtype=np.float32),
        onsite_offset=np.zeros((1, basis.size, basis.size), dtype=np.float32),
    )
    predict_fn = make_predict_fn(lopsided, normaliser, spinful=False, out_dtype=jnp.float32)
    (_, blocks), *_ = predict_graphs(_One(graph), predict_fn, {"k": 0.01})
    folder = tmp_path / "MoTe2"
    folder.mkdir()
    for name in ("POSCAR", "info.json", "overlap.h5"):
        shutil.copy(source / name, folder / name)
    write_prediction(
        folder / "hamiltonian_pred.h5",
        graph_prediction(graph, blocks, basis, structure.info.elements_orbital_map),
        np.float32,
    )

    ours = read_matrix_h5(folder / "hamiltonian_pred.h5")
    offsets = structure.orbital_offsets
    h_ours = np.stack([dense_at_k(ours, offsets, k) for k in K_POINTS])
    s_ours = np.stack([dense_at_k(structure.matrices["S"], offsets, k) for k in K_POINTS])
    h_theirs, s_theirs = _deeph_dock_dense(folder, tmp_path, deepx_run)
    assert h_theirs.shape == h_ours.shape == (len(K_POINTS), 57, 57)
    np.testing.assert_allclose(h_theirs, h_ours, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s_theirs, s_ours, rtol=0, atol=1e-12)
    for h_k in h_theirs:
        np.testing.assert_allclose(h_k, h_k.conj().T, atol=1e-9)  # Hermitian as written
    # the prediction is close to, but not, the DFT H: the reader saw our values, not a copy
    h_dft = dense_at_k(structure.matrices["H"], offsets, K_POINTS[1])
    assert 1e-4 < np.abs(h_theirs[1] - h_dft).max() < 1.0


class _One:
    """A single graph with the GraphStore interface."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.num_nodes = np.array([graph.num_nodes])
        self.num_edges = np.array([graph.num_edges])

    def __len__(self) -> int:
        return 1

    def get(self, index: int):
        return self.graph
