"""The program cache: compiled train and eval steps kept on disk, so a rerun starts in seconds.

JAX's persistent compilation cache (``process.train.compilation_cache_dir``) skips XLA's compile, but
every run still traces the network in Python and lowers it (~10 s per program for the demo
sparrow on a CPU core). This cache keeps the *compiled executables* themselves
(``jax.experimental.serialize_executable``) and the model's parameter shapes, under a key computed
without tracing: a digest of everything that goes into the program.

What the key holds (:func:`context_fingerprint` and the ``parts`` of each entry):
  - hamflow's own source (every ``.py`` file of the package), the versions of jax, jaxlib, flax,
    optax, e3nn-jax and numpy, ``XLA_FLAGS``, the JAX flags that change tracing (x64, matmul
    precision), the devices (platform, kind, count, process count);
  - per program: the flax module (every field, arrays by their bytes), the normaliser (its tables and
    baselines), the step options baked into the program (loss type, gauge, spin, EMA decay, dropout
    seed), the optimizer type, and the input signature (tree structure, shapes, dtypes, shardings).
A value that cannot be fingerprinted exactly (a lambda, an object whose repr is abbreviated) turns
the cache off for the run (:class:`Unfingerprintable`, logged): a cache hit is never a guess.
The runtime values of issue 12 (learning rate, schedule, ``max_epoch``, optimizer hyperparameters,
clipping) are not in the key: they are program inputs, so changing them hits the cache.

Entries are pickled ``(serialized executable, in tree, out tree)`` written atomically under
``<compilation cache>/programs/``; an unreadable entry is logged, rebuilt and replaced.

An executable that JAX read from its *persistent* compilation cache is never stored: on the CPU its
re-serialisation loads but fails at its first call ("NOT_FOUND: Function wrapped_multiply not
found", jax 0.10), so a rerun would die at its first step. A run with the program cache therefore
does not turn the persistent cache on (``hamflow.train.run``), and :meth:`ProgramCache.compiled`
skips storing any build that the persistent cache served anyway (a process that turned it on
before, such as a notebook or a test session), detected by JAX's ``cache_hits`` monitoring event
in the building thread.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import importlib.metadata
import json
import logging
import os
import pickle
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from hamflow.atomic import atomic_path

if TYPE_CHECKING:
    from hamflow.config.train_config import TrainConfig

LOG = logging.getLogger(__name__)

#: Sub-folder of the compilation cache folder that holds the program cache.
PROGRAMS_FOLDER = "programs"

_VERSIONED = ("jax", "jaxlib", "flax", "optax", "e3nn-jax", "numpy")


class Unfingerprintable(TypeError):
    """A value whose exact content cannot be digested: the program cache is not used for it."""


def fingerprint(value: Any) -> Any:
    """A JSON-able, exact description of ``value``: arrays by dtype, shape and a digest of their bytes,
    dataclasses (flax modules, hamflow's tables) and named tuples field by field, functions by their
    qualified name. Raises :class:`Unfingerprintable` for anything else that has no exact repr."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        array = np.asarray(value)
        return ["array", str(array.dtype), list(array.shape), hashlib.sha256(array.tobytes()).hexdigest()]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return [type(value).__qualname__, {f: fingerprint(getattr(value, f)) for f in value._fields}]
    if isinstance(value, list | tuple):
        return [type(value).__name__, [fingerprint(v) for v in value]]
    if isinstance(value, dict):
        return [
            "dict",
            [[fingerprint(k), fingerprint(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))],
        ]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: fingerprint(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "parent"
        }
        return [f"{type(value).__module__}.{type(value).__qualname__}", fields]
    if callable(value) and hasattr(value, "__qualname__"):
        name = f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
        if "<lambda>" in name or "<locals>" in name:
            raise Unfingerprintable(f"a local function {name} has no exact fingerprint")
        return ["function", name]
    text = repr(value)
    if type(value).__repr__ is object.__repr__ or "..." in text:
        raise Unfingerprintable(f"{type(value).__qualname__} has no exact fingerprint")
    return [type(value).__qualname__, text]


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over hamflow's own Python files (path and content), the code every program is traced from."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def context_fingerprint(devices: list) -> dict:
    """What every program of this process depends on besides its own parts (see the module docstring)."""
    return {
        "hamflow_source": source_digest(),
        "versions": {name: _version(name) for name in _VERSIONED},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "x64": bool(jax.config.jax_enable_x64),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "devices": [[d.platform, d.device_kind, d.id, d.process_index] for d in devices],
        "process_count": jax.process_count(),
    }


def signature(*args: Any) -> list:
    """The input signature of a program: tree structure, and each leaf's shape, dtype and sharding."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    described = []
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        described.append(
            [list(np.shape(leaf)), str(leaf.dtype), str(sharding) if sharding is not None else None]
        )
    return [str(tree), described]


#: Per building thread: whether a build is running, and how many persistent-cache hits it saw.
_BUILD = threading.local()
_PERSISTENT_HIT = "/jax/compilation_cache/cache_hits"


def _count_persistent_hits(event: str, **_: object) -> None:
    """JAX monitoring listener: a persistent compilation cache hit in a build of this thread."""
    if event == _PERSISTENT_HIT and getattr(_BUILD, "active", False):
        _BUILD.hits += 1


jax.monitoring.register_event_listener(_count_persistent_hits)


def _build_outside_persistent_cache(build: Callable[[], Any]) -> tuple[Any, bool]:
    """(build(), whether JAX's persistent compilation cache served any of its compiles)."""
    _BUILD.active, _BUILD.hits = True, 0
    try:
        program = build()
    finally:
        _BUILD.active = False
    return program, _BUILD.hits > 0


class ProgramCache:
    """Compiled programs and traced values on disk, keyed by :func:`fingerprint` digests.

    folder: where entries live (None: the cache is off and every call builds). context: the process's
    :func:`context_fingerprint` (plus anything else shared by all entries).
    """

    def __init__(self, folder: Path | None, context: dict) -> None:
        self.folder = folder
        self.context = context

    def key(self, kind: str, parts: Any) -> str | None:
        """The entry name of ``kind`` with ``parts``, or None when they cannot be fingerprinted."""
        try:
            described = fingerprint({"kind": kind, "context": self.context, "parts": parts})
        except Unfingerprintable as why:
            LOG.info("program cache not used for %s: %s", kind, why)
            return None
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:40]}"

    def _path(self, key: str | None) -> Path | None:
        if self.folder is None or key is None:
            return None
        return self.folder / f"{key}.pkl"

    def _load(self, path: Path | None) -> Any:
        if path is None or not path.is_file():
            return None
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle)
        except Exception as why:  # noqa: BLE001 - any unreadable entry is rebuilt
            LOG.warning("program cache entry %s is unreadable (%s): rebuilding it", path, why)
            return None

    def _store(self, path: Path | None, payload: Any) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".pkl") as tmp, open(tmp, "wb") as handle:
                pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as why:  # a full or read-only disk costs the next run a compile, nothing else
            LOG.warning("program cache entry %s not written: %s", path, why)

    def compiled(self, kind: str, parts: Any, build: Callable[[], Any]) -> tuple[Any, bool]:
        """(program, hit): the cached executable of ``kind`` with ``parts``, else ``build()`` (a
        ``jax.stages.Compiled``) stored for the next run."""
        from jax.experimental import serialize_executable

        path = self._path(self.key(kind, parts))
        payload = self._load(path)
        if payload is not None:
            try:
                return serialize_executable.deserialize_and_load(*payload), True
            except Exception as why:  # noqa: BLE001 - a stale or foreign executable is rebuilt
                LOG.warning("program cache entry %s does not load (%s): rebuilding it", path, why)
        program, from_persistent_cache = _build_outside_persistent_cache(build)
        if from_persistent_cache and path is not None:
            LOG.info(
                "program %s came from JAX's persistent compilation cache: not stored (such an executable"
                " does not run once re-serialised)",
                kind,
            )
        elif path is not None:
            try:
                payload = serialize_executable.serialize(program)
            except Exception as why:  # noqa: BLE001 - a backend that cannot serialise just compiles
                LOG.info("program %s not cacheable: %s", kind, why)
            else:
                self._store(path, payload)
        return program, False

    def value(self, kind: str, parts: Any, build: Callable[[], Any]) -> Any:
        """The cached picklable value of ``kind`` with ``parts`` (e.g. parameter shapes), else ``build()``."""
        path = self._path(self.key(kind, parts))
        payload = self._load(path)
        if payload is not None:
            return payload
        value = build()
        self._store(path, value)
        return value


def run_program_cache(cfg: TrainConfig, devices: list) -> ProgramCache:
    """The program cache of a training run: ``programs/`` in its compilation cache folder
    (``process.train.compilation_cache_dir``); off (every program traced and compiled) when that
    folder is switched off."""
    from hamflow.config.train_config import compilation_cache_path

    folder = compilation_cache_path(cfg)
    return ProgramCache(folder / PROGRAMS_FOLDER if folder else None, context_fingerprint(devices))


def parameter_shapes(cache: ProgramCache, module: Any, batch: Any) -> Any:
    """``jax.eval_shape(module.init, key, batch)`` (a tree of ShapeDtypeStruct), from the cache when
    the module and the batch signature match: tracing the network for its shapes takes seconds."""

    def trace() -> Any:
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), batch)
        return jax.tree_util.tree_map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), shapes)

    described = cache.value("init-shapes", {"model": module, "signature": signature(batch)}, trace)
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf[0], np.dtype(leaf[1])),
        described,
        is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], str),
    )
