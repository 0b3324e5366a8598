"""`hamflow schedule`: CSV of step,learning_rate from a train.toml, equal to DeePMD-kit's formulas to
1e-12 relative on random valid inputs; plots; reduce_on_plateau note; one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tomli_w

from hamflow.cli import main

BASE = {
    "data": {"inputs_dir": "inputs", "outputs_dir": "outputs"},
    "model": {"advanced": {"net_irreps": ""}},
}


def write_train_toml(tmp_path, *, max_epoch, scheduler, init_learning_rate=2e-3, name="train.toml"):
    data = {
        **BASE,
        "process": {
            "train": {
                "max_epoch": max_epoch,
                "optimizer": {"init_learning_rate": init_learning_rate},
                "scheduler": scheduler,
            }
        },
    }
    path = tmp_path / name
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def run_cli(capsys, *argv):
    code = main(["schedule", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse_csv(text):
    lines = text.strip().splitlines()
    assert lines[0] == "step,learning_rate"
    rows = [line.split(",") for line in lines[1:]]
    return np.array([int(s) for s, _ in rows]), np.array([float(v) for _, v in rows])


def deepmd_reference(section: dict, num_steps: int, step: int) -> float:
    """DeePMD-kit's learning rate at ``step``, written from its documented formulas (doc/train/
    learning-rate.md, "Mathematical Theory") and its exp decay_steps adjustment."""
    start = section["start_lr"]
    stop = section["stop_lr"] if "stop_lr" in section else section["stop_lr_ratio"] * start
    if "warmup_ratio" in section:
        warmup = int(section["warmup_ratio"] * num_steps)
    else:
        warmup = section.get("warmup_steps", 0)
    factor = section.get("warmup_start_factor", 0.0)
    if step < warmup:
        return factor * start + (1 - factor) * start / warmup * step
    tau = step - warmup
    decay_phase = num_steps - warmup
    if section["type"] == "cosine":
        if tau >= decay_phase:
            return stop
        return stop + (start - stop) / 2 * (1 + math.cos(math.pi * tau / decay_phase))
    s = section.get("decay_steps", 5000)
    rate = section.get("decay_rate")
    if rate is None:
        if s >= decay_phase:
            s = 100 if decay_phase // 10 > 100 else decay_phase // 100 + 1
        rate = (max(stop, 1e-10) / start) ** (s / decay_phase)
    exponent = tau / s if section.get("smooth", False) else tau // s
    return max(start * rate**exponent, stop)


def random_deepmd_section(rng: np.random.Generator, num_steps: int) -> dict:
    section: dict = {"type": str(rng.choice(["exp", "cosine"])), "start_lr": float(10 ** rng.uniform(-5, -2))}
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
    if section["type"] == "exp":
        section["decay_steps"] = int(rng.integers(1, 2 * num_steps))  # also past the decay phase
        section["smooth"] = bool(rng.random() < 0.5)
        if rng.random() < 0.3:
            section["decay_rate"] = float(rng.uniform(0.5, 1.0))
    return section


def test_csv_agrees_with_deepmd_formulas_on_random_valid_inputs(tmp_path, capsys):
    rng = np.random.default_rng(20240611)
    for case in range(24):
        max_epoch, steps_per_epoch = int(rng.integers(1, 40)), int(rng.integers(1, 60))
        num_steps = max_epoch * steps_per_epoch
        if num_steps < 2:
            continue
        section = random_deepmd_section(rng, num_steps)
        path = write_train_toml(tmp_path, max_epoch=max_epoch, scheduler=section, name=f"t{case}.toml")
        code, out, err = run_cli(capsys, path, "--steps-per-epoch", steps_per_epoch)
        assert code == 0, err
        steps, rates = parse_csv(out)
        assert steps.tolist() == list(range(num_steps))  # every training step
        expected = [deepmd_reference(section, num_steps, int(step)) for step in steps]
        np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0.0, err_msg=str(section))
        beyond = [0, num_steps - 1, num_steps, num_steps + 1, 3 * num_steps]
        code, out, _ = run_cli(
            capsys, path, "--steps-per-epoch", steps_per_epoch, "--steps", ",".join(map(str, beyond))
        )
        steps, rates = parse_csv(out)
        assert steps.tolist() == beyond
        np.testing.assert_allclose(
            rates, [deepmd_reference(section, num_steps, s) for s in beyond], rtol=1e-12
        )


def test_deepmd_example_3_warmup_then_exp(tmp_path, capsys):
    # DeePMD-kit docs, example 3: from 1e-4 up to 1e-3 over 10000 steps, then down to 1e-6.
    section = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-6, "decay_steps": 5000, "warmup_steps": 10000,
               "warmup_start_factor": 0.1}  # fmt: skip
    path = write_train_toml(tmp_path, max_epoch=100, scheduler=section)
    code, out, _ = run_cli(capsys, path, "--steps-per-epoch", 1000, "--steps", "0,9999,10000,100000")
    assert code == 0
    rates = dict(zip(*parse_csv(out), strict=True))
    assert rates[0] == pytest.approx(1e-4, rel=1e-14)
    assert rates[10000] == pytest.approx(1e-3, rel=1e-14)
    assert rates[100000] == pytest.approx(1e-6, rel=1e-12)  # 18 periods of 5000 = the whole decay


def test_warmup_cosine_decay_csv_and_plot(tmp_path, capsys):
    section = {"type": "warmup_cosine_decay", "init_scale": 0.1, "warmup_steps": 10, "decay_steps": -1}
    path = write_train_toml(tmp_path, max_epoch=11, scheduler=section, init_learning_rate=1e-3)
    plot = tmp_path / "lr.png"
    code, out, err = run_cli(capsys, path, "--steps-per-epoch", 10, "--plot", plot)
    assert code == 0 and "plot written" in err
    steps, rates = parse_csv(out)
    assert len(steps) == 110
    assert rates[0] == pytest.approx(1e-4) and rates[10] == pytest.approx(1e-3)
    assert rates[60] == pytest.approx(0.5e-3)
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_reduce_on_plateau_says_it_assumes_no_plateau(tmp_path, capsys):
    path = write_train_toml(tmp_path, max_epoch=3, scheduler={"type": "reduce_on_plateau"})
    code, out, err = run_cli(capsys, path, "--steps-per-epoch", 2)
    assert code == 0
    assert "assume no plateau" in err and "factor = 0.5" in err
    _, rates = parse_csv(out)
    assert rates.tolist() == [2e-3] * 6


def test_errors_are_one_line_with_the_key(tmp_path, capsys):
    section = {"type": "cosine", "start_lr": 1e-3, "stop_lr": 1e-6, "warmup_steps": 500}
    path = write_train_toml(tmp_path, max_epoch=10, scheduler=section)
    code, out, err = run_cli(capsys, path, "--steps-per-epoch", 50)  # 500 steps: no decay phase
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "[process.train.scheduler.warmup_steps] = 500, not smaller than the 500 training steps" in err

    bad = write_train_toml(
        tmp_path, max_epoch=10, scheduler={"type": "exp", "start_lr": 1e-3}, name="bad.toml"
    )
    code, _, err = run_cli(capsys, bad, "--steps-per-epoch", 5)
    assert code == 2 and f"{bad}: [process.train.scheduler.stop_lr] is required" in err

    code, _, err = run_cli(capsys, path, "--steps-per-epoch", 0)
    assert code == 2 and "[--steps-per-epoch] = 0 must be an integer >= 1" in err


def test_bad_step_list_is_a_usage_error(tmp_path, capsys):
    path = write_train_toml(tmp_path, max_epoch=1, scheduler={})
    with pytest.raises(SystemExit) as caught:
        main(["schedule", str(path), "--steps-per-epoch", "4", "--steps", "0,ten"])
    assert caught.value.code == 2
    assert "expected integers separated by commas" in capsys.readouterr().err
