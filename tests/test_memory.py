"""hamflow.memory: MemAvailable capped by a cgroup limit (a SLURM job's --mem)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hamflow import memory


def _fake_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, meminfo_kib: int, limit: str | None, used: int
):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kib} kB\n")
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(meminfo if path == "/proc/meminfo" else path, *a, **k),
    )
    limits = []
    if limit is not None:
        (tmp_path / "memory.max").write_text(limit + "\n")
        limits = [str(tmp_path / "memory.max")]
    (tmp_path / "memory.current").write_text(f"{used}\n")
    monkeypatch.setattr(memory, "_CGROUP_LIMITS", (str(tmp_path / "absent"), *limits))
    monkeypatch.setattr(memory, "_CGROUP_USAGE", (str(tmp_path / "memory.current"),))


def test_a_cgroup_limit_caps_mem_available(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_files(monkeypatch, tmp_path, 8 << 20, str(3 << 30), 1 << 30)  # 8 GiB free, 3 GiB job, 1 GiB used
    assert memory.available_memory_bytes() == 2 << 30


def test_no_limit_or_an_unlimited_cgroup_leaves_mem_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_files(monkeypatch, tmp_path, 8 << 20, "max", 1 << 30)
    assert memory.available_memory_bytes() == 8 << 30
    _fake_files(monkeypatch, tmp_path, 8 << 20, None, 1 << 30)
    assert memory.available_memory_bytes() == 8 << 30
