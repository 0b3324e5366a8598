"""Learning-rate schedules: hand-computed values at the boundaries, the section's validation errors,
the resolved-section round trip and the jittable optax schedule against the float64 table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hamflow.errors import ConfigError
from hamflow.train.schedules import (
    effective_warmup_steps,
    learning_rate_scale,
    learning_rate_schedule,
    plot_schedule,
    schedule_ends_training,
    schedule_table,
    scheduler_config_from_section,
    scheduler_config_to_section,
    validate_against_run,
)

PREFIX = "process.train.scheduler"


def lr_at(section: dict, steps: list[int], *, total_steps: int, init_lr: float = 2e-3) -> dict[int, float]:
    cfg = scheduler_config_from_section(section)
    rows = schedule_table(cfg, init_learning_rate=init_lr, total_steps=total_steps, steps=steps)
    return dict(rows)


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=1e-13, abs_tol=0.0)


# --------------------------------------------------------------------------------------------------
# Boundaries, hand-computed
# --------------------------------------------------------------------------------------------------


def test_reduce_on_plateau_is_constant_init_learning_rate():
    lr = lr_at({}, [0, 1, 99, 100, 10_000], total_steps=100, init_lr=2e-3)
    assert lr == {0: 2e-3, 1: 2e-3, 99: 2e-3, 100: 2e-3, 10_000: 2e-3}


def test_warmup_cosine_decay_boundaries():
    # init_scale 0.1 -> 1 over 10 steps; cosine 1 -> 0.01 over 100 steps; hold 0.01 afterwards.
    section = {
        "type": "warmup_cosine_decay",
        "init_scale": 0.1,
        "warmup_steps": 10,
        "decay_steps": 100,
        "end_scale": 0.01,
    }
    lr = lr_at(section, [0, 9, 10, 60, 110, 199, 200, 5000], total_steps=200, init_lr=2e-3)
    assert close(lr[0], 2e-3 * 0.1)  # step 0
    assert close(lr[9], 2e-3 * (0.1 + 0.9 * 9 / 10))  # last warmup step: 0.91
    assert close(lr[10], 2e-3)  # first decay step: scale 1
    assert close(lr[60], 2e-3 * (0.01 + 0.99 * 0.5))  # half way: cos(pi/2) = 0
    for step in (110, 199, 200, 5000):  # end of decay, last step, num_steps, beyond
        assert close(lr[step], 2e-3 * 0.01)


def test_warmup_cosine_decay_minus_one_means_rest_of_run_and_zero():
    section = {"type": "warmup_cosine_decay", "warmup_steps": 10, "decay_steps": -1, "end_scale": -1.0}
    lr = lr_at(section, [0, 9, 10, 60, 109, 110, 400], total_steps=110, init_lr=1e-3)
    assert close(lr[0], 1e-4)  # default init_scale 0.1
    assert close(lr[10], 1e-3)
    assert close(lr[60], 0.5e-3)  # decay over 110 - 10 = 100 steps, half way
    assert close(lr[109], 1e-3 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert lr[110] == 0.0 and lr[400] == 0.0


def test_warmup_cosine_decay_without_warmup_starts_at_one():
    lr = lr_at({"type": "warmup_cosine_decay", "warmup_steps": 0, "decay_steps": 4}, [0, 2, 4], total_steps=8)
    assert close(lr[0], 2e-3) and close(lr[2], 1e-3) and lr[4] == 0.0


def test_warmup_cosine_decay_accepts_integral_float_steps():
    cfg = scheduler_config_from_section({"type": "warmup_cosine_decay", "decay_steps": 2e5})
    assert cfg.decay_steps == 200000 and isinstance(cfg.decay_steps, int)
    with pytest.raises(ConfigError, match=rf"\[{PREFIX}\.decay_steps\] = 2\.5 has the wrong type"):
        scheduler_config_from_section({"type": "warmup_cosine_decay", "decay_steps": 2.5})


EXP_WARMUP = {
    "type": "exp",
    "start_lr": 1e-3,
    "stop_lr_ratio": 1e-2,
    "decay_steps": 250,
    "warmup_steps": 100,
    "warmup_start_factor": 0.1,
}


def test_exp_stepped_boundaries():
    # decay phase T = 1100 - 100 = 1000 steps; rate r = (1e-2) ** (250 / 1000) = 10 ** -0.5.
    steps = [0, 99, 100, 349, 350, 600, 1099, 1100, 5000]
    lr = lr_at(EXP_WARMUP, steps, total_steps=1100)
    assert close(lr[0], 1e-4)  # warmup_start_factor x start_lr
    assert close(lr[99], 1e-4 + 9e-4 * 99 / 100)  # last warmup step
    assert close(lr[100], 1e-3)  # first decay step: start_lr
    assert close(lr[349], 1e-3)  # stepped: unchanged until the first decay_steps multiple
    assert close(lr[350], 1e-3 * 10**-0.5)
    assert close(lr[600], 1e-4)  # 2 decay periods
    assert close(lr[1099], 1e-3 * 10**-1.5)  # last step: floor(999 / 250) = 3
    assert close(lr[1100], 1e-5)  # num_steps: 4 periods = stop_lr
    assert lr[5000] == pytest.approx(1e-5, rel=1e-15)  # beyond: clipped at stop_lr


def test_exp_smooth_boundaries():
    lr = lr_at({**EXP_WARMUP, "smooth": True}, [100, 225, 600, 1100, 3000], total_steps=1100)
    assert close(lr[100], 1e-3)
    assert close(lr[225], 1e-3 * 10 ** (-0.5 * 0.5))  # half a period
    assert close(lr[600], 1e-4)
    assert close(lr[1100], 1e-5)
    assert lr[3000] == pytest.approx(1e-5, rel=1e-15)


def test_exp_decay_steps_longer_than_decay_phase_is_adjusted_like_deepmd():
    # default decay_steps 5000 >= T = 1000 and no decay_rate: decay_steps -> 1000 // 100 + 1 = 11.
    section = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6}
    lr = lr_at(section, [0, 10, 11, 1000], total_steps=1000)
    rate = (1e-6 / 1e-3) ** (11 / 1000)
    assert close(lr[0], 1e-3) and close(lr[10], 1e-3)
    assert close(lr[11], 1e-3 * rate)
    assert close(lr[1000], 1e-3 * rate ** (1000 // 11))
    # T // 10 > 100: decay_steps -> 100.
    lr = lr_at(section, [99, 100], total_steps=2000)
    assert close(lr[99], 1e-3) and close(lr[100], 1e-3 * (1e-3) ** (100 / 2000))


def test_exp_with_decay_rate_is_clipped_at_stop_lr():
    section = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 10, "decay_rate": 0.5}
    lr = lr_at(section, [0, 9, 10, 30, 40, 500], total_steps=100)
    assert lr[0] == 1e-3 and lr[9] == 1e-3
    assert close(lr[10], 5e-4) and close(lr[30], 1.25e-4)
    assert lr[40] == 1e-4 and lr[500] == 1e-4  # 6.25e-5 < stop_lr


def test_cosine_boundaries_with_warmup_ratio():
    # warmup int(0.1 x 1100) = 110 steps from 0; cosine over 990 steps from 1e-3 to 1e-5.
    section = {"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-5, "warmup_ratio": 0.1}
    cfg = scheduler_config_from_section(section)
    assert effective_warmup_steps(cfg, total_steps=1100) == 110
    lr = lr_at(section, [0, 109, 110, 605, 1099, 1100, 9000], total_steps=1100)
    assert lr[0] == 0.0
    assert close(lr[109], 1e-3 * 109 / 110)
    assert close(lr[110], 1e-3)
    assert close(lr[605], 1e-5 + (1e-3 - 1e-5) / 2)  # half way through the decay phase
    assert close(lr[1099], 1e-5 + (1e-3 - 1e-5) / 2 * (1 + math.cos(math.pi * 989 / 990)))
    assert close(lr[1100], 1e-5) and close(lr[9000], 1e-5)


def test_cosine_without_warmup_and_stop_lr_zero():
    lr = lr_at({"type": "cosine", "start_lr": 1e-3, "stop_lr": 0.0}, [0, 50, 100, 200], total_steps=100)
    assert lr[0] == 1e-3 and close(lr[50], 0.5e-3) and lr[100] == 0.0 and lr[200] == 0.0


def test_default_table_is_every_training_step():
    cfg = scheduler_config_from_section({"type": "cosine", "start_lr": 1.0, "stop_lr_ratio": 0.5})
    rows = schedule_table(cfg, init_learning_rate=1.0, total_steps=4, steps=None)
    assert [step for step, _ in rows] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="negative step -1"):
        schedule_table(cfg, init_learning_rate=1.0, total_steps=4, steps=[0, -1])


# --------------------------------------------------------------------------------------------------
# The jittable optax schedule and the lr scale
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        EXP_WARMUP,
        {**EXP_WARMUP, "smooth": True},
        {"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-5, "warmup_steps": 37, "warmup_start_factor": 0.2},
        {"type": "warmup_cosine_decay", "warmup_steps": 50, "decay_steps": 600, "end_scale": 0.05},
        {"type": "reduce_on_plateau"},
    ],
    ids=["exp", "exp-smooth", "cosine", "warmup_cosine_decay", "reduce_on_plateau"],
)
def test_jitted_schedule_matches_float64_table(section):
    import jax
    import jax.numpy as jnp

    cfg = scheduler_config_from_section(section)
    kwargs = dict(init_learning_rate=2e-3, total_steps=1100)
    steps = np.arange(0, 1300, 7)
    expected = np.array([lr for _, lr in schedule_table(cfg, steps=steps.tolist(), **kwargs)])
    schedule = jax.jit(learning_rate_schedule(cfg, **kwargs))
    got = np.asarray(schedule(jnp.asarray(steps)))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-12)
    scale = jax.jit(learning_rate_scale(cfg, **kwargs))
    reference = cfg.start_lr if cfg.start_lr is not None else 2e-3
    np.testing.assert_allclose(
        np.asarray(scale(jnp.asarray(steps))), expected / reference, rtol=2e-6, atol=1e-9
    )


def test_schedule_accepts_python_int_step():
    cfg = scheduler_config_from_section(EXP_WARMUP)
    schedule = learning_rate_schedule(cfg, init_learning_rate=2e-3, total_steps=1100)
    assert float(schedule(350)) == pytest.approx(1e-3 * 10**-0.5, rel=1e-6)


def test_min_learning_rate_scale_ends_training_for_deeph_types_only():
    plateau = scheduler_config_from_section({"min_learning_rate_scale": 1e-2})
    assert not schedule_ends_training(plateau, 0.02)
    assert schedule_ends_training(plateau, 0.01)  # reaches it
    assert schedule_ends_training(plateau, 0.005)
    cosine = scheduler_config_from_section({"type": "warmup_cosine_decay", "end_scale": -1.0})
    assert schedule_ends_training(cosine, 0.0) and not schedule_ends_training(cosine, 0.5)
    exp = scheduler_config_from_section({"type": "exp", "start_lr": 1e-3, "stop_lr_ratio": 1e-6})
    assert not schedule_ends_training(exp, 0.0)  # DeePMD-kit types run to max_epoch


def test_plot_schedule_writes_png(tmp_path):
    cfg = scheduler_config_from_section(EXP_WARMUP)
    rows = schedule_table(cfg, init_learning_rate=2e-3, total_steps=1100, steps=None)
    target = tmp_path / "plots" / "lr.png"
    plot_schedule(rows, target, title="exp")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["lr.png"]  # no temporary left behind


# --------------------------------------------------------------------------------------------------
# The section: defaults, validation errors one by one, round trip
# --------------------------------------------------------------------------------------------------


def test_defaults_per_type():
    rop = scheduler_config_from_section({})
    assert (rop.type, rop.factor, rop.patience, rop.rtol, rop.cooldown, rop.accum_size) == (
        "reduce_on_plateau",
        0.5,
        500,
        0.05,
        100,
        -1,
    )
    assert rop.min_learning_rate_scale == 1e-4
    wcd = scheduler_config_from_section({"type": "WarmupCosineDecay"})  # DeepH-pack's spelling
    assert (wcd.type, wcd.init_scale, wcd.warmup_steps, wcd.decay_steps, wcd.end_scale) == (
        "warmup_cosine_decay",
        0.1,
        1000,
        200000,
        -1.0,
    )
    exp = scheduler_config_from_section({"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-8})
    assert (exp.warmup_steps, exp.decay_steps, exp.smooth, exp.warmup_start_factor) == (0, 5000, False, 0.0)
    assert exp.decay_rate is None and exp.warmup_ratio is None
    cosine = scheduler_config_from_section({"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-8})
    assert (cosine.warmup_steps, cosine.decay_steps) == (0, 0)


def test_deeph_keys_are_accepted_with_deepmd_types():
    # DeepH-pack's example lists every DeepH-pack key whatever the type.
    deeph = {
        "min_learning_rate_scale": 1e-4,
        "factor": 0.5,
        "patience": 500,
        "rtol": 0.05,
        "cooldown": 100,
        "accum_size": -1,
        "init_scale": 0.1,
        "end_scale": -1.0,
    }
    cfg = scheduler_config_from_section({**deeph, "type": "cosine", "start_lr": 1e-3, "stop_lr_ratio": 0.1})
    assert cfg.type == "cosine" and cfg.factor == 0.5


def test_deepmd_warmup_steps_zero_with_warmup_ratio_is_accepted():
    # DeePMD-kit counts warmup_steps as given only when it is non-zero.
    section = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6, "warmup_steps": 0, "warmup_ratio": 0.2}
    cfg = scheduler_config_from_section(section)
    assert effective_warmup_steps(cfg, total_steps=1000) == 200


EXP_OK = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6}
COS_OK = {"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-6}

INVALID = [
    # (section, key, words in the message)
    ({"foo": 1}, "foo", "is not a known key of [process.train.scheduler]"),
    ({"type": "step"}, "type", "is not allowed; allowed:"),
    ({"factor": "0.5"}, "factor", "has the wrong type (string); expected a number"),
    ({"factor": 1.0}, "factor", "out of range; allowed: a number in (0, 1)"),
    ({"patience": 0}, "patience", "out of range; allowed: an integer >= 1"),
    ({"patience": True}, "patience", "wrong type (boolean)"),
    ({"patience": 2.5}, "patience", "wrong type (float); expected an integer"),
    ({"rtol": 0.0}, "rtol", "allowed: a number in (0, 1]"),
    ({"cooldown": -1}, "cooldown", "allowed: an integer >= 0"),
    ({"accum_size": 0}, "accum_size", "-1 (one epoch) or an integer >= 1"),
    ({"init_scale": 1.5}, "init_scale", "allowed: a number in [0, 1]"),
    ({"end_scale": -0.5}, "end_scale", "-1.0 (decay to 0) or a number in [0, 1]"),
    ({"min_learning_rate_scale": 1.0}, "min_learning_rate_scale", "a number in [0, 1)"),
    ({"type": "warmup_cosine_decay", "warmup_steps": -1}, "warmup_steps", "an integer >= 0"),
    (
        {"type": "warmup_cosine_decay", "init_scale": 1e-5, "min_learning_rate_scale": 1e-4},
        "init_scale",
        "must be above min_learning_rate_scale",
    ),
    ({"type": "warmup_cosine_decay", "start_lr": 1e-3}, "start_lr", "is a DeePMD-kit key"),
    (
        {"type": "reduce_on_plateau", "smooth": True},
        "smooth",
        'used only with type = "exp", "cosine" or "wsd"',
    ),
    # DeePMD-kit's rules
    ({"type": "exp", "stop_lr": 1e-6}, "start_lr", 'is required for type = "exp"'),
    ({"type": "cosine", "stop_lr": 1e-6}, "start_lr", 'is required for type = "cosine"'),
    ({**EXP_OK, "start_lr": 0.0}, "start_lr", "allowed: a number > 0"),
    ({"type": "exp", "start_lr": 1e-3}, "stop_lr", "give exactly one of stop_lr"),
    ({**EXP_OK, "stop_lr_ratio": 1e-3}, "stop_lr_ratio", "are mutually exclusive"),
    ({**COS_OK, "stop_lr_ratio": 1e-3}, "stop_lr_ratio", "are mutually exclusive"),
    ({"type": "exp", "start_lr": 1e-3, "stop_lr_ratio": 0.0}, "stop_lr_ratio", "a number in (0, 1]"),
    ({"type": "exp", "start_lr": 1e-3, "stop_lr_ratio": 1.5}, "stop_lr_ratio", "a number in (0, 1]"),
    ({**EXP_OK, "stop_lr": -1e-6}, "stop_lr", "allowed: a number in [0, start_lr]"),
    ({**EXP_OK, "stop_lr": 1e-2}, "stop_lr", "is above start_lr"),
    ({**EXP_OK, "warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_ratio", "are mutually exclusive"),
    ({**EXP_OK, "warmup_ratio": 1.0}, "warmup_ratio", "a number in [0, 1)"),
    ({**EXP_OK, "warmup_steps": -5}, "warmup_steps", "an integer >= 0"),
    ({**EXP_OK, "warmup_start_factor": 1.5}, "warmup_start_factor", "a number in [0, 1]"),
    ({**EXP_OK, "warmup_start_factor": -0.1}, "warmup_start_factor", "a number in [0, 1]"),
    ({**EXP_OK, "decay_steps": 0}, "decay_steps", "an integer > 0"),
    ({**EXP_OK, "decay_steps": -1}, "decay_steps", "an integer > 0"),
    ({**EXP_OK, "decay_rate": 0.0}, "decay_rate", "a number in (0, 1]"),
    ({**EXP_OK, "decay_rate": 1.5}, "decay_rate", "a number in (0, 1]"),
    ({**EXP_OK, "smooth": "yes"}, "smooth", "expected true or false"),
    ({**COS_OK, "smooth": True}, "smooth", 'used only with type = "exp"'),
    ({**COS_OK, "decay_rate": 0.9}, "decay_rate", 'used only with type = "exp"'),
    ({**COS_OK, "decay_steps": 5000}, "decay_steps", 'is not used by type = "cosine"'),
]


@pytest.mark.parametrize(
    ("section", "key", "words"), INVALID, ids=[f"{i}-{c[1]}" for i, c in enumerate(INVALID)]
)
def test_each_invalid_section_names_key_value_and_rule(section, key, words):
    with pytest.raises(ConfigError) as caught:
        scheduler_config_from_section(section, source="train.toml")
    message = str(caught.value)
    assert message.startswith(f"train.toml: [{PREFIX}.{key}] ")
    assert words in message
    assert "\n" not in message


def test_section_must_be_a_table():
    with pytest.raises(ConfigError, match=rf"\[{PREFIX}\] = 3 must be a table"):
        scheduler_config_from_section(3)  # type: ignore[arg-type]


RUN_CHECKS = [
    ({**EXP_OK, "warmup_steps": 100}, 100, "warmup_steps", "= 100, not smaller than the 100 training steps"),
    ({**COS_OK, "warmup_steps": 150}, 100, "warmup_steps", "the decay phase would be empty"),
    ({"type": "warmup_cosine_decay", "warmup_steps": 1000}, 500, "warmup_steps", "not smaller than the 500"),
    ({"accum_size": 64}, 50, "accum_size", "the plateau rule would never be evaluated"),
]


@pytest.mark.parametrize(("section", "total", "key", "words"), RUN_CHECKS)
def test_checks_against_the_run_length(section, total, key, words):
    cfg = scheduler_config_from_section(section)
    with pytest.raises(ConfigError) as caught:
        validate_against_run(cfg, total_steps=total)
    assert str(caught.value).startswith(f"[{PREFIX}.{key}] ") and words in str(caught.value)
    with pytest.raises(ConfigError, match=key):  # the schedule itself refuses too
        learning_rate_schedule(cfg, init_learning_rate=1e-3, total_steps=total)


def test_run_needs_at_least_one_step():
    with pytest.raises(ConfigError, match=r"\[process\.train\.max_epoch\] gives 0 training steps"):
        validate_against_run(scheduler_config_from_section({}), total_steps=0)


@pytest.mark.parametrize(
    "section",
    [
        {},
        {"type": "warmup_cosine_decay", "warmup_steps": 10, "decay_steps": -1, "factor": 0.3},
        {**EXP_OK, "warmup_ratio": 0.1, "decay_rate": 0.9, "smooth": True, "warmup_start_factor": 0.5},
        {"type": "cosine", "start_lr": 1e-3, "stop_lr_ratio": 1e-2, "warmup_steps": 20},
    ],
)
def test_resolved_section_round_trips(section):
    import tomllib

    import tomli_w

    cfg = scheduler_config_from_section(section)
    resolved = scheduler_config_to_section(cfg)
    assert all(value is not None for value in resolved.values())
    reread = tomllib.loads(tomli_w.dumps({"scheduler": resolved}))["scheduler"]
    assert scheduler_config_from_section(reread) == cfg


# --------------------------------------------------------------------------------------------------
# DeepH-pack's newer template: warmup_exponential_decay (optax's schedule on the scale, rate 0.5)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("staircase", [True, False])
@pytest.mark.parametrize("end_scale", [-1.0, 0.2])
def test_warmup_exponential_decay_equals_optax(staircase, end_scale):
    import jax.numpy as jnp
    import optax

    from hamflow.train.schedules import WARMUP_EXPONENTIAL_DECAY_RATE

    section = {
        "type": "WarmupExponentialDecay",  # CamelCase like DeepH-pack's other type names
        "init_scale": 0.1,
        "warmup_steps": 10,
        "transition_begin": 5,
        "transition_steps": 20,
        "staircase": staircase,
        "end_scale": end_scale,
    }
    steps = list(range(0, 260, 3))
    got = lr_at(section, steps, total_steps=300, init_lr=2e-3)
    reference = optax.warmup_exponential_decay_schedule(
        0.1,
        1.0,
        10,
        20,
        WARMUP_EXPONENTIAL_DECAY_RATE,
        5,
        staircase,
        None if end_scale == -1.0 else end_scale,
    )
    expected = [2e-3 * float(reference(jnp.asarray(step))) for step in steps]
    np.testing.assert_allclose([got[s] for s in steps], expected, rtol=1e-6)  # optax evaluates in float32


def test_warmup_exponential_decay_boundaries_and_defaults():
    cfg = scheduler_config_from_section({"type": "warmup_exponential_decay"})
    assert (cfg.transition_begin, cfg.transition_steps, cfg.staircase, cfg.warmup_steps, cfg.end_scale) == (
        0,
        10000,
        True,
        1000,
        -1.0,
    )
    section = {
        "type": "warmup_exponential_decay",
        "warmup_steps": 4,
        "transition_steps": 10,
        "init_scale": 0.5,
    }
    lr = lr_at(section, [0, 2, 4, 13, 14, 24, 34], total_steps=100, init_lr=1.0)
    assert lr[0] == 0.5 and close(lr[2], 0.75) and lr[4] == 1.0
    assert lr[13] == 1.0 and close(lr[14], 0.5) and close(lr[24], 0.25) and close(lr[34], 0.125)
    assert schedule_ends_training(scheduler_config_from_section(section), 1e-4)  # min_learning_rate_scale


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"transition_steps": 0}, "transition_steps", "an integer >= 1"),
        ({"transition_begin": -1}, "transition_begin", "an integer >= 0"),
        ({"staircase": 1}, "staircase", "expected true or false"),
        (
            {"init_scale": 1e-5, "min_learning_rate_scale": 1e-4},
            "init_scale",
            "above min_learning_rate_scale",
        ),
        ({"start_lr": 1e-3}, "start_lr", "is a DeePMD-kit key"),
    ],
)
def test_warmup_exponential_decay_errors(section, key, words):
    with pytest.raises(ConfigError) as caught:
        scheduler_config_from_section({"type": "warmup_exponential_decay", **section}, source="train.toml")
    assert str(caught.value).startswith(f"train.toml: [{PREFIX}.{key}] ") and words in str(caught.value)


def test_warmup_exponential_decay_round_trips_and_needs_a_decay_phase():
    cfg = scheduler_config_from_section({"type": "warmup_exponential_decay", "staircase": False})
    assert scheduler_config_from_section(scheduler_config_to_section(cfg)) == cfg
    with pytest.raises(ConfigError, match="warmup_steps"):
        validate_against_run(cfg, total_steps=1000)  # default warmup 1000 steps
