"""What the graph stage reads of a configuration, as ``typing.Protocol`` classes.

``hamflow.graph`` is below ``hamflow.config`` (docs/architecture.md) and never imports it, so the graph
stage's functions (:mod:`hamflow.graph.stage`) are typed with these structural descriptions of the
keys they read. A resolved :class:`hamflow.config.train_config.TrainConfig` satisfies
:class:`GraphStageConfig`; the members are read-only properties, so frozen dataclasses match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class DftSettings(Protocol):
    """``[data.dft]`` as the graph stage reads it."""

    @property
    def data_dir_depth(self) -> int: ...

    @property
    def on_bad_structure(self) -> str: ...


class GraphSettings(Protocol):
    """``[data.graph]`` as the graph stage reads it."""

    @property
    def dataset_name(self) -> str: ...

    @property
    def graph_type(self) -> str: ...

    @property
    def storage_type(self) -> str: ...

    @property
    def common_orbital_types(self) -> str: ...

    @property
    def parallel_num(self) -> int: ...

    @property
    def disk_mem_buffer_size(self) -> int: ...


class DataSettings(Protocol):
    """``[data]`` as the graph stage reads it."""

    @property
    def inputs_dir(self) -> str: ...

    @property
    def dft(self) -> DftSettings: ...

    @property
    def graph(self) -> GraphSettings: ...


class GraphStageConfig(Protocol):
    """A configuration the graph stage builds a store for (``[data]`` and the store fingerprint's keys).

    ``graph_store_settings()``: the fingerprint's keys by their store names, as declared in the
    configuration's own key table. ``source`` (the TOML file, for error messages) and
    ``data.dft.validation_check`` are read where present.
    """

    @property
    def data(self) -> DataSettings: ...

    def graph_store_settings(self) -> Mapping[str, Any]: ...
