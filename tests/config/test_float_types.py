"""float_type -> dtypes and JAX precision settings."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import pytest

from hamflow.config.precision import FLOAT_TYPES, apply_float_type, precision_policy
from hamflow.errors import ConfigError


@pytest.fixture(autouse=True)
def restore_jax_precision() -> Iterator[None]:
    x64 = jax.config.jax_enable_x64
    matmul = jax.config.jax_default_matmul_precision
    yield
    jax.config.update("jax_enable_x64", x64)
    jax.config.update("jax_default_matmul_precision", matmul)


@pytest.mark.parametrize(
    "float_type, param, compute, label, x64, matmul",
    [
        ("fp64", jnp.float64, jnp.float64, jnp.float64, True, "highest"),
        ("fp32", jnp.float32, jnp.float32, jnp.float32, False, "highest"),
        ("tf32", jnp.float32, jnp.float32, jnp.float32, False, "tensorfloat32"),
        ("bf16", jnp.float32, jnp.bfloat16, jnp.float32, False, "default"),
    ],
)
def test_apply_float_type(float_type, param, compute, label, x64, matmul) -> None:
    policy = apply_float_type(float_type)
    assert (policy.param_dtype, policy.compute_dtype, policy.label_dtype) == (param, compute, label)
    assert policy.float_type == float_type
    assert jax.config.jax_enable_x64 is x64
    assert jax.config.jax_default_matmul_precision == matmul
    expected_default = jnp.float64 if x64 else jnp.float32
    assert jnp.zeros(2, dtype=float).dtype == expected_default


def test_fp64_then_fp32_switches_x64_off_again() -> None:
    apply_float_type("fp64")
    assert jnp.asarray(1.0).dtype == jnp.float64
    apply_float_type("fp32")
    assert jnp.asarray(1.0).dtype == jnp.float32


def test_bf16_keeps_fp32_master_weights() -> None:
    policy = apply_float_type("bf16")
    weights = jnp.ones((4, 4), policy.param_dtype)
    activations = jnp.ones((2, 4), policy.compute_dtype)
    out = activations @ weights.astype(policy.compute_dtype)
    assert weights.dtype == jnp.float32 and out.dtype == jnp.bfloat16


def test_policy_does_not_touch_jax() -> None:
    before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)
    for float_type in FLOAT_TYPES:
        precision_policy(float_type)
    assert (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision) == before


def test_unknown_float_type() -> None:
    with pytest.raises(ConfigError) as info:
        apply_float_type("fp16")
    assert (
        str(info.value)
        == '[system.float_type] = \'fp16\' is not allowed; allowed: "bf16", "tf32", "fp32", "fp64"'
    )
