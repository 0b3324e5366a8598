"""The ``[process.train.scheduler]`` section of the training TOML: its keys, checks and dataclass.

:func:`scheduler_config_from_section` checks the raw table and fills the chosen type's defaults into a
:class:`SchedulerConfig`; :func:`scheduler_config_to_section` writes it back; :func:`validate_against_run`
holds the checks that need the run's step count. The learning-rate formulas built from a
:class:`SchedulerConfig` are in :mod:`hamflow.train.schedules` (``docs/schedules.md`` is the user's
page); the plateau rule in :mod:`hamflow.train.plateau`. This module is configuration only: it imports
nothing from ``hamflow.train``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hamflow.config.schema import KeySpec, coerce_value, dotted, toml_repr
from hamflow.errors import ConfigError

__all__ = [
    "ALL_KEYS",
    "DEEPH_TYPES",
    "DEEPMD_TYPES",
    "SCHEDULER_TYPES",
    "WARMUP_EXPONENTIAL_DECAY_RATE",
    "WSD_DECAY_TYPES",
    "SchedulerConfig",
    "scheduler_key_docs",
    "effective_warmup_steps",
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
    kind="string",
    default="reduce_on_plateau",
    choices=SCHEDULER_TYPES,
    aliases=tuple(_TYPE_ALIASES.items()),
    doc="the schedule: DeepH-pack's three (the learning rate is init_learning_rate x a scale the "
    "schedule moves) or DeePMD-kit's exp, cosine and wsd (hamflow addition, from start_lr); "
    "formulas in docs/schedules.md",
)

# Keys whose checks do not depend on the type. Defaults here are DeepH-pack's.
_COMMON_SPECS: dict[str, KeySpec] = {
    "min_learning_rate_scale": KeySpec(
        kind="float",
        default=1e-4,
        check=lambda x: 0.0 <= x < 1.0,
        allowed="a number in [0, 1)",
        doc="training stops once the learning-rate scale is at or below this value",
    ),
    "factor": KeySpec(
        kind="float",
        default=0.5,
        check=lambda x: 0.0 < x < 1.0,
        allowed="a number in (0, 1)",
        doc="the scale is multiplied by this on a loss plateau",
    ),
    "patience": KeySpec(
        kind="int",
        default=500,
        check=lambda x: x >= 1,
        allowed="an integer >= 1",
        doc="loss windows without improvement before the scale drops",
    ),
    "rtol": KeySpec(
        kind="float",
        default=0.05,
        check=lambda x: 0.0 < x <= 1.0,
        allowed="a number in (0, 1]",
        doc="relative improvement of the windowed loss that counts as progress",
    ),
    "cooldown": KeySpec(
        kind="int",
        default=100,
        check=lambda x: x >= 0,
        allowed="an integer >= 0",
        doc="loss windows after a drop during which the plateau rule waits",
    ),
    "accum_size": KeySpec(
        kind="int",
        default=-1,
        check=lambda x: x == -1 or x >= 1,
        allowed="-1 (one epoch) or an integer >= 1",
        doc="steps whose losses are averaged into one window of the plateau rule",
    ),
    "init_scale": KeySpec(
        kind="float",
        default=0.1,
        check=lambda x: 0.0 <= x <= 1.0,
        allowed="a number in [0, 1]",
        doc="scale at step 0; it rises linearly to 1 over warmup_steps",
    ),
    "end_scale": KeySpec(
        kind="float",
        default=-1.0,
        check=lambda x: x == -1.0 or 0.0 <= x <= 1.0,
        allowed="-1.0 (decay to 0) or a number in [0, 1]",
        doc="scale at the end of the decay (warmup_cosine_decay) or its floor (warmup_exponential_decay)",
    ),
    "transition_begin": KeySpec(
        kind="int",
        default=0,
        check=lambda x: x >= 0,
        allowed="an integer >= 0",
        doc="steps after the warmup before the exponential decay starts",
        origin="newer",
    ),
    "transition_steps": KeySpec(
        kind="int",
        default=10000,
        check=lambda x: x >= 1,
        allowed="an integer >= 1",
        doc=f"the scale is multiplied by {WARMUP_EXPONENTIAL_DECAY_RATE} every this many steps "
        "(hamflow's decay rate: the template has no key for it)",
        origin="newer",
    ),
    "staircase": KeySpec(
        kind="bool",
        default=True,
        doc="true: the scale drops in steps every transition_steps; false: continuously",
        origin="newer",
    ),
}

# warmup_steps / decay_steps: checks and defaults per type.
_DEEPH_WARMUP_STEPS = KeySpec(
    kind="int",
    default=1000,
    check=lambda x: x >= 0,
    allowed="an integer >= 0",
    doc="steps of the linear warmup (DeePMD-kit types: instead of warmup_ratio)",
)
_DEEPH_DECAY_STEPS = KeySpec(
    kind="int",
    default=200000,
    allowed="an integer (<= 0, e.g. -1: all steps after the warmup)",
    doc="steps of the cosine decay after the warmup (warmup_cosine_decay), or the steps between two "
    "multiplications by decay_rate (exp); not used by cosine and wsd",
)
_DEEPMD_WARMUP_STEPS = KeySpec(kind="int", default=0, check=lambda x: x >= 0, allowed="an integer >= 0")
_EXP_DECAY_STEPS = KeySpec(kind="int", default=5000, check=lambda x: x > 0, allowed="an integer > 0")

# DeePMD-kit-only keys (argcheck.learning_rate_args and the exp variant).
_DEEPMD_SPECS: dict[str, KeySpec] = {
    "start_lr": KeySpec(
        kind="float",
        default=None,
        check=lambda x: x > 0.0,
        allowed="a number > 0 (required)",
        doc="learning rate after the warmup",
        origin="hamflow",
    ),
    "stop_lr": KeySpec(
        kind="float",
        default=None,
        check=lambda x: x >= 0.0,
        allowed="a number in [0, start_lr] (wsd: > 0)",
        doc="learning rate at the last step; give exactly one of stop_lr and stop_lr_ratio",
        origin="hamflow",
    ),
    "stop_lr_ratio": KeySpec(
        kind="float",
        default=None,
        check=lambda x: 0.0 < x <= 1.0,
        allowed="a number in (0, 1]",
        doc="stop_lr = start_lr x stop_lr_ratio",
        origin="hamflow",
    ),
    "decay_rate": KeySpec(
        kind="float",
        default=None,
        check=lambda x: 0.0 < x <= 1.0,
        allowed="a number in (0, 1]",
        doc="factor per decay_steps; unset: computed so that the last step reaches stop_lr",
        origin="hamflow",
    ),
    "smooth": KeySpec(
        kind="bool",
        default=False,
        doc="true: decay continuously; false: in stairs of decay_steps",
        origin="hamflow",
    ),
    "warmup_ratio": KeySpec(
        kind="float",
        default=None,
        check=lambda x: 0.0 <= x < 1.0,
        allowed="a number in [0, 1)",
        doc="warmup of int(warmup_ratio x all steps) steps; not together with warmup_steps",
        origin="hamflow",
    ),
    "warmup_start_factor": KeySpec(
        kind="float",
        default=0.0,
        check=lambda x: 0.0 <= x <= 1.0,
        allowed="a number in [0, 1]",
        doc="the warmup starts at start_lr x warmup_start_factor",
        origin="hamflow",
    ),
}
_EXP_ONLY = ("decay_rate", "smooth")

# DeePMD-kit 3.2 wsd-only keys (LearningRateWSD).
_WSD_SPECS: dict[str, KeySpec] = {
    "decay_phase_ratio": KeySpec(
        kind="float",
        default=0.1,
        check=lambda x: 0.0 < x <= 1.0,
        allowed="a number in (0, 1]",
        doc="fraction of all steps spent in the final decay",
        origin="hamflow",
    ),
    "decay_type": KeySpec(
        kind="string",
        default="inverse_linear",
        choices=WSD_DECAY_TYPES,
        doc="shape of the final decay",
        origin="hamflow",
    ),
}

ALL_KEYS: tuple[str, ...] = (
    ("type",)
    + tuple(_COMMON_SPECS)
    + ("warmup_steps", "decay_steps")
    + tuple(_DEEPMD_SPECS)
    + tuple(_WSD_SPECS)
)


_PLATEAU = ("reduce_on_plateau",)
_WARMUP_TYPES = ("warmup_cosine_decay", "warmup_exponential_decay")
_EXPONENTIAL = ("warmup_exponential_decay",)
#: The types that use each key (a type ignores DeepH-pack's keys it does not use).
_USED_BY: dict[str, tuple[str, ...]] = {
    "type": SCHEDULER_TYPES,
    "min_learning_rate_scale": DEEPH_TYPES,
    **dict.fromkeys(("factor", "patience", "rtol", "cooldown", "accum_size"), _PLATEAU),
    "init_scale": _WARMUP_TYPES,
    "end_scale": _WARMUP_TYPES,
    **dict.fromkeys(("transition_begin", "transition_steps", "staircase"), _EXPONENTIAL),
    "warmup_steps": (*_WARMUP_TYPES, *DEEPMD_TYPES),
    "decay_steps": ("warmup_cosine_decay", "exp"),
    **dict.fromkeys(
        ("start_lr", "stop_lr", "stop_lr_ratio", "warmup_ratio", "warmup_start_factor"), DEEPMD_TYPES
    ),
    **dict.fromkeys(_EXP_ONLY, ("exp",)),
    **dict.fromkeys(_WSD_SPECS, ("wsd",)),
}


def scheduler_key_docs() -> list[tuple[str, tuple[tuple[str, KeySpec], ...], tuple[str, ...]]]:
    """(key, ((types, spec), ...), types that use it) for every key, in :data:`ALL_KEYS` order.

    A key has one spec, or one per type family where its default and range depend on ``type``
    (``warmup_steps``, ``decay_steps``). ``docs/config.md``'s scheduler table is rendered from this.
    """
    per_family = {
        "warmup_steps": (
            ("DeepH-pack types", _DEEPH_WARMUP_STEPS),
            ("DeePMD-kit types", _DEEPMD_WARMUP_STEPS),
        ),
        "decay_steps": (("DeepH-pack types", _DEEPH_DECAY_STEPS), ("exp", _EXP_DECAY_STEPS)),
    }
    specs = {"type": _TYPE_SPEC, **_COMMON_SPECS, **_DEEPMD_SPECS, **_WSD_SPECS}
    return [(name, per_family.get(name) or (("", specs[name]),), _USED_BY[name]) for name in ALL_KEYS]


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
