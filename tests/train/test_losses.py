"""Losses: definitions, masks, the gauge correction, unsupervised losses refused."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hamflow.errors import NotAvailableError
from hamflow.train.losses import block_loss, gauge_shift


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    residual = rng.normal(size=(6, 4, 4))
    mask = rng.random((6, 4, 4)) > 0.3
    edge_graph = np.array([0, 0, 0, 1, 1, 1])
    return residual, mask, edge_graph


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        ("mse", lambda r: np.mean(r**2)),
        ("mae", lambda r: np.mean(np.abs(r))),
        ("huber", lambda r: np.mean(np.where(np.abs(r) < 1, 0.5 * r**2, np.abs(r) - 0.5))),
    ],
)
def test_losses_match_definitions_on_masked_entries(kind, reference) -> None:
    residual, mask, edge_graph = _data()
    value = block_loss(
        kind, jnp.asarray(residual), jnp.asarray(mask), edge_graph=jnp.asarray(edge_graph), num_graphs=2
    )
    np.testing.assert_allclose(float(value), reference(residual[mask]), rtol=1e-5)


def test_wmae_weighs_structures_equally() -> None:
    residual, mask, edge_graph = _data()
    value = block_loss(
        "wmae", jnp.asarray(residual), jnp.asarray(mask), edge_graph=jnp.asarray(edge_graph), num_graphs=3
    )
    per = [np.mean(np.abs(residual[edge_graph == g][mask[edge_graph == g]])) for g in (0, 1)]
    np.testing.assert_allclose(float(value), np.mean(per), rtol=1e-5)


def test_masked_entries_do_not_count() -> None:
    residual, mask, edge_graph = _data()
    poisoned = np.where(mask, residual, 1e6)
    for kind in ("mse", "mae", "huber", "wmae"):
        a = block_loss(
            kind, jnp.asarray(residual), jnp.asarray(mask), edge_graph=jnp.asarray(edge_graph), num_graphs=2
        )
        b = block_loss(
            kind, jnp.asarray(poisoned), jnp.asarray(mask), edge_graph=jnp.asarray(edge_graph), num_graphs=2
        )
        assert float(a) == pytest.approx(float(b))


def test_complex_residual_uses_modulus() -> None:
    residual = jnp.asarray([[[3 + 4j]]])
    mask = jnp.asarray([[[True]]])
    value = block_loss("mae", residual, mask, edge_graph=jnp.asarray([0]), num_graphs=1)
    assert float(value) == pytest.approx(5.0)


def test_gauge_shift_removes_constant_mu_s_per_structure() -> None:
    rng = np.random.default_rng(1)
    overlap = rng.normal(size=(6, 3, 3))
    mask = np.ones((6, 3, 3), bool)
    edge_graph = np.array([0, 0, 0, 1, 1, 1])
    true_error = 1e-3 * rng.normal(size=(6, 3, 3))
    mu = np.array([4.5, -7.6])[edge_graph][:, None, None]
    residual = true_error + mu * overlap
    shifted = np.asarray(
        gauge_shift(
            jnp.asarray(residual), jnp.asarray(overlap), jnp.asarray(mask), jnp.asarray(edge_graph), 2
        )
    )
    # what remains is the true error minus its own projection on S: small, and the offset is gone
    assert np.abs(shifted).max() < 1e-2
    for g in (0, 1):
        sel = edge_graph == g
        assert abs(np.sum(shifted[sel] * overlap[sel])) < 1e-5 * np.sum(overlap[sel] ** 2)  # float32


@pytest.mark.parametrize("kind", ["ai2dft", "ai2dft_node", "hopad", "aims"])
def test_unsupervised_losses_not_available(kind: str) -> None:
    residual, mask, edge_graph = _data()
    with pytest.raises(NotAvailableError, match="not available yet"):
        block_loss(
            kind, jnp.asarray(residual), jnp.asarray(mask), edge_graph=jnp.asarray(edge_graph), num_graphs=2
        )
