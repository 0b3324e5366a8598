"""log_level -> the hamflow logger's deepx.log file and console output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hamflow.config.logging_setup import LOG_LEVELS, configure_logging, log_level_number, reset_logging
from hamflow.errors import ConfigError

LOG = logging.getLogger("hamflow.tests.config")


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    yield
    reset_logging()


def test_records_at_or_above_the_level_go_to_file_and_console(tmp_path: Path) -> None:
    console = io.StringIO()
    log_file = tmp_path / "run" / "deepx.log"
    configure_logging(log_file, "warning", stream=console)
    LOG.info("quiet detail")
    LOG.warning("loss is %s", "NaN")
    LOG.error("stopping")
    text = log_file.read_text()
    assert "quiet detail" not in text and "[WARNING] loss is NaN" in text and "[ERROR] stopping" in text
    assert console.getvalue() == "[WARNING] loss is NaN\n[ERROR] stopping\n"


def test_debug_level_and_no_console(tmp_path: Path) -> None:
    log_file = tmp_path / "deepx.log"
    configure_logging(log_file, "debug", console=False)
    LOG.debug("step 1")
    assert "[DEBUG] step 1" in log_file.read_text()


def test_configuring_again_replaces_the_handler(tmp_path: Path) -> None:
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    configure_logging(first, "info", console=False)
    handler = configure_logging(second, "info", console=False)
    LOG.info("epoch 1")
    assert "epoch 1" not in first.read_text() and "epoch 1" in second.read_text()
    hamflow_logger = logging.getLogger("hamflow")
    assert [h for h in hamflow_logger.handlers if h is handler] == [handler]
    hamflow_logger.removeHandler(handler)
    handler.close()
    LOG.info("after close")
    assert "after close" not in second.read_text()


def test_file_is_appended(tmp_path: Path) -> None:
    log_file = tmp_path / "deepx.log"
    log_file.write_text("earlier run\n")
    configure_logging(log_file, "info", console=False)
    LOG.info("resumed")
    lines = log_file.read_text().splitlines()
    assert lines[0] == "earlier run" and lines[1].endswith("[INFO] resumed")


@pytest.mark.parametrize("name", sorted(LOG_LEVELS))
def test_level_names(name: str) -> None:
    assert log_level_number(name) == getattr(logging, name.upper())


def test_unknown_level() -> None:
    with pytest.raises(ConfigError, match=r"\[system.log_level\] = 'verbose' is not allowed"):
        configure_logging(None, "verbose")


def test_module_loggers_reach_deepx_log(tmp_path: Path) -> None:
    """The modules log through ``getLogger(__name__)``: children of the package logger whose handler
    writes deepx.log."""
    import hamflow.data.validate
    import hamflow.graph.stage
    import hamflow.infer.stage
    import hamflow.train.loop

    log_file = tmp_path / "deepx.log"
    configure_logging(log_file, "info", console=False)
    modules = (hamflow.data.validate, hamflow.graph.stage, hamflow.infer.stage, hamflow.train.loop)
    for module in modules:
        logging.getLogger(module.__name__).info("from %s", module.__name__)
    text = log_file.read_text()
    assert all(f"[INFO] from {module.__name__}" in text for module in modules)


def test_modules_name_their_logger_by_module_or_the_package_constant() -> None:
    """No module names a logger by a string literal: ``getLogger(__name__)`` for records,
    ``getLogger(LOGGER_NAME)`` for the package logger's handlers."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "hamflow"
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Name) and arg.id in {"__name__", "LOGGER_NAME"}):
                    found.append(f"{path.relative_to(src)}:{node.lineno}")
    assert found == []
