"""``[system] log_level`` -> Python logging: the run's ``deepx.log`` file and the console.

All hamflow modules log through a module logger, ``logging.getLogger(__name__)``, a child of the
``hamflow`` package logger (:data:`LOGGER_NAME`), so the one handler set up here catches them all.
:func:`configure_logging` attaches ONE handler to it that writes each record at ``log_level`` or above
to ``deepx.log`` and to the console; remove it when the run ends::

    handler = configure_logging(run_dir / "deepx.log", cfg.system.log_level)
    try:
        ...
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
        handler.close()

Calling :func:`configure_logging` again replaces the handler it installed before (one run, one log).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

from hamflow.errors import ConfigError

#: the package logger: the handlers live on it; modules log through its children (``__name__``)
LOGGER_NAME = "hamflow"
LOG_LEVEL_KEY = "system.log_level"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FILE_FORMAT = "%(asctime)s [%(levelname)s] %(message)s"
CONSOLE_FORMAT = "[%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def log_level_number(log_level: str) -> int:
    """The ``logging`` level of a ``log_level`` name; ConfigError for an unknown name."""
    try:
        return LOG_LEVELS[log_level]
    except (KeyError, TypeError):
        allowed = ", ".join(f'"{name}"' for name in LOG_LEVELS)
        raise ConfigError(LOG_LEVEL_KEY, f"= {log_level!r} is not allowed; allowed: {allowed}") from None


class RunLogHandler(logging.Handler):
    """One handler that fans each record out to the log file and the console, each with its format."""

    def __init__(self, targets: list[logging.Handler], level: int) -> None:
        super().__init__(level)
        self.targets = targets

    def emit(self, record: logging.LogRecord) -> None:
        for target in self.targets:
            if record.levelno >= target.level:
                target.handle(record)

    def flush(self) -> None:
        for target in self.targets:
            target.flush()

    def close(self) -> None:
        for target in self.targets:
            target.close()
        super().close()


def reset_logging() -> None:
    """Remove and close the handler :func:`configure_logging` installed, if any."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, RunLogHandler):
            logger.removeHandler(handler)
            handler.close()


def configure_logging(
    log_file: str | Path | None,
    log_level: str = "info",
    *,
    console: bool = True,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send ``hamflow`` records at ``log_level`` or above to ``log_file`` (appended) and the console.

    ``log_file`` is usually ``<run dir>/deepx.log`` (its folder is created); None writes no file.
    ``stream`` is the console stream (stderr by default). Returns the installed handler.
    """
    level = log_level_number(log_level)
    reset_logging()
    targets: list[logging.Handler] = []
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT, datefmt=DATE_FORMAT))
        targets.append(file_handler)
    if console:
        console_handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        console_handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        targets.append(console_handler)
    handler = RunLogHandler(targets, level)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.addHandler(handler)
    return handler
