"""``[system] float_type``: the dtypes of parameters, computation and labels, and JAX's precision flags.

| float_type | params  | compute  | labels  | JAX settings                                            |
|------------|---------|----------|---------|---------------------------------------------------------|
| fp64       | float64 | float64  | float64 | ``jax_enable_x64`` on, matmul precision "highest"        |
| fp32       | float32 | float32  | float32 | x64 off, matmul precision "highest" (true float32)       |
| tf32       | float32 | float32  | float32 | x64 off, matmul precision "tensorfloat32" (TF32 units)   |
| bf16       | float32 | bfloat16 | float32 | x64 off, matmul precision "default"; fp32 master weights |

Labels stay at least float32 so that losses and metrics (eV) are accumulated in float32 or better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hamflow.errors import ConfigError

FLOAT_TYPES = ("bf16", "tf32", "fp32", "fp64")
FLOAT_TYPE_KEY = "system.float_type"

_MATMUL_PRECISION = {"fp64": "highest", "fp32": "highest", "tf32": "tensorfloat32", "bf16": "default"}


@dataclass(frozen=True)
class PrecisionPolicy:
    """Dtypes for one float_type: ``param_dtype`` (weights and optimizer state), ``compute_dtype``
    (activations inside the network), ``label_dtype`` (targets, losses, metrics)."""

    float_type: str
    param_dtype: Any
    compute_dtype: Any
    label_dtype: Any
    matmul_precision: str
    enable_x64: bool


def precision_policy(float_type: str) -> PrecisionPolicy:
    """The policy of ``float_type`` without touching JAX's global configuration."""
    import jax.numpy as jnp

    if float_type not in FLOAT_TYPES:
        allowed = ", ".join(f'"{name}"' for name in FLOAT_TYPES)
        raise ConfigError(FLOAT_TYPE_KEY, f"= {float_type!r} is not allowed; allowed: {allowed}")
    if float_type == "fp64":
        param, compute, label = jnp.float64, jnp.float64, jnp.float64
    elif float_type == "bf16":
        param, compute, label = jnp.float32, jnp.bfloat16, jnp.float32
    else:
        param, compute, label = jnp.float32, jnp.float32, jnp.float32
    return PrecisionPolicy(
        float_type=float_type,
        param_dtype=param,
        compute_dtype=compute,
        label_dtype=label,
        matmul_precision=_MATMUL_PRECISION[float_type],
        enable_x64=float_type == "fp64",
    )


def apply_float_type(float_type: str) -> PrecisionPolicy:
    """Set JAX's x64 mode and default matmul precision for ``float_type``; return its policy.

    Call once at start-up, before arrays are created (x64 changes the default dtypes).
    """
    import jax

    policy = precision_policy(float_type)
    jax.config.update("jax_enable_x64", policy.enable_x64)
    jax.config.update("jax_default_matmul_precision", policy.matmul_precision)
    return policy
