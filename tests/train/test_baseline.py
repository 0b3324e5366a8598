"""The off-site two-centre baseline: exactly E(3)-equivariant, recovered by its least-squares fit,
stored with the normaliser, and on real DFT water it removes most of the off-site blocks."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hamflow.nn.wigner import basis_rotation
from hamflow.train.baseline import NUM_RADIAL, Baseline, BaselineFit, _components
from hamflow.train.normaliser import REMAINDER_FLOOR, Normaliser, fit_normaliser

SHELLS = (0, 0, 1, 2)


def _random_baseline(
    rng: np.random.Generator, shell_ls=SHELLS, species: int = 2, width: float = 0.3
) -> Baseline:
    comps = len(_components(tuple(shell_ls)))
    weights = rng.normal(size=(species + 1, species + 1, comps, NUM_RADIAL)).astype(np.float32)
    weights[species] = 0
    weights[:, species] = 0
    centres = np.broadcast_to(np.linspace(0.8, 3.0, NUM_RADIAL), (species + 1, species + 1, NUM_RADIAL))
    return Baseline(
        weights, np.array(centres, np.float32), np.full((species + 1, species + 1), 0.3, np.float32)
    )


def _blocks(baseline: Baseline, vectors: np.ndarray, si: np.ndarray, sj: np.ndarray) -> np.ndarray:
    ones = jnp.ones(len(vectors), bool)
    return np.asarray(baseline.blocks(SHELLS, jnp.asarray(si), jnp.asarray(sj), jnp.asarray(vectors), ones))


@pytest.mark.parametrize("improper", [False, True])
def test_baseline_blocks_rotate_with_wigner_d(improper: bool) -> None:
    rng = np.random.default_rng(3)
    baseline = _random_baseline(rng)
    vectors = rng.normal(size=(7, 3)) * 1.5
    si, sj = rng.integers(0, 2, 7), rng.integers(0, 2, 7)
    rotation = Rotation.random(random_state=rng).as_matrix() * (-1.0 if improper else 1.0)
    d = basis_rotation(SHELLS, rotation)
    before = _blocks(baseline, vectors, si, sj)
    after = _blocks(baseline, vectors @ rotation.T, si, sj)
    expected = np.einsum("ab,ebc,dc->ead", d, before, d)
    scale = np.abs(before).max()
    assert np.abs(after - expected).max() < 2e-5 * scale


def test_fit_recovers_a_two_centre_model_and_explains_it() -> None:
    rng = np.random.default_rng(5)
    truth = _random_baseline(rng, width=0.8)  # smooth in r, as two-centre integrals are
    size = sum(2 * l + 1 for l in SHELLS)
    fit = BaselineFit(SHELLS)
    for _ in range(20):
        vectors = rng.normal(size=(30, 3))
        vectors *= rng.uniform(1.0, 2.8, size=(30, 1)) / np.linalg.norm(vectors, axis=1, keepdims=True)
        si, sj = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
        labels = _blocks(truth, vectors, si, sj).astype(np.float64)
        fit.add(si, sj, vectors, labels, np.ones((30, size, size), bool))
    fitted, explained = fit.solve(2)
    test = rng.normal(size=(40, 3))
    test *= rng.uniform(1.1, 2.7, size=(40, 1)) / np.linalg.norm(test, axis=1, keepdims=True)
    si, sj = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    want, got = _blocks(truth, test, si, sj), _blocks(fitted, test, si, sj)
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 1e-2, error
    # parity-allowed blocks are functions of the pair vector alone: all of it is explained
    assert explained[:2, :2].max() > 0.999


def test_normaliser_keeps_the_baseline_through_save_and_load(tmp_path: Path) -> None:
    baseline = _random_baseline(np.random.default_rng(0))
    size = sum(2 * l + 1 for l in SHELLS)
    norm = Normaliser(
        species_of_z=np.full(119, 2, np.int32),
        onsite_scale=np.ones((3, size, size), np.float32),
        offsite_scale=np.ones((3, 3, size, size), np.float32),
        onsite_offset=np.zeros((3, size, size), np.float32),
        shell_ls=SHELLS,
        baseline=baseline,
    )
    norm.save(tmp_path / "normaliser.npz")
    back = Normaliser.load(tmp_path / "normaliser.npz")
    assert back.shell_ls == SHELLS
    np.testing.assert_array_equal(back.baseline.weights, baseline.weights)
    np.testing.assert_array_equal(back.baseline.centres, baseline.centres)


def test_on_real_water_the_baseline_takes_out_most_of_the_offsite_blocks(demo_dir: Path) -> None:
    """Demo DFT water (PBE/def2-SVP, all electron): fitted on 6 molecules, the baseline leaves a
    small part of the off-site blocks of the other 4 (core-valence couplings are two-centre)."""
    from hamflow.data.structure import load_structure
    from hamflow.graph.basis import common_basis
    from hamflow.graph.structure_graph import build_structure_graph

    folders = sorted((demo_dir / "molecules" / "dft" / "h2o").iterdir())
    structures = [load_structure(f, sid=f.name, quantities=("H", "S")) for f in folders]
    basis = common_basis(structures[0].info.elements_orbital_map)
    graphs = [build_structure_graph(s, basis, graph_type="HS", dtype=np.float64) for s in structures]
    norm = fit_normaliser(graphs[:6], basis.shell_ls)
    assert norm.baseline is not None
    plain = fit_normaliser(graphs[:6], basis.shell_ls, baseline=False)
    assert plain.baseline is None
    oxygen, hydrogen = norm.species_of_z[8], norm.species_of_z[1]
    # the O 1s - H s coupling (tens of eV) is almost all two-centre
    # (so much that the remainder's scale sits at its floor, REMAINDER_FLOOR of the plain scale)
    floor = REMAINDER_FLOOR * plain.offsite_scale[oxygen, hydrogen, 0, 0]
    assert norm.offsite_scale[oxygen, hydrogen, 0, 0] == pytest.approx(floor, rel=1e-5)
    left, total = 0.0, 0.0
    for graph in graphs[6:]:
        offsite = ~graph.edge_onsite if hasattr(graph, "edge_onsite") else graph.edge_src != graph.edge_dst
        blocks = np.asarray(
            norm.edge_baseline(
                jnp.asarray(graph.atomic_numbers),
                jnp.asarray(graph.edge_src),
                jnp.asarray(graph.edge_dst),
                jnp.asarray(offsite),
                jnp.asarray(graph.edge_vec),
            )
        )
        mask = graph.label_mask & offsite[:, None, None]
        left += np.abs(graph.labels - blocks)[mask].sum()
        total += np.abs(graph.labels)[mask].sum()
    assert left < 0.2 * total
