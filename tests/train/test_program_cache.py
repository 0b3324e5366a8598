"""The program cache (hamflow.train.program_cache): compiled programs reused exactly when nothing
that went into them changed, rebuilt otherwise, and never trusted when unreadable.

A rerun with the same model, normaliser and shapes loads every ahead-of-time program instead of
tracing and compiling it, also when only runtime values (rates, schedule, ``max_epoch``) changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_setup import tiny_config

from hamflow.train import run as train_run
from hamflow.train.background import parallel_compiles
from hamflow.train.program_cache import (
    ProgramCache,
    Unfingerprintable,
    context_fingerprint,
    fingerprint,
    signature,
)


@pytest.fixture(autouse=True)
def no_persistent_cache():
    """JAX's persistent cache off, as in a training run with the program cache: otherwise a build
    that an earlier test of the session put there is served from it, and (rightly) not stored."""
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_enable_compilation_cache", before)
    compilation_cache.reset_cache()


def _scaled(table: np.ndarray):
    """A jitted function closing over ``table`` (as the train step closes over the normaliser)."""
    return jax.jit(lambda x: x * jnp.asarray(table))


def _compile_count(cache: ProgramCache, table: np.ndarray, parts: dict) -> tuple[float, bool, list]:
    """(result at x = 2, hit, builds): the cached program of ``parts``, built from ``table`` on a miss."""
    builds: list[int] = []
    x = jax.ShapeDtypeStruct((3,), jnp.float32)

    def build():
        builds.append(1)
        return _scaled(table).lower(x).compile()

    program, hit = cache.compiled("unit", {**parts, "signature": signature(x)}, build)
    return float(program(jnp.full(3, 2.0, jnp.float32))[0]), hit, builds


def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    table = np.asarray([3.0, 1.0, 1.0], np.float32)
    parts = {"normaliser": table}
    first = _compile_count(ProgramCache(tmp_path, context_fingerprint(jax.devices())), table, parts)
    again = _compile_count(ProgramCache(tmp_path, context_fingerprint(jax.devices())), table, parts)
    assert first == (6.0, False, [1])
    assert again == (6.0, True, [])  # loaded: nothing built


def test_a_changed_input_of_the_program_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = np.asarray([3.0, 1.0, 1.0], np.float32)
    _compile_count(ProgramCache(tmp_path, context_fingerprint(jax.devices())), table, {"normaliser": table})
    other = np.asarray([5.0, 1.0, 1.0], np.float32)  # a changed baked-in table: a new program
    cache = ProgramCache(tmp_path, context_fingerprint(jax.devices()))
    assert _compile_count(cache, other, {"normaliser": other}) == (10.0, False, [1])
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")  # other compiler flags
    cache = ProgramCache(tmp_path, context_fingerprint(jax.devices()))
    assert _compile_count(cache, table, {"normaliser": table})[1:] == (False, [1])


def test_an_unreadable_entry_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = np.asarray([3.0, 1.0, 1.0], np.float32)
    cache = ProgramCache(tmp_path, context_fingerprint(jax.devices()))
    _compile_count(cache, table, {"normaliser": table})
    (entry,) = tmp_path.glob("unit-*.pkl")
    entry.write_bytes(entry.read_bytes()[:100])  # a half-written file (a foreign writer, a disk fault)
    with caplog.at_level(logging.WARNING):
        assert _compile_count(cache, table, {"normaliser": table}) == (6.0, False, [1])
    assert "unreadable" in caplog.text
    assert _compile_count(cache, table, {"normaliser": table})[1] is True  # replaced by a good one


@pytest.fixture
def persistent_cache(tmp_path: Path):
    """JAX's persistent compilation cache on in this process (as a notebook or an earlier run in a
    test session leaves it), restored afterwards."""
    from jax._src import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_enable_compilation_cache", True)  # after no_persistent_cache turned it off
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "persistent"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_a_program_the_persistent_cache_served_is_not_stored(tmp_path: Path, persistent_cache: None) -> None:
    """Re-serialised, an executable read from JAX's persistent cache fails at its first call
    (NOT_FOUND: Function ... not found): storing one would kill the next run at its first step."""
    table = np.asarray([3.0, 1.0, 1.0], np.float32)
    _scaled(table).lower(jax.ShapeDtypeStruct((3,), jnp.float32)).compile()  # now in the persistent cache
    cache = ProgramCache(tmp_path / "programs", context_fingerprint(jax.devices()))
    assert _compile_count(cache, table, {"normaliser": table}) == (6.0, False, [1])
    assert not list((tmp_path / "programs").glob("unit-*.pkl"))
    assert _compile_count(cache, table, {"normaliser": table}) == (6.0, False, [1])  # built, not loaded


def test_what_cannot_be_fingerprinted_is_never_cached(tmp_path: Path) -> None:
    with pytest.raises(Unfingerprintable):
        fingerprint({"activation": lambda x: x})
    table = np.ones(3, np.float32)
    cache = ProgramCache(tmp_path, context_fingerprint(jax.devices()))
    for _ in range(2):
        assert _compile_count(cache, table, {"activation": lambda x: x})[1:] == (False, [1])
    assert not list(tmp_path.iterdir())
    assert fingerprint(np.ones(2)) != fingerprint(np.ones(2, np.float32))
    assert fingerprint({"b": 1, "a": 2.0}) == fingerprint({"a": 2.0, "b": 1})


def test_parallel_compiles_are_bounded_by_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from hamflow.train import background as loop

    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    monkeypatch.setattr(loop, "available_memory_bytes", lambda: 4 * loop.COMPILE_MEMORY_BYTES + 1)
    assert parallel_compiles(7) == 4
    monkeypatch.setattr(loop, "available_memory_bytes", lambda: 100)
    assert parallel_compiles(7) == 1  # always at least one
    monkeypatch.setattr(loop, "available_memory_bytes", lambda: None)
    assert parallel_compiles(7) == 7


@pytest.mark.slow
def test_a_rerun_with_other_runtime_values_loads_every_program(
    h2o_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"  # its own: the count below starts from an empty program cache
    aot = {"process.train.ahead_of_time_compile": True, "process.train.multi_way_jit_num": 2}
    first = tiny_config(h2o_dir, tmp_path, cache, **aot, **{"process.train.max_epoch": 2})
    train_run.train(first, run_dir=tmp_path / "first")
    log = (tmp_path / "first" / "deepx.log").read_text()
    assert "(0 loaded from the program cache)" in log
    assert "start-up: first training step done" in log
    compiles: list[str] = []

    def listen(event: str, duration_secs: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":  # every XLA compile, cached or not
            compiles.append(event)

    changed = tiny_config(
        h2o_dir,
        tmp_path,
        cache,
        **aot,
        **{
            "process.train.max_epoch": 3,
            "process.train.scheduler.warmup_steps": 1,
            "process.train.optimizer.init_learning_rate": 1e-3,
        },
    )
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        train_run.train(changed, run_dir=tmp_path / "second")
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    log = (tmp_path / "second" / "deepx.log").read_text()
    assert "ahead-of-time compiled 0 program(s)" in log  # every program loaded ...
    assert compiles == []  # ... and nothing else compiled either (the test pass uses them too)
    rates = [line for line in (tmp_path / "second" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(rates) == 3
