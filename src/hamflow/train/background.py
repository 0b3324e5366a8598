"""Programs built in background threads, so that training starts as soon as its first program is ready.

``ahead_of_time_compile`` builds every bucket's programs at start-up. Built one after another
before the first step, the demo sparrow's 7 programs keep a 2-core machine busy for minutes before
anything trains; here they are built in the order the run first needs them, by a few daemon
threads (XLA compiles outside the GIL), and a :class:`PendingProgram` waits only for its own.
Daemon threads: a run stopped by a signal does not wait at exit for programs it will never use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from hamflow.memory import available_memory_bytes

LOG = logging.getLogger(__name__)

#: A job: (kind, key, build); build() -> (program, loaded from the program cache?)
Job = tuple[str, Any, Callable[[], tuple[Any, bool]]]


class PendingProgram:
    """A program being built in the background: calling it waits for the build, then runs it."""

    def __init__(self, future: Future) -> None:
        self._future = future
        self._program: Any = None

    def program(self) -> Any:
        """The built program (waits for it; re-raises the build's exception)."""
        if self._program is None:
            self._program = self._future.result()[0]
        return self._program

    def __call__(self, *args: Any) -> Any:
        return self.program()(*args)

    def done(self) -> bool:
        return self._future.done()


class BackgroundBuild:
    """``jobs`` built in their order by ``workers`` daemon threads; ``programs[i]`` is job i's
    :class:`PendingProgram`. The first job (the program the first step needs) is built alone, so
    that it has every core and the GIL for its tracing; the other workers start when it is done.
    When the last one is built, ``on_done(seconds, built, loaded)`` is
    called (from a worker thread). :meth:`stop` drops the jobs not yet started."""

    def __init__(self, jobs: Sequence[Job], workers: int, on_done: Callable[[float, int, int], None]) -> None:
        self._jobs = list(jobs)
        self._futures: list[Future] = [Future() for _ in self._jobs]
        self.programs = [PendingProgram(future) for future in self._futures]
        self._next = 0
        self._finished = 0
        self._loaded = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._on_done = on_done
        self._started = time.perf_counter()
        self._workers = max(1, min(workers, len(self._jobs)))
        self._spawn(0)

    def _spawn(self, index: int) -> None:
        threading.Thread(target=self._work, name=f"hamflow-compile-{index}", daemon=True).start()

    def _take(self) -> int | None:
        with self._lock:
            if self._stopped.is_set() or self._next >= len(self._jobs):
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        while (index := self._take()) is not None:
            future = self._futures[index]
            future.set_running_or_notify_cancel()
            try:
                result = self._jobs[index][2]()
            except BaseException as why:  # noqa: BLE001 - re-raised where the program is called
                future.set_exception(why)
                result = None
            else:
                future.set_result(result)
            if index == 0:  # the first program had the cores to itself; now the others in parallel
                for worker in range(1, self._workers):
                    self._spawn(worker)
            with self._lock:
                self._finished += 1
                self._loaded += bool(result and result[1])
                last = self._finished == len(self._jobs)
            if last:
                built = self._finished - self._loaded
                self._on_done(time.perf_counter() - self._started, built, self._loaded)

    def wait(self) -> None:
        """Wait for every job (re-raises the first failed build)."""
        for program in self.programs:
            program.program()

    def stop(self) -> None:
        """Start no further job; those not started fail with ``CancelledError`` when called."""
        self._stopped.set()
        with self._lock:
            for future in self._futures[self._next :]:
                future.cancel()


#: Peak memory of one XLA compile of a train step (bytes): the demo sparrow on a CPU peaks at 5.47 GiB
#: with two compiles at once and 1.68 GiB with none (benchmarks/RESULTS.md, "Start-up, recompiles and
#: memory"), ~1.9 GiB each. The number of parallel compiles is bounded by it.
COMPILE_MEMORY_BYTES = 2 << 30


def parallel_compiles(jobs: int) -> int:
    """How many programs to compile at once: at most one per core, and at most as many as the
    available memory holds at :data:`COMPILE_MEMORY_BYTES` each (at least one): MemAvailable, or
    what is left of a cgroup limit such as a SLURM job's ``--mem``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = min(jobs, cores)
    memory = available_memory_bytes()
    if memory is not None:
        limit = min(limit, memory // COMPILE_MEMORY_BYTES)
    return max(1, limit)
