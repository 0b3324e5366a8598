"""Multi-node joining is only attempted inside a multi-task SLURM job step."""

from __future__ import annotations

import pytest

from hamflow.train import run as train_run


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"},
        {"SLURM_NTASKS": "4"},  # the batch script itself, not a job step: no join
    ],
)
def test_no_join_outside_a_multi_task_step(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    called = []
    monkeypatch.setattr(train_run.jax.distributed, "initialize", lambda *a, **k: called.append(1))
    assert train_run.join_slurm_processes() is False
    assert called == []


def test_join_inside_a_multi_task_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    called = []
    monkeypatch.setattr(train_run.jax.distributed, "initialize", lambda *a, **k: called.append(1))
    assert train_run.join_slurm_processes() is True
    assert called == [1]
