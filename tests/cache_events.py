"""Counting JAX's persistent compilation cache events in a test (``jax.monitoring`` listeners)."""

from __future__ import annotations


class CacheEvents:
    """Counts compile requests that used the persistent cache, and their misses and hits."""

    def __init__(self) -> None:
        self.requests = 0
        self.misses = 0
        self.hits = 0

    def __call__(self, event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/compile_requests_use_cache":
            self.requests += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.misses += 1
        elif event == "/jax/compilation_cache/cache_hits":
            self.hits += 1
