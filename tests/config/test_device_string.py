"""The device string <type>*<num>[:<ids>]: grammar, environment set-up, mapping onto JAX devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import jax
import pytest

from hamflow.config import device as device_module
from hamflow.config.device import DeviceSpec, configure_jax_environment, parse_device, select_jax_devices
from hamflow.errors import ConfigError


@dataclass(frozen=True)
class FakeSystem:
    device: str
    jax_memory_preallocate: bool = True


@pytest.mark.parametrize(
    "text, expected",
    [
        ("gpu*8:1-4,7", DeviceSpec("gpu", "gpu", 8, (1, 2, 3, 4, 7))),
        ("gpu*8:0", DeviceSpec("gpu", "gpu", 8, (0,))),
        ("gpu*8", DeviceSpec("gpu", "gpu", 8, tuple(range(8)))),
        ("gpu*4:3,0-1", DeviceSpec("gpu", "gpu", 4, (0, 1, 3))),
        ("cuda*4:0,2", DeviceSpec("gpu", "cuda", 4, (0, 2))),
        ("rocm*2:1", DeviceSpec("gpu", "rocm", 2, (1,))),
        ("dcu*1:0", DeviceSpec("gpu", "dcu", 1, (0,))),
        ("gpu*16:10-15", DeviceSpec("gpu", "gpu", 16, (10, 11, 12, 13, 14, 15))),
        ("cpu*4", DeviceSpec("cpu", "cpu", 4, (0, 1, 2, 3))),
        ("cpu*1", DeviceSpec("cpu", "cpu", 1, (0,))),
        ("cpu*2:1", DeviceSpec("cpu", "cpu", 2, (0, 1))),  # cpu ids are ignored
        (" gpu*2:1 ", DeviceSpec("gpu", "gpu", 2, (1,))),
    ],
)
def test_parse_device(text: str, expected: DeviceSpec) -> None:
    assert parse_device(text) == expected


def test_spec_count_and_text() -> None:
    spec = parse_device("gpu*8:1-4,7")
    assert spec.count == 5
    assert str(spec) == "gpu*8:1,2,3,4,7" and parse_device(str(spec)) == spec
    assert str(parse_device("cpu*3:0")) == "cpu*3"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "is not a device string"),
        ("gpu", "is not a device string"),
        ("gpu*", "is not a device string"),
        ("gpu*8:", "is not a device string"),
        ("gpu8:0", "is not a device string"),
        ("gpu*8 :0", "is not a device string"),
        ("GPU*8:0", "is not a device string"),
        ("gpu*-1", "is not a device string"),
        ("gpu*2.5", "is not a device string"),
        ("tpu*8:0", 'unknown device type "tpu"'),
        ("gpu*0", "asks for 0 devices"),
        ("gpu*8:a", "is not a device string"),
        ("gpu*8:1-", "bad device id list"),
        ("gpu*8:1--2", "bad device id list"),
        ("gpu*8:,1", "bad device id list"),
        ("gpu*8:4-1", 'decreasing id range "4-1"'),
        ("gpu*8:8", "selects device id 8, but ids run from 0 to 7"),
        ("gpu*8:6-9", "selects device id 8, but ids run from 0 to 7"),
        ("gpu*8:1,1", "selects device id 1 twice"),
        ("gpu*8:1-3,2", "selects device id 2 twice"),
        ("cpu*2:x", "is not a device string"),
        ("cpu*2:5", "selects device id 5"),
    ],
)
def test_bad_device_strings(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_device(text)
    message = str(info.value)
    assert info.value.key == "system.device"
    assert problem in message and "expected <type>*<num>[:<ids>]" in message and "\n" not in message


def test_non_string_device() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_device(8)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ environment


def test_cpu_partitions_set_host_device_count_and_platform() -> None:
    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2"}
    configure_jax_environment(FakeSystem("cpu*4", jax_memory_preallocate=False), env)
    assert env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


@pytest.mark.parametrize(
    "text, variable, value",
    [
        ("gpu*8:1-4,7", "CUDA_VISIBLE_DEVICES", "1,2,3,4,7"),
        ("cuda*2:1", "CUDA_VISIBLE_DEVICES", "1"),
        ("rocm*4:0,3", "ROCR_VISIBLE_DEVICES", "0,3"),
        ("dcu*4:2", "HIP_VISIBLE_DEVICES", "2"),
        ("gpu*2", "CUDA_VISIBLE_DEVICES", "0,1"),
    ],
)
def test_accelerator_ids_set_the_visibility_variable(text: str, variable: str, value: str) -> None:
    env: dict[str, str] = {}
    configure_jax_environment(FakeSystem(text), env)
    assert env == {variable: value, "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}


def test_ids_index_into_an_existing_allocation() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}
    configure_jax_environment(FakeSystem("gpu*8:1-2"), env)
    assert env["CUDA_VISIBLE_DEVICES"] == "5,6"


def test_ids_beyond_an_existing_allocation_are_an_error() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}
    with pytest.raises(ConfigError) as info:
        configure_jax_environment(FakeSystem("gpu*8:0,3"), env)
    message = str(info.value)
    assert "selects device id 3" in message and "CUDA_VISIBLE_DEVICES=4,5" in message
    assert "only 2 device(s)" in message
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_configure_does_not_import_jax_and_cpu_partitions_reach_jax() -> None:
    code = (
        "import sys, json\n"
        "from hamflow.config.device import configure_jax_environment, parse_device, select_jax_devices\n"
        "from hamflow.config.train_config import parse_train_config\n"
        "cfg = parse_train_config({'system': {'device': 'cpu*3'}, 'data': {'inputs_dir': 'i',\n"
        "    'outputs_dir': 'o'}, 'model': {'advanced': {'net_irreps': ''}}})\n"
        "configure_jax_environment(cfg.system)\n"
        "imported_jax = 'jax' in sys.modules\n"
        "devices = select_jax_devices(parse_device(cfg.system.device))\n"
        "print(json.dumps({'imported_jax': imported_jax, 'devices': len(devices),\n"
        "    'platform': devices[0].platform}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"imported_jax": False, "devices": 3, "platform": "cpu"}


# ------------------------------------------------------------------------------- JAX device mapping


def test_select_cpu_devices() -> None:
    devices = select_jax_devices(parse_device("cpu*1"))
    assert len(devices) == 1 and devices[0].platform == "cpu"


def test_more_cpu_partitions_than_jax_has_is_an_error() -> None:
    have = len(jax.local_devices(backend="cpu"))
    with pytest.raises(ConfigError) as info:
        select_jax_devices(parse_device(f"cpu*{have + 63}"))
    assert f"asks for {have + 63} CPU partition(s) but JAX has {have} host device(s)" in str(info.value)


def test_no_gpu_is_a_clear_error() -> None:
    try:
        gpus = jax.local_devices(backend="gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        pytest.skip("checks the error for a GPU request on a machine without GPUs; this machine has GPUs")
    with pytest.raises(ConfigError) as info:
        select_jax_devices(parse_device("gpu*8:1-4,7"))
    message = str(info.value)
    assert "asks for 5 GPU(s) (ids 1,2,3,4,7 of 8 per node) but JAX sees 0 GPU device(s)" in message


@pytest.mark.parametrize(
    "text, visible, expected",
    [
        ("gpu*8:1-4,7", 8, [1, 2, 3, 4, 7]),  # not restricted: ids index the devices
        ("gpu*8:1-4,7", 5, [0, 1, 2, 3, 4]),  # restricted to exactly the selection: take all
        ("gpu*8:0", 1, [0]),
        ("gpu*8:5", 1, [0]),
        ("gpu*4:2,3", 4, [2, 3]),
    ],
)
def test_select_gpu_devices(
    monkeypatch: pytest.MonkeyPatch, text: str, visible: int, expected: list[int]
) -> None:
    fake = [f"gpu{i}" for i in range(visible)]
    monkeypatch.setattr(device_module, "_accelerators", lambda: (fake, "gpu"))
    assert select_jax_devices(parse_device(text)) == [fake[i] for i in expected]


def test_fewer_gpus_than_asked_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_accelerators", lambda: (["gpu0", "gpu1"], "gpu"))
    with pytest.raises(ConfigError, match=r"asks for 5 GPU\(s\) .* but JAX sees 2 GPU device\(s\)"):
        select_jax_devices(parse_device("gpu*8:1-4,7"))
