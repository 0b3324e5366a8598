"""build_model: configuration checks, parameter counts at the defaults, host-side initialisation."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from nn_batches import CLUSTER_NUMBERS, CLUSTER_POSITIONS, molecule_batch

from hamflow.errors import ConfigError
from hamflow.graph.basis import CommonBasis
from hamflow.graph.irreps import default_net_irreps
from hamflow.nn.model import build_model, count_parameters, init_params

S3P2D2 = (0, 0, 0, 1, 1, 2, 2)


def parameter_count(net_type: str, shells: tuple[int, ...], *, consider_parity: bool) -> tuple[str, int]:
    irreps = default_net_irreps(CommonBasis(shells), consider_parity=consider_parity, net_type=net_type)
    model = build_model(
        net_type,
        shells,
        net_irreps=irreps,
        num_blocks=3,
        rmax=7.5,
        consider_parity=consider_parity,
    )
    batch = molecule_batch(CLUSTER_POSITIONS[:3], CLUSTER_NUMBERS[:3], sum(2 * l + 1 for l in shells))
    return irreps, count_parameters(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))


@pytest.mark.parametrize(
    ("net_type", "consider_parity", "low", "high"),
    [("sparrow", True, 2e5, 1e6), ("sparrow", False, 2e5, 1e6), ("eagle", False, 3e6, 7e6)],
)
def test_parameter_counts_at_defaults(net_type, consider_parity, low, high):
    """sparrow stays under 1M parameters and eagle is ~5M for s3p2d2 at the default irreps, 3 blocks."""
    irreps, count = parameter_count(net_type, S3P2D2, consider_parity=consider_parity)
    print(f"{net_type} parity={consider_parity} s3p2d2 {irreps}, 3 blocks: {count:,} parameters")
    assert low < count < high


def test_init_params_matches_flax_init_structure():
    model = build_model(
        "sparrow",
        (0, 1),
        net_irreps="4x0e+2x1o+2x2e",
        num_blocks=1,
        rmax=3.0,
        consider_parity=True,
    )
    batch = molecule_batch(CLUSTER_POSITIONS[:3], CLUSTER_NUMBERS[:3], 4)
    params = init_params(model, batch, seed=3)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    for leaf, shape in zip(jax.tree.leaves(params), jax.tree.leaves(shapes), strict=True):
        assert leaf.shape == shape.shape and leaf.dtype == np.float32
    again = init_params(model, batch, seed=3)
    assert all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True)
    )
    weights = [np.asarray(leaf) for leaf in jax.tree.leaves(params) if leaf.ndim == 2 and leaf.size > 100]
    assert abs(np.std(np.concatenate([w.ravel() for w in weights])) - 1.0) < 0.05


@pytest.mark.parametrize(
    ("arguments", "key", "text"),
    [
        ({"net_type": "owl"}, "model.net_type", "owl"),
        ({"net_type": "eagle", "consider_parity": True}, "model.advanced.consider_parity", "eagle"),
        ({"net_irreps": "8x0e+4x1o+4x2e", "consider_parity": False}, "model.advanced.net_irreps", "1o"),
        ({"net_irreps": "8x0e"}, "model.advanced.net_irreps", "1o"),
        ({"net_irreps": "8xx0e"}, "model.advanced.net_irreps", "8xx0e"),
        ({"net_irreps": "4x1o+4x2e"}, "model.advanced.net_irreps", "0e"),
        ({"num_blocks": 0}, "model.advanced.num_blocks", ">= 1"),
    ],
)
def test_config_errors_name_the_key(arguments, key, text):
    settings = {
        "net_type": "sparrow",
        "net_irreps": "8x0e+4x1o+4x2e",
        "num_blocks": 2,
        "rmax": 5.0,
        "consider_parity": True,
    } | arguments
    net_type = settings.pop("net_type")
    with pytest.raises(ConfigError) as error:
        build_model(net_type, (0, 1), **settings)
    assert f"[{key}]" in str(error.value) and text in str(error.value)


def test_a_non_positive_radial_cutoff_is_refused():
    # the key's range is checked once, by the schema (tests/config); build_model receives the resolved
    # length and refuses a non-positive one without naming a TOML key
    with pytest.raises(ValueError, match="rmax must be > 0"):
        build_model(
            "sparrow", (0, 1), net_irreps="8x0e+4x1o+4x2e", num_blocks=2, rmax=-1.0, consider_parity=True
        )


def test_aliases_build_the_same_networks():
    normal = build_model("normal", (0,), net_irreps="4x0e", num_blocks=1, rmax=3.0, consider_parity=True)
    accurate = build_model("accurate", (0,), net_irreps="4x0e", num_blocks=1, rmax=3.0, consider_parity=False)
    assert type(normal.backbone).__name__ == "Sparrow" and type(accurate.backbone).__name__ == "Eagle"
