"""JAX's persistent compilation cache: one switch for every stage that compiles (train, infer)."""

from __future__ import annotations

from pathlib import Path

from hamflow.config.train_keys_data import COMPILATION_CACHE_OFF, DEFAULT_COMPILATION_CACHE
from hamflow.errors import os_errors


def cache_folder(setting: str, outputs_dir: str | Path) -> Path | None:
    """The folder of a ``compilation_cache_dir`` setting (process.train or process.infer): ""
    -> ``<outputs_dir>/.jax_cache``, "none" -> None (off), else the path given."""
    text = setting.strip()
    if text == COMPILATION_CACHE_OFF:
        return None
    return Path(text) if text else Path(outputs_dir) / DEFAULT_COMPILATION_CACHE


def use_persistent_cache(path: Path | None) -> Path | None:
    """Point JAX's persistent compilation cache at the folder ``path`` (created; every program is
    stored, however quick its compile) or switch the cache off (None). Returns ``path``.

    JAX decides once per process whether its cache is used, so the decision is reset here: a process
    that compiled with another cache before (a notebook, a test session) follows this call."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if path is not None:
        with os_errors("create the compilation cache folder", path):
            path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path.resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    return path
