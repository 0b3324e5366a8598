"""The per-batch training bar: on a terminal only, so SLURM logs and pipes hold the epoch lines alone."""

from __future__ import annotations

import io
from types import SimpleNamespace

from hamflow.train.loop import progress_bar as _progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cfg(show: bool = True) -> SimpleNamespace:
    return SimpleNamespace(system=SimpleNamespace(show_train_process_bar=show))


def test_no_bar_and_nothing_written_when_the_stream_is_not_a_terminal() -> None:
    log = io.StringIO()  # a SLURM log file or a pipe: isatty() is False
    assert _progress(_cfg(), 10, 1, 0, stream=log) is None
    assert log.getvalue() == ""
    closed = io.StringIO()
    closed.close()
    assert _progress(_cfg(), 10, 1, 0, stream=closed) is None
    assert _progress(_cfg(), 10, 1, 0, stream=object()) is None  # no isatty at all


def test_bar_on_a_terminal_unless_switched_off() -> None:
    terminal = _Terminal()
    bar = _progress(_cfg(), 10, 3, 2, stream=terminal)
    assert bar is not None
    bar.update(1)
    bar.close()
    assert "epoch 3" in terminal.getvalue()
    assert _progress(_cfg(show=False), 10, 3, 0, stream=_Terminal()) is None
