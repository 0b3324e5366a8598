"""Programs built in background threads (hamflow.train.background): built in the order given, each
call waiting only for its own program, a failed build raised where its program is called, and a
stopped build starting nothing more; the first program built alone."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from hamflow.train.background import BackgroundBuild


def _job(name: str, started: list[str], gate: threading.Event | None = None, loaded: bool = False):
    def build():
        started.append(name)
        if gate is not None:
            assert gate.wait(10)
        return (lambda x: f"{name}({x})"), loaded

    return ("train", name, build)


def test_a_call_waits_only_for_its_own_program() -> None:
    started: list[str] = []
    gate = threading.Event()
    reports: list[tuple[int, int]] = []
    jobs = [_job("first", started), _job("slow", started, gate), _job("cached", started, loaded=True)]
    build = BackgroundBuild(jobs, workers=2, on_done=lambda s, built, loaded: reports.append((built, loaded)))
    assert build.programs[0]("x") == "first(x)"  # while "slow" is still being built
    assert build.programs[2]("y") == "cached(y)"
    assert not build.programs[1].done()
    assert reports == []
    gate.set()
    build.wait()
    assert build.programs[1]("z") == "slow(z)"
    assert started[0] == "first" and set(started) == {"first", "slow", "cached"}
    for _ in range(100):  # the report comes from the last worker, just after its result is set
        if reports:
            break
        threading.Event().wait(0.01)
    assert reports == [(2, 1)]


def test_one_worker_builds_in_the_given_order() -> None:
    started: list[str] = []
    build = BackgroundBuild([_job(n, started) for n in "cab"], workers=1, on_done=lambda *_: None)
    build.wait()
    assert started == ["c", "a", "b"]


def test_a_failed_build_is_raised_where_its_program_is_called() -> None:
    def broken():
        raise RuntimeError("XLA ran out of memory")

    build = BackgroundBuild([("eval", 1, broken)], workers=1, on_done=lambda *_: None)
    with pytest.raises(RuntimeError, match="out of memory"):
        build.programs[0]("x")


def test_a_stopped_build_starts_nothing_more() -> None:
    started: list[str] = []
    gate = threading.Event()
    build = BackgroundBuild(
        [_job("running", started, gate), _job("never", started)], workers=1, on_done=lambda *_: None
    )
    for _ in range(200):
        if started:
            break
        threading.Event().wait(0.01)
    build.stop()
    gate.set()
    assert build.programs[0]("x") == "running(x)"
    with pytest.raises(CancelledError):
        build.programs[1]("x")
    assert started == ["running"]


def _wait_for(condition, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()


def test_the_first_program_is_built_alone_then_the_rest_in_parallel() -> None:
    started: list[str] = []
    first_gate, rest_gate = threading.Event(), threading.Event()
    jobs = [_job("first", started, first_gate), _job("b", started, rest_gate), _job("c", started, rest_gate)]
    build = BackgroundBuild(jobs, workers=3, on_done=lambda *_: None)
    assert _wait_for(lambda: started == ["first"])
    threading.Event().wait(0.2)
    assert started == ["first"]  # the other two wait for it, although workers are free
    first_gate.set()
    assert build.programs[0]("x") == "first(x)"
    assert _wait_for(lambda: sorted(started) == ["b", "c", "first"])  # both at once: rest_gate is shut
    rest_gate.set()
    build.wait()


def test_a_failed_first_build_still_starts_the_rest() -> None:
    def broken():
        raise RuntimeError("no memory")

    started: list[str] = []
    build = BackgroundBuild([("train", 0, broken), _job("b", started)], workers=2, on_done=lambda *_: None)
    assert build.programs[1]("x") == "b(x)"
    with pytest.raises(RuntimeError, match="no memory"):
        build.programs[0]("x")
