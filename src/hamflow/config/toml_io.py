"""Reading and writing TOML files, shared by the training and inference schemas.

:func:`read_toml` turns a file into a mapping (one-line ConfigError for an unreadable or invalid
file), :func:`dump_toml` writes a mapping with a comment header, :func:`apply_overrides` re-validates a
configuration with dotted-key overrides set.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from hamflow.config.schema import set_dotted
from hamflow.errors import ConfigError

_C = TypeVar("_C")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The mapping of a TOML file; ConfigError when it cannot be read or is not valid TOML."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError("file", f"cannot be read: {error.strerror or error}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("file", "is not UTF-8 text", source=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        detail = " ".join(str(error).split())
        raise ConfigError("file", f"is not valid TOML: {detail}", source=path) from None


def dump_toml(data: Mapping[str, Any], header: str) -> str:
    """TOML text of ``data`` preceded by ``# header`` comment lines."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + tomli_w.dumps(data)


def apply_overrides(
    cfg: _C, overrides: Mapping[str, Any], parse: Callable[..., _C], to_dict: Callable[[_C], dict]
) -> _C:
    """Re-validate ``cfg`` with dotted-key ``overrides`` set; the shared core of ``with_overrides``."""
    data = to_dict(cfg)
    source = getattr(cfg, "source", None)
    for dotted_key, value in overrides.items():
        try:
            set_dotted(data, dotted_key, value)
        except ConfigError as error:
            raise ConfigError(error.key, error.problem, source=source) from None
    return parse(data, source=source)
