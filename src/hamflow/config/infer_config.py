"""The inference TOML (DeepH-pack's infer.toml): which structures, which trained model, where to write.

:func:`load_infer_config` / :func:`parse_infer_config` return an :class:`InferConfig` whose attribute
paths are the TOML paths (``cfg.process.infer.dataloader.batch_size``), validated to the same standard
as the training TOML: unknown keys, wrong types, values outside the allowed set and options not built
yet (``output_type = "petsc"``) raise :class:`~hamflow.errors.ConfigError` naming the dotted key.
[system] and [data.dft] are the training TOML's sections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hamflow.config.schema import (
    REQUIRED,
    at_least,
    file_name_ok,
    non_empty,
    option,
    parse_section,
    section,
    section_to_dict,
)
from hamflow.config.toml_io import apply_overrides, dump_toml, read_toml
from hamflow.config.train_config import DftConfig, SystemConfig, check_system
from hamflow.errors import NotAvailableError

INFER_GRAPH_TYPES = ("S", "Sap")
OUTPUT_TYPES = ("h5", "petsc")
AVAILABLE_OUTPUT_TYPES = ("h5",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferGraphConfig:
    """[data.graph] of inference: graphs from the overlap (S) or its shape only (Sap)."""

    dataset_name: str = option(
        "INFER-DEMO",
        check=file_name_ok,
        allowed="a non-empty name without '/' (used in file names)",
        doc="as in training",
    )
    graph_type: str = option(
        "S",
        choices=INFER_GRAPH_TYPES,
        doc=(
            '"S": edges and masks from the overlap values; "Sap": from the overlap\'s shape only '
            "(structures without overlap.h5 take their edges from the neighbour search)"
        ),
    )
    storage_type: str = option("memory", choices=("memory", "disk"), doc="as in training")
    parallel_num: int = option(
        -1, allowed="an integer (<= 0: as many as the machine has)", doc="as in training"
    )
    only_save_graph: bool = option(False, doc="as in training")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferDataConfig:
    """[data]: the structures to predict (``inputs_dir/dft``) and where run folders are written."""

    inputs_dir: str = option(
        REQUIRED,
        kind="string",
        check=non_empty,
        allowed="a non-empty path",
        doc="structures under inputs_dir/dft/ (POSCAR, info.json, overlap.h5)",
    )
    outputs_dir: str = option(
        REQUIRED,
        kind="string",
        check=non_empty,
        allowed="a non-empty path",
        doc="a timestamped run folder is made inside",
    )
    dft: DftConfig = section(DftConfig)
    graph: InferGraphConfig = section(InferGraphConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferModelConfig:
    """[model]: the trained model to load (a run's ``model`` folder)."""

    model_dir: str = option(
        REQUIRED,
        kind="string",
        check=non_empty,
        allowed="the trained run's model folder (<run>/model)",
        doc="the trained run's model folder, usually <run>/model",
    )
    load_model_type: str = option(
        "best", choices=("best", "latest"), doc="which saved parameters to predict with"
    )
    load_model_epoch: int = option(
        -1,
        accept_int_string=True,
        check=lambda v: v >= -1,
        allowed="an integer: -1 (the newest saved epoch) or a saved epoch >= 0",
        doc='for "latest": the saved epoch, -1 the newest',
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferDataloaderConfig:
    """[process.infer.dataloader]."""

    batch_size: int = option(1, check=at_least(1), allowed="an integer >= 1", doc="structures per batch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferProcessConfig:
    """[process.infer]: output format and placement, symmetrisation, compilation buckets."""

    output_type: str = option(
        "h5", choices=OUTPUT_TYPES, doc='format of the predictions ("petsc" is not available yet)'
    )
    output_into: str = option(
        "to_output",
        choices=("to_output", "to_input"),
        doc='"to_output": <outputs_dir>/<timestamp>/dft/<sid>/; "to_input": <inputs_dir>/dft/<sid>/',
    )
    target_symmetrize: bool = option(True, doc="make the prediction Hermitian, H(R)ij = H(-R)ji^T")
    multi_way_jit_num: int = option(
        1, check=at_least(1), allowed="an integer >= 1", doc="padded shape buckets (one compilation each)"
    )
    chunk_edges: int = option(
        0,
        check=at_least(0),
        allowed="an integer >= 0 (0: chosen from the memory available)",
        doc=(
            "a structure with more edges than this is predicted alone, its edges fed through the "
            "network this many at a time and its file written slice by slice (memory linear in the "
            "atoms, see [inference.md](inference.md#large-structures)); 0: from the memory available"
        ),
        origin="hamflow",
    )
    compilation_cache_dir: str = option(
        "",
        allowed='"" (<outputs_dir>/.jax_cache, the folder training uses by default), "none" (off) or a'
        " folder path",
        doc=(
            "JAX's persistent compilation cache, so that a rerun on structures of the same shapes (or the"
            " same chunk size) loads its programs instead of compiling them"
        ),
        origin="hamflow",
    )
    dataloader: InferDataloaderConfig = section(InferDataloaderConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferProcessSection:
    """[process]."""

    infer: InferProcessConfig = section(InferProcessConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferConfig:
    """A resolved inference TOML. ``source`` is the file it was read from (not compared by ``==``)."""

    system: SystemConfig = section(SystemConfig)
    data: InferDataConfig = section(InferDataConfig)
    model: InferModelConfig = section(InferModelConfig)
    process: InferProcessSection = section(InferProcessSection)
    source: Path | None = dataclasses.field(default=None, compare=False)


def infer_compilation_cache_path(cfg: InferConfig) -> Path | None:
    """The persistent compilation cache folder of ``process.infer.compilation_cache_dir``, or None
    when switched off ("none")."""
    from hamflow.config.compilation_cache import cache_folder

    return cache_folder(cfg.process.infer.compilation_cache_dir, cfg.data.outputs_dir)


def check_infer_config(cfg: InferConfig) -> None:
    """Checks beyond single keys: the device grammar, output types not built yet."""
    check_system(cfg.system, cfg.source)
    output_type = cfg.process.infer.output_type
    if output_type not in AVAILABLE_OUTPUT_TYPES:
        raise NotAvailableError("process.infer.output_type", output_type, source=cfg.source)


def parse_infer_config(data: Mapping[str, Any], *, source: str | Path | None = None) -> InferConfig:
    """Validate an inference TOML mapping and fill defaults; ConfigError on bad input."""
    source_path = Path(source) if source is not None else None
    cfg = parse_section(InferConfig, data, source=source_path, extra={"source": source_path})
    check_infer_config(cfg)
    return cfg


def load_infer_config(path: str | Path) -> InferConfig:
    """Read and validate an inference TOML file; ConfigError (also for unreadable or invalid TOML)."""
    return parse_infer_config(read_toml(path), source=path)


def infer_config_to_dict(cfg: InferConfig) -> dict[str, Any]:
    """The resolved configuration as a plain TOML mapping."""
    return section_to_dict(cfg)


def dump_infer_config(cfg: InferConfig) -> str:
    """Resolved TOML text (defaults filled) that loads back equal to ``cfg``."""
    origin = f" from {cfg.source}" if cfg.source is not None else ""
    return dump_toml(infer_config_to_dict(cfg), f"hamflow: fully resolved inference configuration{origin}")


def with_overrides(cfg: InferConfig, overrides: Mapping[str, Any]) -> InferConfig:
    """A copy of ``cfg`` with ``{"model.model_dir": ..., ...}`` set, validated again as a whole."""
    return apply_overrides(cfg, overrides, parse_infer_config, infer_config_to_dict)
