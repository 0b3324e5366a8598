"""DeePMD-kit 3.2's warmup-stable-decay schedule (``type = "wsd"``, ../shared/reference/deepmd-wsd.md):
`hamflow schedule` equals an independent float64 implementation of its formulas to 1e-12 relative on
random valid inputs (every decay type, with and without warmup); the worked check; training's jitted
schedule; every validation error as one line naming the key."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_schedule_cli import parse_csv, run_cli, write_train_toml

from hamflow.errors import ConfigError
from hamflow.train.schedules import (
    learning_rate_scale,
    learning_rate_schedule,
    schedule_ends_training,
    schedule_table,
    scheduler_config_from_section,
    scheduler_config_to_section,
    validate_against_run,
)

PREFIX = "process.train.scheduler"


def wsd_reference(section: dict, num_steps: int, step: int) -> float:
    """The learning rate at ``step``, written from deepmd-wsd.md's formulas (float64, plain Python)."""
    start = section["start_lr"]
    stop = section["stop_lr"] if "stop_lr" in section else section["stop_lr_ratio"] * start
    if "warmup_ratio" in section:
        warmup = int(section["warmup_ratio"] * num_steps)
    else:
        warmup = section.get("warmup_steps", 0)
    factor = section.get("warmup_start_factor", 0.0)
    if step < warmup:
        return factor * start + (1 - factor) * start / warmup * step
    post = num_steps - warmup
    t = step - warmup
    decay = max(1, min(math.floor(section.get("decay_phase_ratio", 0.1) * num_steps), post))
    stable = post - decay
    if t >= post:
        return stop
    if t < stable:
        return start
    u = min(max((t - stable) / decay, 0.0), 1.0)
    kind = section.get("decay_type", "inverse_linear")
    if kind == "inverse_linear":
        return 1 / (u / stop + (1 - u) / start)
    if kind == "cosine":
        return stop + (start - stop) * (1 + math.cos(math.pi * u)) / 2
    return start + (stop - start) * u


def random_wsd_section(rng: np.random.Generator, num_steps: int) -> dict:
    section: dict = {"type": "wsd", "start_lr": float(10 ** rng.uniform(-5, -2))}
    ratio = float(10 ** rng.uniform(-6, 0))
    if rng.random() < 0.5:
        section["stop_lr_ratio"] = ratio
    else:
        section["stop_lr"] = section["start_lr"] * ratio
    warmup_kind = rng.integers(3)
    if warmup_kind == 1:
        section["warmup_steps"] = int(rng.integers(1, num_steps))
    elif warmup_kind == 2:
        section["warmup_ratio"] = float(rng.uniform(0.0, 0.9))
    if rng.random() < 0.7:
        section["warmup_start_factor"] = float(rng.uniform(0.0, 1.0))
    if rng.random() < 0.8:  # else the default 0.1
        section["decay_phase_ratio"] = float(rng.choice([1.0, rng.uniform(1e-3, 1.0)]))
    if rng.random() < 0.8:  # else the default inverse_linear
        section["decay_type"] = str(rng.choice(["inverse_linear", "cosine", "linear"]))
    return section


def test_csv_equals_the_wsd_formulas_on_random_valid_inputs(tmp_path, capsys):
    rng = np.random.default_rng(3_2_0)
    seen = set()
    for case in range(40):
        max_epoch, steps_per_epoch = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        num_steps = max_epoch * steps_per_epoch
        if num_steps < 2:
            continue
        section = random_wsd_section(rng, num_steps)
        seen.add(section.get("decay_type", "inverse_linear"))
        path = write_train_toml(tmp_path, max_epoch=max_epoch, scheduler=section, name=f"w{case}.toml")
        code, out, err = run_cli(capsys, path, "--steps-per-epoch", steps_per_epoch)
        assert code == 0, err
        steps, rates = parse_csv(out)
        assert steps.tolist() == list(range(num_steps))
        expected = [wsd_reference(section, num_steps, int(step)) for step in steps]
        np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0.0, err_msg=str(section))
        beyond = [0, num_steps - 1, num_steps, num_steps + 1, 3 * num_steps]
        code, out, _ = run_cli(
            capsys, path, "--steps-per-epoch", steps_per_epoch, "--steps", ",".join(map(str, beyond))
        )
        steps, rates = parse_csv(out)
        assert steps.tolist() == beyond
        np.testing.assert_allclose(rates, [wsd_reference(section, num_steps, s) for s in beyond], rtol=1e-12)
    assert seen == {"inverse_linear", "cosine", "linear"}


def test_the_worked_check_of_deepmd_wsd_md(tmp_path, capsys):
    section = {"type": "wsd", "start_lr": 1e-3, "stop_lr": 1e-6, "decay_phase_ratio": 0.1}
    path = write_train_toml(tmp_path, max_epoch=10, scheduler=section)
    code, out, _ = run_cli(capsys, path, "--steps-per-epoch", 100, "--steps", "0,899,900,950,999,1000,5000")
    assert code == 0
    rates = dict(zip(*parse_csv(out), strict=True))
    assert rates[0] == rates[899] == rates[900] == 1e-3
    assert rates[950] == pytest.approx(1.998002e-6, rel=1e-6)
    assert rates[999] == pytest.approx(1.010091e-6, rel=1e-6)
    assert rates[1000] == rates[5000] == 1e-6


def lr(section: dict, steps: list[int], total: int) -> dict[int, float]:
    cfg = scheduler_config_from_section(section)
    return dict(schedule_table(cfg, init_learning_rate=1.0, total_steps=total, steps=steps))


def test_decay_types_warmup_and_phase_boundaries():
    # N = 200, W = 20, D = 180, Nd = floor(0.25 x 200) = 50, Ns = 130: decay from step 150 to 200.
    base = {"type": "wsd", "start_lr": 1e-2, "stop_lr": 1e-4, "warmup_steps": 20, "warmup_start_factor": 0.5}
    base["decay_phase_ratio"] = 0.25
    for kind, middle in (
        ("inverse_linear", 1 / (0.5 / 1e-4 + 0.5 / 1e-2)),
        ("cosine", 1e-4 + (1e-2 - 1e-4) / 2),
        ("linear", (1e-2 + 1e-4) / 2),
    ):
        rates = lr({**base, "decay_type": kind}, [0, 10, 19, 20, 149, 150, 175, 199, 200, 900], 200)
        assert rates[0] == pytest.approx(5e-3, rel=1e-14)  # warmup_start_factor x start_lr
        assert rates[10] == pytest.approx(7.5e-3, rel=1e-14)
        assert rates[20] == rates[149] == rates[150] == 1e-2  # stable phase, u = 0 at its end
        assert rates[175] == pytest.approx(middle, rel=1e-13), kind  # u = 1/2
        assert rates[200] == rates[900] == 1e-4
        assert 1e-4 < rates[199] < rates[175]
    # decay_phase_ratio = 1: the decay phase is all post-warmup steps (min(floor(N), D) = D).
    rates = lr({**base, "decay_phase_ratio": 1.0, "decay_type": "linear"}, [20, 110], 200)
    assert rates[20] == 1e-2 and rates[110] == pytest.approx((1e-2 + 1e-4) / 2, rel=1e-13)
    # a tiny ratio still decays over one step (max(1, ...)).
    rates = lr(
        {"type": "wsd", "start_lr": 1e-3, "stop_lr_ratio": 0.1, "decay_phase_ratio": 1e-3}, [98, 99, 100], 100
    )
    assert rates == {98: 1e-3, 99: 1e-3, 100: pytest.approx(1e-4, rel=1e-15)}


def test_defaults_round_trip_and_no_early_stop():
    cfg = scheduler_config_from_section({"type": "wsd", "start_lr": 1e-3, "stop_lr_ratio": 1e-3})
    assert (cfg.decay_phase_ratio, cfg.decay_type, cfg.warmup_steps, cfg.warmup_start_factor) == (
        0.1,
        "inverse_linear",
        0,
        0.0,
    )
    section = scheduler_config_to_section(cfg)
    assert section["decay_phase_ratio"] == 0.1 and section["decay_type"] == "inverse_linear"
    assert scheduler_config_from_section(section) == cfg
    assert not schedule_ends_training(cfg, 0.0)  # DeePMD-kit types run to max_epoch
    other = scheduler_config_from_section({"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6})
    assert "decay_type" not in scheduler_config_to_section(other) and other.decay_type is None


@pytest.mark.parametrize("kind", ["inverse_linear", "cosine", "linear"])
def test_jitted_training_schedule_matches_the_float64_table(kind):
    import jax
    import jax.numpy as jnp

    section = {"type": "wsd", "start_lr": 1e-3, "stop_lr": 1e-5, "warmup_ratio": 0.05, "decay_type": kind}
    cfg = scheduler_config_from_section({**section, "decay_phase_ratio": 0.3})
    steps = np.arange(0, 1300, 7)
    expected = np.array(
        [v for _, v in schedule_table(cfg, init_learning_rate=2e-3, total_steps=1100, steps=steps)]
    )
    schedule = jax.jit(learning_rate_schedule(cfg, init_learning_rate=2e-3, total_steps=1100))
    # float32: start + (stop - start) u cancels near stop, so the error is float32's resolution of start_lr
    np.testing.assert_allclose(
        np.asarray(schedule(jnp.asarray(steps))), expected, rtol=2e-6, atol=2e-7 * 1e-3
    )
    scale = jax.jit(learning_rate_scale(cfg, init_learning_rate=2e-3, total_steps=1100))
    np.testing.assert_allclose(np.asarray(scale(jnp.asarray(steps))), expected / 1e-3, rtol=2e-6, atol=2e-7)


WSD_OK = {"type": "wsd", "start_lr": 1e-3, "stop_lr": 1e-6}

INVALID = [
    # wsd's own errors (DeePMD-kit's LearningRateWSD)
    ({**WSD_OK, "decay_phase_ratio": 0.0}, "decay_phase_ratio", "out of range; allowed: a number in (0, 1]"),
    ({**WSD_OK, "decay_phase_ratio": 1.5}, "decay_phase_ratio", "a number in (0, 1]"),
    ({**WSD_OK, "decay_phase_ratio": -0.1}, "decay_phase_ratio", "a number in (0, 1]"),
    ({**WSD_OK, "decay_phase_ratio": "0.1"}, "decay_phase_ratio", "wrong type (string)"),
    ({**WSD_OK, "decay_type": "exp"}, "decay_type", 'allowed: "inverse_linear", "cosine", "linear"'),
    ({**WSD_OK, "decay_type": 1}, "decay_type", "wrong type (integer)"),
    ({**WSD_OK, "stop_lr": 0.0}, "stop_lr", 'must be > 0 for type = "wsd"'),
    ({**WSD_OK, "stop_lr": -1e-6}, "stop_lr", "allowed: a number in [0, start_lr] (wsd: > 0)"),
    # the errors shared with exp / cosine
    ({"type": "wsd", "stop_lr": 1e-6}, "start_lr", 'is required for type = "wsd"'),
    ({**WSD_OK, "start_lr": 0.0}, "start_lr", "allowed: a number > 0"),
    ({"type": "wsd", "start_lr": 1e-3}, "stop_lr", "give exactly one of stop_lr"),
    ({**WSD_OK, "stop_lr_ratio": 1e-3}, "stop_lr_ratio", "are mutually exclusive"),
    ({"type": "wsd", "start_lr": 1e-3, "stop_lr_ratio": 0.0}, "stop_lr_ratio", "a number in (0, 1]"),
    ({**WSD_OK, "stop_lr": 1e-2}, "stop_lr", "is above start_lr"),
    ({**WSD_OK, "warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_ratio", "are mutually exclusive"),
    ({**WSD_OK, "warmup_ratio": 1.0}, "warmup_ratio", "a number in [0, 1)"),
    ({**WSD_OK, "warmup_steps": -5}, "warmup_steps", "an integer >= 0"),
    ({**WSD_OK, "warmup_start_factor": 1.5}, "warmup_start_factor", "a number in [0, 1]"),
    # keys wsd does not use, and wsd keys with other types
    ({**WSD_OK, "decay_steps": 5000}, "decay_steps", 'is not used by type = "wsd"'),
    ({**WSD_OK, "decay_rate": 0.9}, "decay_rate", 'used only with type = "exp"'),
    ({**WSD_OK, "smooth": True}, "smooth", 'used only with type = "exp"'),
    (
        {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6, "decay_type": "linear"},
        "decay_type",
        'only with type = "wsd"',
    ),
    (
        {"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-6, "decay_phase_ratio": 0.2},
        "decay_phase_ratio",
        '"wsd"',
    ),
    ({"decay_type": "cosine"}, "decay_type", 'used only with type = "wsd"'),
]


@pytest.mark.parametrize(
    ("section", "key", "words"), INVALID, ids=[f"{i}-{c[1]}" for i, c in enumerate(INVALID)]
)
def test_each_invalid_wsd_section_is_one_line_naming_the_key(section, key, words):
    with pytest.raises(ConfigError) as caught:
        scheduler_config_from_section(section, source="train.toml")
    message = str(caught.value)
    assert message.startswith(f"train.toml: [{PREFIX}.{key}] "), message
    assert words in message and "\n" not in message


def test_warmup_must_leave_a_decay_phase():
    cfg = scheduler_config_from_section({**WSD_OK, "warmup_steps": 100})
    with pytest.raises(ConfigError, match=r"\[process\.train\.scheduler\.warmup_steps\] = 100, not smaller"):
        validate_against_run(cfg, total_steps=100)


@pytest.mark.slow
def test_training_follows_the_wsd_schedule(h2o_dir, jax_cache, tmp_path):
    """3 epochs x 3 steps: the learning rate of each epoch's last step is the schedule's, in metrics.csv."""
    import csv

    from training_setup import tiny_config

    from hamflow.train import run as train_run

    section = {
        "type": "wsd",
        "start_lr": 2e-3,
        "stop_lr": 2e-5,
        "decay_phase_ratio": 0.5,
        "decay_type": "cosine",
    }
    cfg = tiny_config(h2o_dir, tmp_path, jax_cache, **{"process.train.max_epoch": 3})
    from hamflow.config.train_config import train_config_to_dict

    data = train_config_to_dict(cfg)
    data["process"]["train"]["scheduler"] = section
    from hamflow.config.train_config import parse_train_config

    cfg = parse_train_config(data)
    result = train_run.train(cfg, run_dir=tmp_path / "run")
    assert result.epochs_done == 3 and result.stopped_because == "max_epoch"
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    total = 3 * 3  # 6 training structures, batch_size 2
    table = dict(schedule_table(cfg.process.train.scheduler, init_learning_rate=1.0, total_steps=total))
    for row in rows:
        last_step = int(row["step"]) - 1
        assert float(row["learning_rate"]) == pytest.approx(table[last_step], rel=1e-5), row
        assert float(row["lr_scale"]) == pytest.approx(
            table[int(row["step"])] / 2e-3 if int(row["step"]) < total else 1e-2, rel=1e-5
        ), row
