"""Learning-rate schedules of ``[process.train.scheduler]``: DeepH-pack's and DeePMD-kit's.

Four types (``docs/schedules.md`` is the user's page):

* ``reduce_on_plateau`` (DeepH-pack): the learning rate is ``init_learning_rate x scale`` where the
  scale only changes on a loss plateau (:mod:`hamflow.train.plateau`); the step schedule itself is
  constant ``init_learning_rate``.
* ``warmup_cosine_decay`` (DeepH-pack): scale rises linearly ``init_scale -> 1`` over
  ``warmup_steps``, then follows a cosine ``1 -> end_scale`` over ``decay_steps`` and holds
  ``end_scale`` beyond; ``end_scale = -1`` means 0, ``decay_steps <= 0`` means "all steps left
  after the warmup".
* ``warmup_exponential_decay`` (DeepH-pack's newer template): optax's
  ``warmup_exponential_decay_schedule`` on the scale: linear warmup ``init_scale -> 1`` over
  ``warmup_steps``, held at 1 for ``transition_begin`` steps, then ``0.5 ** (s / transition_steps)``
  (``s`` the steps since; floored when ``staircase``), never below ``end_scale`` (``-1``: no floor).
  The template has no key for the rate: hamflow uses :data:`WARMUP_EXPONENTIAL_DECAY_RATE` = 0.5.
* ``exp`` and ``cosine`` (DeePMD-kit >= 3.1.3, ``deepmd/dpmodel/utils/learning_rate.py``) and
  ``wsd`` (DeePMD-kit 3.2, warmup-stable-decay: ``start_lr`` held, then a final decay phase of
  ``decay_phase_ratio`` x all steps, ``decay_type`` inverse_linear / cosine / linear): absolute
  learning rates from ``start_lr`` with an optional linear warmup from
  ``warmup_start_factor x start_lr``; ``init_learning_rate`` is not used by these types.

The total number of training steps is ``max_epoch x steps_per_epoch`` (DeePMD-kit's ``num_steps``).
Learning rates are in the optimiser's units (per step); steps are 0-based optimiser updates.

One formula implementation serves two array back-ends: ``numpy`` in float64 for tables (exact to
~1e-16 against the DeePMD-kit formulas) and ``jax.numpy`` for the jittable optax schedule (float32
unless x64 is enabled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamflow.atomic import atomic_path
from hamflow.config.schema import KeySpec, coerce_value, dotted, toml_repr
from hamflow.errors import ConfigError
from hamflow.train.plateau import PlateauState, plateau_init, plateau_update, plateau_window

__all__ = [
    "DEEPH_TYPES",
    "DEEPMD_TYPES",
    "SCHEDULER_TYPES",
    "PlateauState",
    "SchedulerConfig",
    "effective_warmup_steps",
    "learning_rate_scale",
    "learning_rate_schedule",
    "plateau_init",
    "plateau_update",
    "plateau_window",
    "ScheduleReport",
    "format_schedule_csv",
    "plot_schedule",
    "schedule_ends_training",
    "schedule_report",
    "schedule_table",
    "scheduler_config_from_section",
    "scheduler_config_to_section",
    "validate_against_run",
]

DEEPH_TYPES = ("reduce_on_plateau", "warmup_cosine_decay", "warmup_exponential_decay")
DEEPMD_TYPES = ("exp", "cosine", "wsd")
WSD_DECAY_TYPES = ("inverse_linear", "cosine", "linear")
SCHEDULER_TYPES = DEEPH_TYPES + DEEPMD_TYPES
# DeepH-pack's description names the types in CamelCase; both spellings are accepted.
_TYPE_ALIASES = {
    "ReduceOnPlateau": "reduce_on_plateau",
    "WarmupCosineDecay": "warmup_cosine_decay",
    "WarmupExponentialDecay": "warmup_exponential_decay",
}
#: decay_rate of ``warmup_exponential_decay``: DeepH-pack's template has no key for it; the scale halves
#: every ``transition_steps`` steps (training stops once it reaches ``min_learning_rate_scale``).
WARMUP_EXPONENTIAL_DECAY_RATE = 0.5

# DeePMD-kit clamps stop_lr to this value inside log() when it computes the exp decay rate.
_DEEPMD_LOG_FLOOR = 1e-10


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Every key of ``[process.train.scheduler]``, resolved (defaults of the chosen ``type`` filled).

    ``warmup_steps`` / ``decay_steps`` are shared names whose meaning depends on ``type``:
    DeepH-pack's for ``warmup_cosine_decay`` (and carried, unused, by ``reduce_on_plateau``),
    DeePMD-kit's for ``exp`` / ``cosine`` (``decay_steps`` is 0 = unused for ``cosine``;
    ``warmup_steps`` is 0 when ``warmup_ratio`` is given). DeePMD-only fields are None / their
    DeePMD default for the DeepH-pack types; the wsd fields are None for every other type.
    """

    type: str
    min_learning_rate_scale: float
    # reduce_on_plateau
    factor: float
    patience: int
    rtol: float
    cooldown: int
    accum_size: int
    # warmup_cosine_decay (warmup_steps / decay_steps shared with DeePMD-kit, meaning per type)
    init_scale: float
    warmup_steps: int
    decay_steps: int
    end_scale: float
    # warmup_exponential_decay (DeepH-pack's newer template; also carries init_scale, warmup_steps,
    # end_scale)
    transition_begin: int
    transition_steps: int
    staircase: bool
    # DeePMD-kit exp / cosine
    start_lr: float | None
    stop_lr: float | None
    stop_lr_ratio: float | None
    decay_rate: float | None
    smooth: bool
    warmup_ratio: float | None
    warmup_start_factor: float
    # DeePMD-kit wsd
    decay_phase_ratio: float | None = None
    decay_type: str | None = None


# --------------------------------------------------------------------------------------------------
# The TOML section
# --------------------------------------------------------------------------------------------------

_TYPE_SPEC = KeySpec(
    kind="string", default="reduce_on_plateau", choices=SCHEDULER_TYPES, aliases=tuple(_TYPE_ALIASES.items())
)

# Keys whose checks do not depend on the type. Defaults here are DeepH-pack's.
_COMMON_SPECS: dict[str, KeySpec] = {
    "min_learning_rate_scale": KeySpec(
        kind="float", default=1e-4, check=lambda x: 0.0 <= x < 1.0, allowed="a number in [0, 1)"
    ),
    "factor": KeySpec(kind="float", default=0.5, check=lambda x: 0.0 < x < 1.0, allowed="a number in (0, 1)"),
    "patience": KeySpec(kind="int", default=500, check=lambda x: x >= 1, allowed="an integer >= 1"),
    "rtol": KeySpec(kind="float", default=0.05, check=lambda x: 0.0 < x <= 1.0, allowed="a number in (0, 1]"),
    "cooldown": KeySpec(kind="int", default=100, check=lambda x: x >= 0, allowed="an integer >= 0"),
    "accum_size": KeySpec(
        kind="int",
        default=-1,
        check=lambda x: x == -1 or x >= 1,
        allowed="-1 (one epoch) or an integer >= 1",
    ),
    "init_scale": KeySpec(
        kind="float", default=0.1, check=lambda x: 0.0 <= x <= 1.0, allowed="a number in [0, 1]"
    ),
    "end_scale": KeySpec(
        kind="float",
        default=-1.0,
        check=lambda x: x == -1.0 or 0.0 <= x <= 1.0,
        allowed="-1.0 (decay to 0) or a number in [0, 1]",
    ),
    "transition_begin": KeySpec(kind="int", default=0, check=lambda x: x >= 0, allowed="an integer >= 0"),
    "transition_steps": KeySpec(kind="int", default=10000, check=lambda x: x >= 1, allowed="an integer >= 1"),
    "staircase": KeySpec(kind="bool", default=True),
}

# warmup_steps / decay_steps: checks and defaults per type.
_DEEPH_WARMUP_STEPS = KeySpec(kind="int", default=1000, check=lambda x: x >= 0, allowed="an integer >= 0")
_DEEPH_DECAY_STEPS = KeySpec(
    kind="int", default=200000, allowed="an integer (<= 0, e.g. -1: all steps after the warmup)"
)
_DEEPMD_WARMUP_STEPS = KeySpec(kind="int", default=0, check=lambda x: x >= 0, allowed="an integer >= 0")
_EXP_DECAY_STEPS = KeySpec(kind="int", default=5000, check=lambda x: x > 0, allowed="an integer > 0")

# DeePMD-kit-only keys (argcheck.learning_rate_args and the exp variant).
_DEEPMD_SPECS: dict[str, KeySpec] = {
    "start_lr": KeySpec(kind="float", default=None, check=lambda x: x > 0.0, allowed="a number > 0"),
    "stop_lr": KeySpec(kind="float", default=None, check=lambda x: x >= 0.0, allowed="a number >= 0"),
    "stop_lr_ratio": KeySpec(
        kind="float", default=None, check=lambda x: 0.0 < x <= 1.0, allowed="a number in (0, 1]"
    ),
    "decay_rate": KeySpec(
        kind="float", default=None, check=lambda x: 0.0 < x <= 1.0, allowed="a number in (0, 1]"
    ),
    "smooth": KeySpec(kind="bool", default=False),
    "warmup_ratio": KeySpec(
        kind="float", default=None, check=lambda x: 0.0 <= x < 1.0, allowed="a number in [0, 1)"
    ),
    "warmup_start_factor": KeySpec(
        kind="float", default=0.0, check=lambda x: 0.0 <= x <= 1.0, allowed="a number in [0, 1]"
    ),
}
_EXP_ONLY = ("decay_rate", "smooth")

# DeePMD-kit 3.2 wsd-only keys (LearningRateWSD).
_WSD_SPECS: dict[str, KeySpec] = {
    "decay_phase_ratio": KeySpec(
        kind="float", default=0.1, check=lambda x: 0.0 < x <= 1.0, allowed="a number in (0, 1]"
    ),
    "decay_type": KeySpec(kind="string", default="inverse_linear", choices=WSD_DECAY_TYPES),
}

ALL_KEYS: tuple[str, ...] = (
    ("type",)
    + tuple(_COMMON_SPECS)
    + ("warmup_steps", "decay_steps")
    + tuple(_DEEPMD_SPECS)
    + tuple(_WSD_SPECS)
)


def _coerce(prefix: str, name: str, raw: Mapping[str, Any], spec: KeySpec, source: str | Path | None) -> Any:
    if name not in raw:
        return spec.default
    return coerce_value(dotted(prefix, name), raw[name], spec, source=source)


def scheduler_config_from_section(
    section: Mapping[str, Any],
    *,
    key_prefix: str = "process.train.scheduler",
    source: str | Path | None = None,
) -> SchedulerConfig:
    """Check the raw ``[process.train.scheduler]`` table (may be empty) and fill the type's defaults.

    Raises :class:`ConfigError` naming ``<key_prefix>.<key>``, the bad value and what is allowed, for
    unknown keys, wrong types, an unknown ``type``, out-of-range values and DeePMD-kit's rules:
    ``start_lr`` required for exp/cosine; exactly one of ``stop_lr`` / ``stop_lr_ratio``;
    ``stop_lr <= start_lr``; ``warmup_steps`` (non-zero) and ``warmup_ratio`` mutually exclusive;
    ``decay_rate`` / ``smooth`` only with exp; ``decay_steps`` not with cosine or wsd;
    ``decay_phase_ratio`` / ``decay_type`` only with wsd, where ``stop_lr`` must be > 0; DeePMD-kit
    keys not with the DeepH-pack types. DeepH-pack's own keys are accepted with every type (DeepH-pack's
    example lists them all); a type ignores the keys it does not use.
    """

    def error(name: str, problem: str) -> ConfigError:
        return ConfigError(dotted(key_prefix, name), problem, source=source)

    if not isinstance(section, Mapping):
        raise ConfigError(key_prefix, f"= {toml_repr(section)} must be a table", source=source)
    for name in section:
        if name not in ALL_KEYS:
            raise error(
                str(name), f"is not a known key of [{key_prefix}]; allowed keys: {', '.join(ALL_KEYS)}"
            )

    kind = _coerce(key_prefix, "type", section, _TYPE_SPEC, source)
    common = {name: _coerce(key_prefix, name, section, spec, source) for name, spec in _COMMON_SPECS.items()}

    if kind != "wsd":
        for name in _WSD_SPECS:
            if name in section:
                raise error(name, f'is used only with type = "wsd" (type is "{kind}"); remove it')
    if kind in DEEPH_TYPES:
        for name in _DEEPMD_SPECS:
            if name in section:
                raise error(
                    name,
                    'is a DeePMD-kit key, used only with type = "exp", "cosine" or "wsd" '
                    f'(type is "{kind}"); remove it or change the type',
                )
        warmup_steps = _coerce(key_prefix, "warmup_steps", section, _DEEPH_WARMUP_STEPS, source)
        decay_steps = _coerce(key_prefix, "decay_steps", section, _DEEPH_DECAY_STEPS, source)
        if (
            kind in ("warmup_cosine_decay", "warmup_exponential_decay")
            and warmup_steps > 0
            and common["init_scale"] <= common["min_learning_rate_scale"]
        ):
            raise error(
                "init_scale",
                f"= {toml_repr(common['init_scale'])} must be above min_learning_rate_scale = "
                f"{toml_repr(common['min_learning_rate_scale'])}, or training would stop at step 0",
            )
        return SchedulerConfig(
            type=kind,
            **common,
            warmup_steps=warmup_steps,
            decay_steps=decay_steps,
            start_lr=None,
            stop_lr=None,
            stop_lr_ratio=None,
            decay_rate=None,
            smooth=False,
            warmup_ratio=None,
            warmup_start_factor=0.0,
        )

    # DeePMD-kit exp / cosine / wsd.
    deepmd = {name: _coerce(key_prefix, name, section, spec, source) for name, spec in _DEEPMD_SPECS.items()}
    wsd = {name: _coerce(key_prefix, name, section, spec, source) for name, spec in _WSD_SPECS.items()}
    if kind in ("cosine", "wsd"):
        for name in _EXP_ONLY:
            if name in section:
                raise error(name, f'is used only with type = "exp" (type is "{kind}"); remove it')
        if "decay_steps" in section:
            why = (
                "it anneals over all steps after the warmup"
                if kind == "cosine"
                else "its decay phase is decay_phase_ratio x all steps"
            )
            raise error(
                "decay_steps",
                f'= {toml_repr(section["decay_steps"])} is not used by type = "{kind}" ({why}); remove it',
            )
        decay_steps = 0
    else:
        decay_steps = _coerce(key_prefix, "decay_steps", section, _EXP_DECAY_STEPS, source)
    warmup_steps = _coerce(key_prefix, "warmup_steps", section, _DEEPMD_WARMUP_STEPS, source)

    start_lr = deepmd["start_lr"]
    if start_lr is None:
        raise error("start_lr", f'is required for type = "{kind}"; expected a number > 0')
    stop_lr, stop_lr_ratio = deepmd["stop_lr"], deepmd["stop_lr_ratio"]
    if stop_lr is not None and stop_lr_ratio is not None:
        raise error(
            "stop_lr_ratio",
            f"= {toml_repr(stop_lr_ratio)} and stop_lr = {toml_repr(stop_lr)} are mutually exclusive; "
            "give exactly one of them",
        )
    if stop_lr is None and stop_lr_ratio is None:
        raise error(
            "stop_lr",
            f'is required for type = "{kind}": give exactly one of stop_lr (a number >= 0) or '
            "stop_lr_ratio (a number in (0, 1])",
        )
    if stop_lr is not None and stop_lr > start_lr:
        raise error(
            "stop_lr",
            f"= {toml_repr(stop_lr)} is above start_lr = {toml_repr(start_lr)}; allowed: a number in "
            "[0, start_lr]",
        )
    if kind == "wsd" and stop_lr is not None and stop_lr <= 0.0:
        raise error(
            "stop_lr",
            f'= {toml_repr(stop_lr)} must be > 0 for type = "wsd"; allowed: a number in (0, start_lr]',
        )
    if warmup_steps != 0 and deepmd["warmup_ratio"] is not None:
        raise error(
            "warmup_ratio",
            f"= {toml_repr(deepmd['warmup_ratio'])} and warmup_steps = {warmup_steps} are mutually "
            "exclusive; give at most one of them",
        )
    return SchedulerConfig(
        type=kind,
        **common,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        start_lr=start_lr,
        stop_lr=stop_lr,
        stop_lr_ratio=stop_lr_ratio,
        decay_rate=deepmd["decay_rate"],
        smooth=deepmd["smooth"],
        warmup_ratio=deepmd["warmup_ratio"],
        warmup_start_factor=deepmd["warmup_start_factor"],
        decay_phase_ratio=wsd["decay_phase_ratio"] if kind == "wsd" else None,
        decay_type=wsd["decay_type"] if kind == "wsd" else None,
    )


def scheduler_config_to_section(cfg: SchedulerConfig) -> dict[str, Any]:
    """The resolved section for the dumped ``model/train.toml`` (TOML has no null: unset keys are left out).

    Every DeepH-pack key is written (as DeepH-pack's example does); the DeePMD-kit keys only for
    exp / cosine / wsd, and only the ones that are set. ``scheduler_config_from_section`` of the result
    gives ``cfg`` back.
    """
    out: dict[str, Any] = {"type": cfg.type}
    for name in _COMMON_SPECS:
        out[name] = getattr(cfg, name)
    if cfg.type in DEEPH_TYPES:
        out["warmup_steps"] = cfg.warmup_steps
        out["decay_steps"] = cfg.decay_steps
        return out
    out["start_lr"] = cfg.start_lr
    if cfg.stop_lr_ratio is not None:
        out["stop_lr_ratio"] = cfg.stop_lr_ratio
    else:
        out["stop_lr"] = cfg.stop_lr
    if cfg.warmup_ratio is not None:
        out["warmup_ratio"] = cfg.warmup_ratio
    else:
        out["warmup_steps"] = cfg.warmup_steps
    out["warmup_start_factor"] = cfg.warmup_start_factor
    if cfg.type == "exp":
        out["decay_steps"] = cfg.decay_steps
        if cfg.decay_rate is not None:
            out["decay_rate"] = cfg.decay_rate
        out["smooth"] = cfg.smooth
    if cfg.type == "wsd":
        out["decay_phase_ratio"] = cfg.decay_phase_ratio
        out["decay_type"] = cfg.decay_type
    return out


# --------------------------------------------------------------------------------------------------
# Checks that need the number of steps
# --------------------------------------------------------------------------------------------------


def effective_warmup_steps(cfg: SchedulerConfig, *, total_steps: int) -> int:
    """Warmup length in steps: ``int(warmup_ratio x total_steps)`` (DeePMD-kit) or ``warmup_steps``.

    0 for ``reduce_on_plateau`` (it has no warmup).
    """
    if cfg.type == "reduce_on_plateau":
        return 0
    if cfg.warmup_ratio is not None:
        return int(cfg.warmup_ratio * total_steps)
    return cfg.warmup_steps


def validate_against_run(
    cfg: SchedulerConfig, *, total_steps: int, key_prefix: str = "process.train.scheduler"
) -> None:
    """Checks that need the total step count (``max_epoch x steps_per_epoch``); ConfigError if one fails.

    At least one step; the warmup (``warmup_steps`` or ``int(warmup_ratio x total_steps)``) shorter
    than the run, so that the decay phase is not empty (DeePMD-kit: "warmup_steps must be smaller
    than num_steps"); for ``reduce_on_plateau`` an ``accum_size`` window that fits in the run.
    """
    if total_steps < 1:
        raise ConfigError(
            "process.train.max_epoch",
            f"gives {total_steps} training steps (max_epoch x steps per epoch); at least 1 is needed",
        )
    warmup = effective_warmup_steps(cfg, total_steps=total_steps)
    if warmup >= total_steps:
        if cfg.warmup_ratio is not None:
            what = (
                f"= {toml_repr(cfg.warmup_ratio)} gives int({cfg.warmup_ratio!r} x {total_steps}) = {warmup}"
                " warmup steps"
            )
            name = "warmup_ratio"
        else:
            what, name = f"= {warmup}", "warmup_steps"
        raise ConfigError(
            dotted(key_prefix, name),
            f"{what}, not smaller than the {total_steps} training steps of the run (max_epoch x steps "
            "per epoch): the decay phase would be empty",
        )
    if cfg.type == "reduce_on_plateau" and cfg.accum_size > total_steps:
        raise ConfigError(
            dotted(key_prefix, "accum_size"),
            f"= {cfg.accum_size} is more than the {total_steps} training steps of the run: the plateau "
            "rule would never be evaluated",
        )


# --------------------------------------------------------------------------------------------------
# The formulas (one implementation; ``xp`` is numpy or jax.numpy)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """Scalars of one schedule once the run length is known (Python floats and ints)."""

    type: str
    reference_lr: float  # lr / scale: init_learning_rate (DeepH-pack types) or start_lr (DeePMD-kit)
    warmup_steps: int
    # warmup_cosine_decay
    init_scale: float = 1.0
    decay_steps: int = 0
    end_scale: float = 0.0
    # warmup_exponential_decay (end_scale is its floor, 0 for none)
    transition_begin: int = 0
    transition_steps: int = 1
    staircase: bool = True
    decay_rate: float = WARMUP_EXPONENTIAL_DECAY_RATE
    # DeePMD-kit
    warmup_start_lr: float = 0.0
    decay_num_steps: int = 0
    exp_decay_steps: int = 1
    exp_decay_rate: float = 1.0
    min_lr: float = 0.0
    smooth: bool = False
    lr_min_factor: float = 0.0
    # wsd: stable then decay phase lengths (steps after the warmup), the decay curve
    wsd_stable_steps: int = 0
    wsd_decay_steps: int = 1
    wsd_decay_type: str = "inverse_linear"


def _resolve(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> _Resolved:
    validate_against_run(cfg, total_steps=total_steps)
    warmup = effective_warmup_steps(cfg, total_steps=total_steps)
    if cfg.type == "reduce_on_plateau":
        return _Resolved(type=cfg.type, reference_lr=float(init_learning_rate), warmup_steps=0)
    if cfg.type == "warmup_cosine_decay":
        decay = cfg.decay_steps if cfg.decay_steps > 0 else total_steps - warmup
        return _Resolved(
            type=cfg.type,
            reference_lr=float(init_learning_rate),
            warmup_steps=warmup,
            init_scale=cfg.init_scale,
            decay_steps=decay,
            end_scale=0.0 if cfg.end_scale == -1.0 else cfg.end_scale,
        )
    if cfg.type == "warmup_exponential_decay":
        return _Resolved(
            type=cfg.type,
            reference_lr=float(init_learning_rate),
            warmup_steps=warmup,
            init_scale=cfg.init_scale,
            end_scale=0.0 if cfg.end_scale == -1.0 else cfg.end_scale,
            transition_begin=cfg.transition_begin,
            transition_steps=cfg.transition_steps,
            staircase=cfg.staircase,
        )
    start_lr = float(cfg.start_lr)
    stop_lr = start_lr * cfg.stop_lr_ratio if cfg.stop_lr_ratio is not None else float(cfg.stop_lr)
    decay_total = total_steps - warmup
    common = dict(
        type=cfg.type,
        reference_lr=start_lr,
        warmup_steps=warmup,
        warmup_start_lr=cfg.warmup_start_factor * start_lr,
        decay_num_steps=decay_total,
    )
    if cfg.type == "cosine":
        return _Resolved(**common, lr_min_factor=stop_lr / start_lr)
    if cfg.type == "wsd":
        decay_len = max(1, min(int(np.floor(cfg.decay_phase_ratio * total_steps)), decay_total))
        return _Resolved(
            **common,
            min_lr=stop_lr,
            wsd_stable_steps=decay_total - decay_len,
            wsd_decay_steps=decay_len,
            wsd_decay_type=str(cfg.decay_type),
        )
    # exp: DeePMD-kit's decay_steps adjustment and decay-rate interpolation.
    decay_steps = cfg.decay_steps
    if cfg.decay_rate is None and decay_steps >= decay_total:
        decay_steps = 100 if decay_total // 10 > 100 else decay_total // 100 + 1
    if cfg.decay_rate is not None:
        rate = float(cfg.decay_rate)
    else:
        clamped_stop = max(stop_lr, _DEEPMD_LOG_FLOOR)
        rate = float(np.exp(np.log(clamped_stop / start_lr) / (decay_total / decay_steps)))
    return _Resolved(
        **common, exp_decay_steps=decay_steps, exp_decay_rate=rate, min_lr=stop_lr, smooth=cfg.smooth
    )


def _deepmd_decay_lr(r: _Resolved, t: Any, xp: Any) -> Any:
    """Learning rate of the decay phase at decay-phase step ``t`` (float array, >= 0)."""
    if r.type == "exp":
        exponent = t / r.exp_decay_steps if r.smooth else xp.floor_divide(t, r.exp_decay_steps)
        lr = r.reference_lr * xp.power(xp.asarray(r.exp_decay_rate, dtype=t.dtype), exponent)
        return xp.maximum(lr, r.min_lr)
    if r.type == "wsd":
        return _wsd_decay_lr(r, t, xp)
    alpha = r.lr_min_factor
    lr = r.reference_lr * (alpha + 0.5 * (1 - alpha) * (1 + xp.cos(xp.pi * (t / r.decay_num_steps))))
    return xp.where(t >= r.decay_num_steps, r.reference_lr * alpha, lr)


def _wsd_decay_lr(r: _Resolved, t: Any, xp: Any) -> Any:
    """wsd after the warmup: ``start_lr`` for t < Ns, the decay curve over the Nd steps, ``stop_lr`` from D.

    u = clip((t - Ns) / Nd, 0, 1); inverse_linear 1 / (u / stop + (1 - u) / start), cosine
    stop + (start - stop) (1 + cos(pi u)) / 2, linear start + (stop - start) u.
    """
    start, stop = r.reference_lr, r.min_lr
    u = xp.clip((t - r.wsd_stable_steps) / r.wsd_decay_steps, 0.0, 1.0)
    if r.wsd_decay_type == "inverse_linear":
        decayed = 1.0 / (u / stop + (1.0 - u) / start)
    elif r.wsd_decay_type == "cosine":
        decayed = stop + (start - stop) * (1.0 + xp.cos(xp.pi * u)) / 2.0
    else:
        decayed = start + (stop - start) * u
    lr = xp.where(t < r.wsd_stable_steps, xp.asarray(start, dtype=t.dtype), decayed)
    return xp.where(t >= r.decay_num_steps, xp.asarray(stop, dtype=t.dtype), lr)


def _scale_and_lr(r: _Resolved, steps: Any, xp: Any, dtype: Any) -> tuple[Any, Any]:
    """(scale, learning rate) at ``steps`` (integer array); scale = lr / reference_lr."""
    t = xp.asarray(steps).astype(dtype)
    if r.type == "reduce_on_plateau":
        scale = xp.ones_like(t)
        return scale, r.reference_lr * scale
    if r.type == "warmup_exponential_decay":
        # optax.warmup_exponential_decay_schedule(init_scale, 1, W, transition_steps, rate,
        # transition_begin, staircase, end_value): 1 until transition_begin steps after the warmup.
        since = t - r.warmup_steps - r.transition_begin
        exponent = since / r.transition_steps
        if r.staircase:
            exponent = xp.floor(exponent)
        decayed = xp.power(xp.asarray(r.decay_rate, dtype=dtype), exponent)
        decayed = xp.where(since <= 0, xp.asarray(1.0, dtype=dtype), xp.maximum(decayed, r.end_scale))
        if r.warmup_steps > 0:
            warm = r.init_scale + (1 - r.init_scale) * (t / r.warmup_steps)
            scale = xp.where(t < r.warmup_steps, warm, decayed)
        else:
            scale = decayed
        return scale, r.reference_lr * scale
    if r.type == "warmup_cosine_decay":
        d = xp.clip(t - r.warmup_steps, 0, r.decay_steps)
        cosine = r.end_scale + (1 - r.end_scale) * 0.5 * (1 + xp.cos(xp.pi * (d / r.decay_steps)))
        decayed = xp.where(d >= r.decay_steps, xp.asarray(r.end_scale, dtype=dtype), cosine)
        if r.warmup_steps > 0:
            warm = r.init_scale + (1 - r.init_scale) * (t / r.warmup_steps)
            scale = xp.where(t < r.warmup_steps, warm, decayed)
        else:
            scale = decayed
        return scale, r.reference_lr * scale
    if r.warmup_steps == 0:
        lr = _deepmd_decay_lr(r, t, xp)
    else:
        warm = r.warmup_start_lr + (r.reference_lr - r.warmup_start_lr) * (t / r.warmup_steps)
        decay_step = xp.maximum(t - r.warmup_steps, xp.asarray(0.0, dtype=dtype))
        lr = xp.where(t < r.warmup_steps, warm, _deepmd_decay_lr(r, decay_step, xp))
    return lr / r.reference_lr, lr


# --------------------------------------------------------------------------------------------------
# Public schedules
# --------------------------------------------------------------------------------------------------


def learning_rate_schedule(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> Any:
    """The optax schedule ``step -> learning rate`` (jittable; step an int or a jnp integer array).

    ``reduce_on_plateau``: constant ``init_learning_rate`` (the training loop multiplies by the
    plateau scale). ``warmup_cosine_decay``: ``init_learning_rate x scale(step)``. ``exp`` /
    ``cosine``: DeePMD-kit's absolute learning rate from ``start_lr``; ``init_learning_rate`` is not
    used (wsd likewise). Computed in JAX's default float type (float32 unless x64 is enabled). Runs
    :func:`validate_against_run` first.
    """
    import jax.numpy as jnp

    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)

    def schedule(count: Any) -> Any:
        return _scale_and_lr(resolved, count, jnp, jnp.result_type(float))[1]

    return schedule


def learning_rate_scale(cfg: SchedulerConfig, *, init_learning_rate: float, total_steps: int) -> Any:
    """The optax schedule ``step -> lr / reference lr`` (what ``deepx.log`` prints as "lr scale").

    The reference is ``init_learning_rate`` for the DeepH-pack types (always 1 for
    ``reduce_on_plateau``, whose scale is :class:`PlateauState` ``.scale``) and ``start_lr`` for
    exp / cosine. Jittable, JAX's default float type.
    """
    import jax.numpy as jnp

    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)

    def scale(count: Any) -> Any:
        return _scale_and_lr(resolved, count, jnp, jnp.result_type(float))[0]

    return scale


def schedule_ends_training(cfg: SchedulerConfig, scale: float) -> bool:
    """DeepH-pack's rule: training stops once the lr scale is at or below ``min_learning_rate_scale``.

    Applies to ``reduce_on_plateau`` (``scale`` = the plateau scale) and ``warmup_cosine_decay``
    (``scale`` = :func:`learning_rate_scale` of the step). DeePMD-kit's exp / cosine run all
    ``max_epoch`` epochs (their end is ``stop_lr``), so they never end training early.
    """
    if cfg.type in DEEPMD_TYPES:
        return False
    return bool(scale <= cfg.min_learning_rate_scale)


def schedule_table(
    cfg: SchedulerConfig,
    *,
    init_learning_rate: float,
    total_steps: int,
    steps: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """``[(step, learning_rate), ...]`` in float64 for ``steps`` (default: every step ``0..total_steps-1``).

    Same formulas as :func:`learning_rate_schedule`, evaluated with numpy in float64 (agrees with
    DeePMD-kit's own float64 evaluation to ~1e-16 relative). ``reduce_on_plateau`` gives the
    constant ``init_learning_rate`` (no plateau assumed). Steps beyond the run are allowed (the
    schedule's "hold" value); a negative step raises ConfigError.
    """
    resolved = _resolve(cfg, init_learning_rate=init_learning_rate, total_steps=total_steps)
    if steps is None:
        step_array = np.arange(total_steps, dtype=np.int64)
    else:
        step_array = np.asarray(list(steps), dtype=np.int64)
        if step_array.size and int(step_array.min()) < 0:
            raise ConfigError(
                "--steps", f"contains the negative step {int(step_array.min())}; steps are >= 0"
            )
    _, lr = _scale_and_lr(resolved, step_array, np, np.float64)
    lr = np.broadcast_to(lr, step_array.shape)
    return [(int(s), float(v)) for s, v in zip(step_array.tolist(), lr.tolist(), strict=True)]


def plot_schedule(rows: Sequence[tuple[int, float]], path: str | Path, *, title: str = "") -> None:
    """Plot learning rate against step as a PNG at ``path`` (written atomically, matplotlib Agg).

    The y axis is logarithmic when all rates are positive and span more than two decades.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [row[0] for row in rows]
    rates = [row[1] for row in rows]
    figure = Figure(figsize=(7.0, 4.0), dpi=120)
    axes = figure.add_subplot()
    axes.plot(steps, rates, marker="." if len(rows) <= 50 else None, linewidth=1.2)
    positive = [rate for rate in rates if rate > 0]
    if rates and len(positive) == len(rates) and max(positive) > 100.0 * min(positive):
        axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("learning rate")
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")


# --------------------------------------------------------------------------------------------------
# `hamflow schedule`: the schedule of a train.toml before any GPU hour is spent
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleReport:
    """What ``hamflow schedule`` shows: the schedule's rows and a note about what they assume."""

    type: str
    total_steps: int  # max_epoch x steps_per_epoch
    rows: list[tuple[int, float]]  # (step, learning rate) in float64
    note: str  # "" or the assumption behind the rows (reduce_on_plateau)


def schedule_report(
    train_toml: str | Path, *, steps_per_epoch: int, steps: Sequence[int] | None = None
) -> ScheduleReport:
    """Load ``train_toml`` and tabulate its learning rate (every step, or ``steps``).

    The run has ``max_epoch x steps_per_epoch`` steps; ``init_learning_rate`` comes from
    ``[process.train.optimizer]``. ConfigError for a bad file, a bad ``steps_per_epoch`` or a
    schedule that does not fit the run (:func:`validate_against_run`).
    """
    from hamflow.config.train_config import load_train_config

    if steps_per_epoch < 1:
        raise ConfigError("--steps-per-epoch", f"= {steps_per_epoch} must be an integer >= 1")
    cfg = load_train_config(train_toml)
    train = cfg.process.train
    scheduler = train.scheduler
    total_steps = train.max_epoch * steps_per_epoch
    init_lr = train.optimizer.init_learning_rate
    rows = schedule_table(scheduler, init_learning_rate=init_lr, total_steps=total_steps, steps=steps)
    note = ""
    if scheduler.type == "reduce_on_plateau":
        note = (
            f"reduce_on_plateau: the rows assume no plateau (constant init_learning_rate = {init_lr!r}); "
            f"each plateau of patience = {scheduler.patience} evaluations multiplies the rate by "
            f"factor = {scheduler.factor!r}, and training stops once the scale reaches "
            f"min_learning_rate_scale = {scheduler.min_learning_rate_scale!r}"
        )
    return ScheduleReport(type=scheduler.type, total_steps=total_steps, rows=rows, note=note)


def format_schedule_csv(rows: Sequence[tuple[int, float]]) -> str:
    """``step,learning_rate`` CSV text; rates written with ``repr`` (round-trips the float64 exactly)."""
    lines = ["step,learning_rate"]
    lines.extend(f"{step},{rate!r}" for step, rate in rows)
    return "\n".join(lines) + "\n"
