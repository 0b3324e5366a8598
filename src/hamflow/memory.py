"""How much memory this process may still use: what sizes parallel compiles and inference chunks."""

from __future__ import annotations

from pathlib import Path

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_CGROUP_USAGE = ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes")


def _read_int(paths: tuple[str, ...]) -> int | None:
    """The first of ``paths`` that holds an integer (cgroup files say "max" when unlimited)."""
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def available_memory_bytes() -> int | None:
    """Bytes this process may still use: MemAvailable of /proc/meminfo, capped by the cgroup's limit
    less its usage when one is set (a SLURM job's ``--mem``, a container's limit); None when neither
    can be read."""
    available = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    limit = _read_int(_CGROUP_LIMITS)
    if limit is not None and limit < (1 << 60):
        left = max(limit - (_read_int(_CGROUP_USAGE) or 0), 0)
        available = left if available is None else min(available, left)
    return available
