"""Checkpoints: verified on load, and a kill -9 during a write never leaves one that looks valid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hamflow.errors import DataError
from hamflow.train import checkpoint as ckpt

WRITER = """
import sys, numpy as np
from pathlib import Path
from hamflow.train import checkpoint as ckpt
layout = ckpt.RunLayout(Path(sys.argv[1]))
payload = {"w": np.random.default_rng(0).normal(size=4_000_000)}  # 32 MB per write
for epoch in range(1, 10_000):
    ckpt.save_latest(layout, epoch, payload, {"opt": payload}, {"epoch": epoch}, keep=2)
    print(epoch, flush=True)
"""


def test_round_trip_and_pruning(tmp_path: Path) -> None:
    layout = ckpt.RunLayout(tmp_path)
    params = {"a": np.arange(5.0), "b": {"c": np.ones((2, 2))}}
    for epoch in (1, 2, 3):
        ckpt.save_latest(layout, epoch, params, {"s": np.asarray(epoch)}, {"epoch": epoch}, keep=2)
    assert [info.epoch for info in ckpt.list_epochs(layout.latest)] == [2, 3]
    assert [info.epoch for info in ckpt.list_epochs(layout.states)] == [2, 3]
    info = ckpt.newest_resumable(layout)
    assert info is not None and info.epoch == 3
    back = ckpt.read_payload(info.path, params)
    np.testing.assert_array_equal(back["b"]["c"], params["b"]["c"])


def test_a_checkpoint_of_another_shape_is_refused_not_loaded(tmp_path: Path) -> None:
    layout = ckpt.RunLayout(tmp_path)
    ckpt.save_latest(layout, 1, {"w": np.zeros((3, 2))}, {"s": np.asarray(1)}, {"epoch": 1}, keep=2)
    info = ckpt.newest_resumable(layout)
    assert info is not None
    with pytest.raises(DataError, match=r"\['w'\] has shape \(3, 2\), the model \(4, 2\)"):
        ckpt.read_payload(info.path, {"w": np.zeros((4, 2))})


def test_corrupted_payload_is_not_trusted(tmp_path: Path) -> None:
    layout = ckpt.RunLayout(tmp_path)
    params = {"a": np.arange(5.0)}
    for epoch in (1, 2):
        ckpt.save_latest(layout, epoch, params, {"s": np.asarray(epoch)}, {"epoch": epoch}, keep=5)
    payload = layout.latest / "epoch_2" / "params.msgpack"
    payload.write_bytes(payload.read_bytes()[:-3])
    info = ckpt.newest_resumable(layout)
    assert info is not None and info.epoch == 1


def test_params_without_state_are_not_resumable(tmp_path: Path) -> None:
    layout = ckpt.RunLayout(tmp_path)
    ckpt.write_payload(layout.latest / "epoch_4", "params.msgpack", {"a": np.zeros(2)}, {"epoch": 4})
    assert ckpt.newest_resumable(layout) is None


def test_kill_during_write_leaves_no_valid_looking_torn_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(0.15)  # now most likely in the middle of a write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    layout = ckpt.RunLayout(tmp_path)
    for parent in (layout.latest, layout.states):
        for child in parent.iterdir():
            if child.name.startswith("epoch_"):
                # every folder under its final name is complete and verifies
                meta = ckpt.read_meta(child)
                assert meta is not None, f"torn checkpoint visible: {child}"
                assert json.loads((child / "meta.json").read_text())["epoch"] == int(child.name.split("_")[1])
    info = ckpt.newest_resumable(layout)
    assert info is not None
    # the next save cleans up the temporary leftovers of the killed write
    ckpt.save_latest(layout, info.epoch + 1, {"w": np.zeros(3)}, {"opt": np.zeros(3)}, {"epoch": 0}, keep=2)
    assert not [c for c in layout.latest.iterdir() if c.name.startswith(".")]
