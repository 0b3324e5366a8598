"""The ``[system] device`` string ``<type>*<num>[:<ids>]`` and how it maps onto JAX devices.

Grammar (DeepH-pack's): ``<type>`` is ``cpu``, ``gpu``, ``cuda``, ``rocm`` or ``dcu``; ``<num>`` is the
number of accelerators per node, or the number of CPU partitions (host devices) for ``cpu``; ``<ids>``
is a comma list of indices and inclusive ranges (``gpu*8:1-4,7`` selects 1, 2, 3, 4, 7), each below
``<num>``. Without ``:<ids>`` all ``<num>`` devices are used. For ``cpu`` the ids are checked for syntax
only and otherwise ignored: ``cpu*4`` gives four host devices.

Use :func:`configure_jax_environment` before JAX initialises its backends (before the first array or
device query; it does not import JAX), then :func:`select_jax_devices` afterwards.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hamflow.errors import ConfigError

if TYPE_CHECKING:
    import jax

DEVICE_KEY = "system.device"
DEVICE_TYPES = ("cpu", "gpu", "cuda", "rocm", "dcu")
GRAMMAR = '<type>*<num>[:<ids>] with <type> in cpu, gpu, cuda, rocm, dcu (e.g. "gpu*8:1-4,7", "cpu*4")'

# Environment variable that restricts the visible accelerators, per vendor.
VISIBILITY_VARIABLE = {
    "gpu": "CUDA_VISIBLE_DEVICES",
    "cuda": "CUDA_VISIBLE_DEVICES",
    "rocm": "ROCR_VISIBLE_DEVICES",
    "dcu": "HIP_VISIBLE_DEVICES",
}
HOST_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"

_DEVICE_RE = re.compile(r"^(?P<type>[a-z]+)\*(?P<num>\d+)(?::(?P<ids>[0-9,\-]+))?$")
_ID_ITEM_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string.

    kind: "cpu" or "gpu"; vendor: the type as written ("cpu", "gpu", "cuda", "rocm", "dcu");
    per_node: ``<num>``; ids: the selected device indices, sorted (all of 0..num-1 for cpu).
    """

    kind: str
    vendor: str
    per_node: int
    ids: tuple[int, ...]

    @property
    def count(self) -> int:
        """Number of devices used on this node."""
        return len(self.ids)

    def __str__(self) -> str:
        if self.kind == "cpu":
            return f"cpu*{self.per_node}"
        return f"{self.vendor}*{self.per_node}:{','.join(str(i) for i in self.ids)}"


def _bad(text: str, problem: str) -> ConfigError:
    return ConfigError(DEVICE_KEY, f'= "{text}" {problem}; expected {GRAMMAR}')


def _parse_ids(text: str, ids_text: str, per_node: int) -> tuple[int, ...]:
    ids: list[int] = []
    for item in ids_text.split(","):
        match = _ID_ITEM_RE.match(item)
        if match is None:
            raise _bad(text, f'has a bad device id list "{ids_text}"')
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise _bad(text, f'has a decreasing id range "{item}"')
        ids.extend(range(first, last + 1))
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise _bad(text, f"selects device id {duplicates[0]} twice")
    out_of_range = [i for i in ids if i >= per_node]
    if out_of_range:
        raise _bad(text, f"selects device id {out_of_range[0]}, but ids run from 0 to {per_node - 1}")
    return tuple(sorted(ids))


def parse_device(text: str) -> DeviceSpec:
    """Parse ``<type>*<num>[:<ids>]``; raise ConfigError (key ``system.device``) on bad grammar."""
    if not isinstance(text, str):
        raise ConfigError(DEVICE_KEY, f"= {text!r} must be a string; expected {GRAMMAR}")
    stripped = text.strip()
    match = _DEVICE_RE.match(stripped)
    if match is None:
        raise _bad(text, "is not a device string")
    vendor = match.group("type")
    if vendor not in DEVICE_TYPES:
        raise _bad(text, f'has unknown device type "{vendor}"')
    per_node = int(match.group("num"))
    if per_node < 1:
        raise _bad(text, "asks for 0 devices")
    ids_text = match.group("ids")
    if vendor == "cpu":
        if ids_text is not None:
            _parse_ids(text, ids_text, per_node)  # syntax only; cpu ids are ignored
        return DeviceSpec(kind="cpu", vendor="cpu", per_node=per_node, ids=tuple(range(per_node)))
    ids = tuple(range(per_node)) if ids_text is None else _parse_ids(text, ids_text, per_node)
    return DeviceSpec(kind="gpu", vendor=vendor, per_node=per_node, ids=ids)


class _SystemLike(Protocol):
    device: str
    jax_memory_preallocate: bool


def _with_host_device_count(xla_flags: str, count: int) -> str:
    kept = [flag for flag in xla_flags.split() if not flag.startswith(HOST_DEVICE_COUNT_FLAG)]
    return " ".join([*kept, f"{HOST_DEVICE_COUNT_FLAG}={count}"])


def configure_jax_environment(
    cfg_system: _SystemLike, environ: MutableMapping[str, str] | None = None
) -> None:
    """Set the environment JAX reads when it starts its backends; does not import JAX.

    - ``XLA_PYTHON_CLIENT_PREALLOCATE`` from ``jax_memory_preallocate``.
    - ``cpu*N``: ``JAX_PLATFORMS=cpu`` and ``XLA_FLAGS --xla_force_host_platform_device_count=N``.
    - accelerators: the vendor's visibility variable (``CUDA_VISIBLE_DEVICES`` for gpu/cuda,
      ``ROCR_VISIBLE_DEVICES`` for rocm, ``HIP_VISIBLE_DEVICES`` for dcu) lists the selected ids. When
      the variable is already set (a batch scheduler's allocation), the ids index into that list, and an
      id beyond it is a ConfigError naming both.

    Call it before the first JAX device query or array (importing JAX alone is harmless).
    ``environ`` defaults to ``os.environ``.
    """
    env = os.environ if environ is None else environ
    spec = parse_device(cfg_system.device)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true" if cfg_system.jax_memory_preallocate else "false"
    if spec.kind == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = _with_host_device_count(env.get("XLA_FLAGS", ""), spec.per_node)
        jax_module = sys.modules.get("jax")
        if jax_module is not None and environ is None:
            # JAX reads JAX_PLATFORMS when it is imported; an already imported JAX takes the setting.
            jax_module.config.update("jax_platforms", "cpu")
        return
    variable = VISIBILITY_VARIABLE[spec.vendor]
    existing = env.get(variable, "").strip()
    if existing:
        visible = [item.strip() for item in existing.split(",") if item.strip()]
        beyond = [i for i in spec.ids if i >= len(visible)]
        if beyond:
            raise ConfigError(
                DEVICE_KEY,
                f'= "{cfg_system.device}" selects device id {beyond[0]}, but {variable}={existing} '
                f"makes only {len(visible)} device(s) visible on this node",
            )
        env[variable] = ",".join(visible[i] for i in spec.ids)
    else:
        env[variable] = ",".join(str(i) for i in spec.ids)


def _accelerators() -> tuple[list[Any], str]:
    import jax

    try:
        devices = list(jax.local_devices(backend="gpu"))
    except RuntimeError:
        devices = []
    return devices, jax.default_backend()


def select_jax_devices(spec: DeviceSpec) -> list[jax.Device]:
    """The JAX devices the spec asks for, in id order; ConfigError when the machine has fewer.

    For accelerators already restricted by :func:`configure_jax_environment` (JAX sees exactly the
    selected devices) all visible devices are taken; otherwise the ids index JAX's local devices.
    """
    import jax

    if spec.kind == "cpu":
        devices = list(jax.local_devices(backend="cpu"))
        if len(devices) < spec.per_node:
            raise ConfigError(
                DEVICE_KEY,
                f'= "{spec}" asks for {spec.per_node} CPU partition(s) but JAX has {len(devices)} '
                "host device(s); configure_jax_environment must run before JAX starts its backends",
            )
        return devices[: spec.per_node]
    devices, backend = _accelerators()
    if devices and max(spec.ids) < len(devices):
        return [devices[i] for i in spec.ids]
    if len(devices) == spec.count:
        return devices
    ids = ",".join(str(i) for i in spec.ids)
    raise ConfigError(
        DEVICE_KEY,
        f'= "{spec}" asks for {spec.count} GPU(s) (ids {ids} of {spec.per_node} per node) but JAX sees '
        f"{len(devices)} GPU device(s) on this machine (default backend: {backend})",
    )
