"""The off-site environment baseline: exactly E(3)-equivariant (its pseudotensor term for the
parity-(-1)^(L+1) components included), the same in chunks, recovered by its least-squares fit, kept
through the normaliser's file (files written before the pseudotensor term load without it), and on
real DFT water it takes out most of what the two-centre baseline leaves of the off-site blocks."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hamflow.nn.wigner import basis_rotation
from hamflow.train import environment_baseline as env_module
from hamflow.train.baseline import NUM_RADIAL, Baseline, _components
from hamflow.train.environment_baseline import (
    EnvironmentBaseline,
    EnvironmentBaselineFit,
    num_features,
    num_pseudo_features,
)
from hamflow.train.normaliser import Normaliser, fit_normaliser

SHELLS = (0, 0, 1, 2)
SIZE = sum(2 * l + 1 for l in SHELLS)
CENTRES = np.broadcast_to(np.linspace(0.8, 3.2, NUM_RADIAL), (3, NUM_RADIAL)).astype(np.float32)
WIDTHS = np.full(3, 0.5, np.float32)


def _random_environment(
    rng: np.random.Generator, species: int = 2, pseudo: bool = True, polar: bool = True
) -> EnvironmentBaseline:
    """Random weights (the unseen-species row zero); ``pseudo`` / ``polar`` False: that term zero."""
    weights = rng.normal(size=(species + 1, species + 1, len(_components(SHELLS)), num_features(species)))
    pseudo_weights = rng.normal(
        size=(
            species + 1,
            species + 1,
            len(_components(SHELLS, forbidden=True)),
            num_pseudo_features(species),
        )
    )
    for table, keep in ((weights, polar), (pseudo_weights, pseudo)):
        table[species] = 0
        table[:, species] = 0
        table *= float(keep)
    return EnvironmentBaseline(
        weights.astype(np.float32), CENTRES.copy(), WIDTHS.copy(), pseudo_weights.astype(np.float32)
    )


def _cluster(rng: np.random.Generator, atoms: int = 5):
    """Positions (N, 3) Angstrom, species rows (N,), and every ordered pair closer than 3 Angstrom."""
    while True:
        positions = rng.uniform(0, 2.2, size=(atoms, 3))
        distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if distance[~np.eye(atoms, dtype=bool)].min() > 0.7:
            break
    species = rng.integers(0, 2, atoms)
    src, dst = np.nonzero((distance < 3.0) & ~np.eye(atoms, dtype=bool))
    return positions, species, src, dst


def _blocks(baseline: EnvironmentBaseline, positions, species, src, dst) -> np.ndarray:
    return np.asarray(
        baseline.blocks(
            SHELLS,
            jnp.asarray(species[src]),
            jnp.asarray(species[dst]),
            jnp.asarray(src),
            jnp.asarray(dst),
            jnp.asarray(positions[dst] - positions[src]),
            jnp.ones(len(src), bool),
            len(positions),
        )
    )


@pytest.mark.parametrize("term", ["polar", "pseudo"])
@pytest.mark.parametrize("improper", [False, True])
def test_environment_baseline_blocks_rotate_with_wigner_d(improper: bool, term: str) -> None:
    rng = np.random.default_rng(3)
    baseline = _random_environment(rng, pseudo=term == "pseudo", polar=term == "polar")
    positions, species, src, dst = _cluster(rng)
    rotation = Rotation.random(random_state=rng).as_matrix() * (-1.0 if improper else 1.0)
    d = basis_rotation(SHELLS, rotation)
    before = _blocks(baseline, positions, species, src, dst)
    after = _blocks(baseline, positions @ rotation.T, species, src, dst)
    expected = np.einsum("ab,ebc,dc->ead", d, before, d)
    assert np.abs(before).max() > 0
    assert np.abs(after - expected).max() < 2e-5 * np.abs(before).max()


def test_chunked_evaluation_equals_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    baseline = _random_environment(rng)
    positions, species, src, dst = _cluster(rng, atoms=6)
    whole = _blocks(baseline, positions, species, src, dst)
    monkeypatch.setattr(env_module, "CHUNK_EDGES", 7)  # not a divisor: the last chunk is padded
    chunked = _blocks(baseline, positions, species, src, dst)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_fit_recovers_an_environment_model_on_top_of_the_two_centre_one() -> None:
    rng = np.random.default_rng(5)
    truth = _random_environment(rng)
    comps = _components(SHELLS)
    two_centre = Baseline(
        rng.normal(size=(3, 3, len(comps), NUM_RADIAL)).astype(np.float32),
        CENTRES[None].repeat(3, axis=0),
        np.full((3, 3), 0.6, np.float32),
    )

    def labels(positions, species, src, dst):
        vec = jnp.asarray(positions[dst] - positions[src])
        pair = two_centre.blocks(
            SHELLS, jnp.asarray(species[src]), jnp.asarray(species[dst]), vec, jnp.ones(len(src), bool)
        )
        return np.asarray(pair) + _blocks(truth, positions, species, src, dst)

    fit = EnvironmentBaselineFit(SHELLS)
    for _ in range(80):
        positions, species, src, dst = _cluster(rng)
        fit.add(
            species,
            src,
            dst,
            positions[dst] - positions[src],
            labels(positions, species, src, dst).astype(np.float64),
            np.ones((len(src), SIZE, SIZE), bool),
        )
    fitted, explained = fit.solve(2, two_centre, CENTRES, WIDTHS)
    positions, species, src, dst = _cluster(np.random.default_rng(99))
    for term in ("polar", "pseudo"):  # each term recovered on its own components
        only = {"pseudo": term == "pseudo", "polar": term == "polar"}
        want = _blocks(_only(truth, **only), positions, species, src, dst)
        got = _blocks(_only(fitted, **only), positions, species, src, dst)
        assert np.abs(want).max() > 0
        assert np.abs(got - want).max() < 2e-2 * np.abs(want).max(), term
    assert np.median(explained[:2, :2]) > 0.999


def _only(baseline: EnvironmentBaseline, *, pseudo: bool, polar: bool) -> EnvironmentBaseline:
    import dataclasses

    return dataclasses.replace(
        baseline,
        weights=baseline.weights * float(polar),
        pseudo_weights=baseline.pseudo_weights * float(pseudo),
    )


def test_normaliser_keeps_the_environment_baseline_through_save_and_load(tmp_path: Path) -> None:
    environment = _random_environment(np.random.default_rng(0))
    norm = Normaliser(
        species_of_z=np.full(119, 2, np.int32),
        onsite_scale=np.ones((3, SIZE, SIZE), np.float32),
        offsite_scale=np.ones((3, 3, SIZE, SIZE), np.float32),
        onsite_offset=np.zeros((3, SIZE, SIZE), np.float32),
        shell_ls=SHELLS,
        environment_baseline=environment,
    )
    norm.save(tmp_path / "normaliser.npz")
    back = Normaliser.load(tmp_path / "normaliser.npz")
    assert back.shell_ls == SHELLS and back.baseline is None and back.onsite_baseline is None
    for name in ("weights", "centres", "widths", "pseudo_weights"):
        np.testing.assert_array_equal(getattr(back.environment_baseline, name), getattr(environment, name))
    # a file written before the pseudotensor term: it loads without it
    with np.load(tmp_path / "normaliser.npz") as data:
        tables = {name: data[name] for name in data.files if name != "environment_baseline_pseudo_weights"}
    np.savez(tmp_path / "old.npz", **tables)
    old = Normaliser.load(tmp_path / "old.npz")
    assert old.environment_baseline is not None and old.environment_baseline.pseudo_weights is None
    np.testing.assert_array_equal(old.environment_baseline.weights, environment.weights)


def test_on_real_water_the_environment_baseline_takes_out_most_of_the_two_centre_remainder(
    demo_dir: Path,
) -> None:
    """Demo DFT water (PBE/def2-SVP, all electron), fitted on 60 molecules: on the other 20 the
    off-site error with the environment baseline is well below the two-centre baseline's alone."""
    import dataclasses

    from hamflow.data.structure import load_structure
    from hamflow.graph.basis import common_basis
    from hamflow.graph.structure_graph import build_structure_graph

    folders = sorted((demo_dir / "water" / "dft").iterdir())
    structures = [load_structure(f, sid=f.name, quantities=("H", "S")) for f in folders]
    basis = common_basis(structures[0].info.elements_orbital_map)
    graphs = [build_structure_graph(s, basis, graph_type="HS", dtype=np.float64) for s in structures]
    norm = fit_normaliser(graphs[:60], basis.shell_ls)
    assert norm.environment_baseline is not None
    pair_only = dataclasses.replace(norm, environment_baseline=None)
    errors = {"with": 0.0, "without": 0.0}
    for graph in graphs[60:]:
        onsite = (graph.edge_src == graph.edge_dst) & np.all(graph.edge_shift == 0, axis=1)
        for name, model in (("with", norm), ("without", pair_only)):
            blocks = np.asarray(
                model.edge_baseline(
                    jnp.asarray(graph.atomic_numbers),
                    jnp.asarray(graph.edge_src),
                    jnp.asarray(graph.edge_dst),
                    jnp.asarray(~onsite),
                    jnp.asarray(graph.edge_vec),
                )
            )
            mask = graph.label_mask & ~onsite[:, None, None]
            errors[name] += np.abs(graph.labels - blocks)[mask].mean()
    assert errors["with"] < 0.5 * errors["without"], errors


def test_a_term_that_does_not_generalise_across_training_structures_is_dropped() -> None:
    from hamflow.train.baseline import validated_ridge

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(40, 30))
    groups = np.repeat(np.arange(8), 5)
    _, w, fitted = validated_ridge(feats, rng.normal(size=40), groups, 1e-4)  # noise: 30 features, 40 rows
    assert not w.any() and not fitted.any()
    truth = rng.normal(size=30)
    feats = rng.normal(size=(400, 30))
    _, w, _ = validated_ridge(feats, feats @ truth, np.repeat(np.arange(80), 5), 1e-4)
    np.testing.assert_allclose(w, truth, rtol=1e-3, atol=1e-3)
    # one training structure: nothing to validate on, so nothing is fitted
    _, w, _ = validated_ridge(feats, feats @ truth, np.zeros(400, dtype=int), 1e-4)
    assert not w.any()


def test_features_that_are_rounding_noise_get_weights_no_larger_than_the_target() -> None:
    """A cancelling feature set (the pseudotensor term of a linear molecule: float32 residue ~1e-7)
    correlated across the training structures passes cross-validation; its weights must stay at the
    size of y, or a rotated copy gets a non-equivariant baseline of tens of eV."""
    from hamflow.train.baseline import ridge_weights, validated_ridge

    rng = np.random.default_rng(4)
    pattern = rng.normal(size=(1, 12)) * 1e-7
    feats = np.repeat(pattern, 6, axis=0) * (1 + 1e-3 * rng.normal(size=(6, 12)))
    y = np.full(6, 50.0)  # eV
    _, w, _ = validated_ridge(feats, y, np.arange(6), 1e-4)
    assert np.abs(w).max() < 10 * np.abs(y).max()
    assert np.abs(rng.normal(size=(50, 12)) * 1e-7 @ w).max() < 1e-3  # eV on other rounding noise
    # O(1) features are fitted as before: the floor shrinks them by ~relative_ridge only
    truth = rng.normal(size=12)
    real = rng.normal(size=(200, 12))
    np.testing.assert_allclose(ridge_weights(real, real @ truth, 1e-4), truth, rtol=1e-3, atol=1e-3)
