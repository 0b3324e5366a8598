"""Radial basis and edge geometry, and the fused equivariant layers against e3nn-jax's own."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_batches import random_rotation

from hamflow.nn.layers import (
    EquivariantLayerNorm,
    gate,
    gate_input_irreps,
    product_layout,
    regroup,
    tensor_product_mul1,
)
from hamflow.nn.radial import cutoff_envelope, gaussian_basis, safe_length_and_direction, to_e3nn_axes
from hamflow.nn.wigner import irreps_rotation

FEATURES = e3nn.Irreps("4x0e+2x0o+3x1o+2x1e+2x2e+1x3o")
SH = e3nn.Irreps("0e+1o+2e+3o")


def test_gaussian_basis_and_envelope():
    r = jnp.array([0.0, 2.5, 5.0, 6.0])
    basis = np.asarray(gaussian_basis(r, 5.0, 11))
    assert basis.shape == (4, 11)
    np.testing.assert_allclose(basis[0, 0], 1.0)
    np.testing.assert_allclose(basis[1, 5], 1.0)  # centre 5 of 11 on [0, 5] is 2.5 A
    np.testing.assert_allclose(basis[2, -1], 1.0)
    envelope = np.asarray(cutoff_envelope(jnp.linspace(0.0, 6.0, 61), 5.0))
    assert envelope[0] == 1.0 and np.all(envelope[50:] == 0.0) and np.all(np.diff(envelope) <= 0)
    slope = jax.grad(lambda x: cutoff_envelope(x, 5.0))
    assert abs(float(slope(jnp.array(4.999)))) < 1e-4 and float(slope(jnp.array(6.0))) == 0.0
    with pytest.raises(ValueError):
        gaussian_basis(r, 5.0, 1)


def test_zero_vector_is_finite_with_finite_gradients():
    """On-site edges (r = 0): length 0, harmonics (1, 0, ...), and no NaN in any gradient."""

    def features(vector):
        length, direction = safe_length_and_direction(to_e3nn_axes(vector))
        sh = e3nn.spherical_harmonics(SH, e3nn.IrrepsArray("1o", direction), normalize=False)
        return length, sh.array

    length, sh = features(jnp.zeros(3))
    assert float(length) == 0.0
    np.testing.assert_array_equal(np.asarray(sh), np.eye(SH.dim)[0])
    gradient = jax.jacobian(lambda v: jnp.concatenate([features(v)[0][None], features(v)[1]]))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(gradient)))


def test_vectors_are_fed_in_e3nn_axes():
    """e3nn harmonics of (y, z, x) are the standard ones: l = 1 is sqrt(3) (y, z, x) / r."""
    v = np.array([0.2, -0.6, 0.77])
    _, direction = safe_length_and_direction(to_e3nn_axes(jnp.asarray(v)))
    sh = e3nn.spherical_harmonics("1o", e3nn.IrrepsArray("1o", direction), normalize=False)
    expected = np.sqrt(3) * v[[1, 2, 0]] / np.linalg.norm(v)
    np.testing.assert_allclose(np.asarray(sh.array), expected, rtol=1e-5)


def test_tensor_product_matches_e3nn():
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    x = e3nn.normal(FEATURES, key1, (5,))
    y = e3nn.normal(SH, key2, (5,))
    wanted = e3nn.Irreps("0e+0o+1o+1e+2e+2o+3o")
    ours = tensor_product_mul1(x, y, wanted)
    reference = e3nn.tensor_product(x, y, filter_ir_out=wanted)
    assert ours.irreps == reference.irreps
    np.testing.assert_allclose(np.asarray(ours.array), np.asarray(reference.array), atol=1e-5)


def test_product_layout_names_channel_and_path():
    layout = product_layout(FEATURES, SH, None)
    x = np.zeros(FEATURES.dim, np.float32)
    channel = 7  # the second 1o copy: channels are 0e x4 (0-3), 0o x2 (4-5), then 1o x3 (6-8)
    start = FEATURES[:2].dim + 3
    x[start : start + 3] = [0.3, -1.0, 0.5]
    out = tensor_product_mul1(
        e3nn.IrrepsArray(FEATURES, jnp.asarray(x)), e3nn.normal(SH, jax.random.PRNGKey(1))
    )
    assert out.irreps == layout.irreps_out
    nonzero = np.abs(np.asarray(out.array)) > 0
    assert nonzero.any() and np.all(layout.channel[nonzero] == channel)
    assert set(layout.path[nonzero]) == {
        n for n, (ir_x, _, _) in enumerate(layout.path_types) if ir_x == e3nn.Irrep("1o")
    }


def test_regroup_matches_e3nn():
    x = e3nn.normal("2x1o+3x0e+1x2e+1x0e+1x1o", jax.random.PRNGKey(2), (3,))
    ours, reference = regroup(x), x.regroup()
    assert ours.irreps == reference.irreps
    np.testing.assert_array_equal(np.asarray(ours.array), np.asarray(reference.array))


@pytest.mark.parametrize("improper", [False, True])
def test_gate_and_layer_norm_are_equivariant(improper):
    rotation = random_rotation(4, improper=improper)
    gate_in = gate_input_irreps(FEATURES)
    x = np.asarray(e3nn.normal(gate_in, jax.random.PRNGKey(3), (6,)).array)
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        rotated_in = x @ irreps_rotation(gate_in, rotation).T
        out = gate(e3nn.IrrepsArray(gate_in, x), FEATURES)
        assert out.irreps == FEATURES
        rotated_out = gate(e3nn.IrrepsArray(gate_in, rotated_in), FEATURES)
        d = irreps_rotation(FEATURES, rotation)
        np.testing.assert_allclose(np.asarray(out.array) @ d.T, np.asarray(rotated_out.array), atol=1e-12)

        norm = EquivariantLayerNorm()
        features = e3nn.IrrepsArray(FEATURES, x[:, : FEATURES.dim] * 7.0)
        params = norm.init(jax.random.PRNGKey(0), features)
        normed = np.asarray(norm.apply(params, features).array)
        rotated = norm.apply(params, e3nn.IrrepsArray(FEATURES, features.array @ d.T))
        np.testing.assert_allclose(normed @ d.T, np.asarray(rotated.array), atol=1e-12)
    scalars = normed[:, :4]
    np.testing.assert_allclose(np.mean(scalars**2, axis=-1), 1.0, rtol=1e-3)
