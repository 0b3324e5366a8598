"""Error types whose message is the one line a user sees (the CLI prints it, never a traceback)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def toml_repr(value: Any) -> str:
    """A value written the way it looks in a TOML file ("text", true, 1.5, [0.9, 0.999])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_repr(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


class HamflowError(Exception):
    """Base class: ``str(error)`` is a complete one-line message for the user."""

    exit_code: int = 1


class ConfigError(HamflowError):
    """A TOML/YAML setting is missing, of the wrong type, out of range, contradictory or not built yet.

    The message names the key (dotted path), the bad value and what is allowed.
    """

    exit_code = 2

    def __init__(self, key: str, problem: str, *, source: str | Path | None = None) -> None:
        self.key = key
        self.problem = problem
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        super().__init__(f"{where}[{key}] {problem}")


class DataError(HamflowError):
    """A structure's input data is missing, unreadable or inconsistent.

    The message names the file, the structure id and the key (dataset / field) at fault.
    """

    exit_code = 1

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        structure: str | None = None,
        key: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.structure = structure
        self.key = key
        parts = []
        if self.structure is not None:
            parts.append(f"structure {self.structure}")
        if self.file is not None:
            parts.append(self.file)
        if self.key is not None:
            parts.append(f"key '{self.key}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class NotAvailableError(ConfigError):
    """An option the schema accepts but whose behaviour hamflow does not build yet."""

    def __init__(self, key: str, value: object, *, source: str | Path | None = None) -> None:
        super().__init__(key, f"= {value!r} is not available yet in hamflow", source=source)


class FileSystemError(HamflowError):
    """An operating-system error (permission, read-only, disk full, a file where a folder belongs).

    The message names the operation and the path: ``cannot <operation> <path>: <reason>``.
    """

    exit_code = 1

    def __init__(self, operation: str, path: str | Path, reason: str) -> None:
        self.operation = operation
        self.path = str(path)
        super().__init__(f"cannot {operation} {self.path}: {reason}")

    @classmethod
    def from_os_error(cls, operation: str, path: str | Path, error: OSError) -> FileSystemError:
        """The one line for ``error`` (its strerror, and the file it names when not ``path``)."""
        reason = error.strerror or str(error) or type(error).__name__
        if error.filename is not None and str(error.filename) != str(path):
            reason = f"{reason} ({error.filename})"
        return cls(operation, path, reason)


@contextlib.contextmanager
def os_errors(operation: str, path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a one-line :class:`FileSystemError`."""
    try:
        yield
    except HamflowError:
        raise
    except OSError as error:
        raise FileSystemError.from_os_error(operation, path, error) from None


class Interrupted(KeyboardInterrupt):
    """A signal (SIGTERM, SIGINT) stopped a stage; ``str(error)`` is the one line for the user.

    A :class:`KeyboardInterrupt`, not an ``Exception``: raised from a signal handler, it may surface
    anywhere, and no ``except Exception`` on the way (logging's ``handleError``, a catch-all around a
    reader) may swallow it. The CLI prints it like a :class:`HamflowError`, with ``exit_code``.
    """

    exit_code: int = 130
