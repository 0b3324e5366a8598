"""The training TOML (DeepH-pack's train.toml, every key, plus hamflow's documented additions).

:func:`load_train_config` reads a file, :func:`parse_train_config` a ``tomllib`` mapping; both return
a :class:`TrainConfig`, a tree of frozen dataclasses whose attribute paths are the TOML paths
(``cfg.process.train.dataloader.batch_size``). Defaults are filled in, aliases resolved
(``net_type = "normal"`` -> ``"sparrow"``, ``"accurate"`` -> ``"eagle"``), and every bad input -
unknown key, wrong type, value outside the allowed set or range, contradiction between keys, or an
option not built yet - raises :class:`~hamflow.errors.ConfigError` whose message names the dotted key,
the bad value and what is allowed. :func:`dump_train_config` writes the resolved TOML back.

The sections are declared in :mod:`hamflow.config.train_keys_data` (``[system]``, ``[data]``) and
:mod:`hamflow.config.train_keys_model` (``[model]``, ``[process.train]``; the scheduler in
:mod:`hamflow.config.scheduler_config`), re-exported here; this module assembles them, checks the
rules between keys and derives the key roles.

Units: lengths in Angstrom; learning rates are dimensionless. Each key's meaning is its ``doc=``;
``docs/config.md``'s key tables are rendered from these declarations (``scripts/config_table.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hamflow.config.device import parse_device
from hamflow.config.scheduler_config import (
    WARMUP_EXPONENTIAL_DECAY_RATE,
)
from hamflow.config.schema import (
    DEFAULT_ROLES,
    STAGES,
    KeySpec,
    flatten_keys,
    key_roles,
    parse_section,
    section,
    section_to_dict,
    toml_repr,
)
from hamflow.config.toml_io import apply_overrides, dump_toml, read_toml
from hamflow.config.train_keys_data import (  # noqa: F401 - the sections, importable from here
    ALL_STAGES,
    COMPILATION_CACHE_OFF,
    DEFAULT_COMPILATION_CACHE,
    GRAPH_TYPES,
    MAX_RANDOM_SEED,
    NEWER_GRAPH_TYPES,
    NEWER_LOSS_TYPES,
    NEWER_NET_TYPES,
    NEWER_TARGET_TYPES,
    SPLIT_STAGES,
    SUPERVISED_LOSS_TYPES,
    TRAINABLE_GRAPH_TYPES,
    UNSUPERVISED_LOSS_TYPES,
    DataConfig,
    DftConfig,
    GraphConfig,
    ModelSaveConfig,
    SystemConfig,
)
from hamflow.config.train_keys_model import (  # noqa: F401
    AdvancedConfig,
    ContinuedConfig,
    DataloaderConfig,
    DropConfig,
    ModelConfig,
    OptimizerConfig,
    PluginConfig,
    TrainProcessConfig,
)
from hamflow.errors import ConfigError, NotAvailableError
from hamflow.graph.basis import parse_orbital_types
from hamflow.graph.irreps import (
    check_net_irreps,
    check_parity_rule,
    parse_net_irreps,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessConfig:
    """[process]."""

    train: TrainProcessConfig = section(TrainProcessConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A resolved training TOML. ``source`` is the file it was read from (not compared by ``==``)."""

    system: SystemConfig = section(SystemConfig)
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    process: ProcessConfig = section(ProcessConfig)
    source: Path | None = dataclasses.field(default=None, compare=False)

    def graph_store_settings(self) -> dict[str, Any]:
        """The keys of the graph-store fingerprint, by their store names (see :func:`graph_store_settings`).

        A method so that the graph stage (``hamflow.graph``, below ``hamflow.config``) reads the
        declaration from the configuration it is given without importing this module.
        """
        return graph_store_settings(self)


# ----------------------------------------------------------------------------------- cross checks


def _resourced(check: Callable[[], Any], source: Path | None) -> Any:
    """Run ``check``; a ConfigError it raises without a source gets ``source``."""
    try:
        return check()
    except ConfigError as error:
        if error.source is not None or source is None:
            raise
        raise ConfigError(error.key, error.problem, source=source) from None


def check_system(system: SystemConfig, source: Path | None = None) -> None:
    """Checks of [system] beyond single-key types: the device string's grammar."""
    _resourced(lambda: parse_device(system.device), source)


def _check_net_irreps_key(
    text: str,
    *,
    consider_parity: bool,
    net_type: str,
    common_orbital_types: str = "",
    source: Path | None = None,
) -> None:
    """``net_irreps`` by the one rule of :func:`hamflow.graph.irreps.check_net_irreps`.

    ``""`` is accepted (derived from the common orbital basis). Without a basis (``common_orbital_types
    = ""``: the union of the dataset, known once the data are read) only the syntax, the even scalar and
    the parities are checked here; with one, also that the readout can build every block.
    """
    if not text.strip():
        return
    if common_orbital_types.strip():
        basis = parse_orbital_types(common_orbital_types)
        _resourced(
            lambda: check_net_irreps(text, basis, consider_parity=consider_parity, net_type=net_type), source
        )
    else:
        _resourced(lambda: parse_net_irreps(text, consider_parity=consider_parity, net_type=net_type), source)


def _check_graph(cfg: TrainConfig, source: Path | None) -> None:
    graph = cfg.data.graph
    target = cfg.model.target_type
    allowed = TRAINABLE_GRAPH_TYPES[target]
    if graph.graph_type not in allowed:
        why = (
            " (S and Sap carry no labels: they are inference-only graph types)"
            if graph.graph_type in ("S", "Sap")
            else ""
        )
        raise ConfigError(
            "data.graph.graph_type",
            f"= {toml_repr(graph.graph_type)} cannot train model.target_type = {toml_repr(target)}{why}; "
            f"allowed: {', '.join(toml_repr(g) for g in allowed)}",
            source=source,
        )
    if graph.common_orbital_types.strip():
        _resourced(lambda: parse_orbital_types(graph.common_orbital_types), source)


def _check_model(cfg: TrainConfig, source: Path | None) -> None:
    model = cfg.model
    advanced = model.advanced
    if model.loss_type in UNSUPERVISED_LOSS_TYPES:
        raise NotAvailableError("model.loss_type", model.loss_type, source=source)
    if advanced.standardize_gauge and cfg.data.graph.graph_type != "HS":
        raise ConfigError(
            "model.advanced.standardize_gauge",
            f'= true needs the overlap: data.graph.graph_type must be "HS", got '
            f'{toml_repr(cfg.data.graph.graph_type)}; allowed: false, or true with graph_type = "HS"',
            source=source,
        )
    _resourced(lambda: check_parity_rule(model.net_type, advanced.consider_parity), source)
    _check_net_irreps_key(
        advanced.net_irreps,
        consider_parity=advanced.consider_parity,
        net_type=model.net_type,
        common_orbital_types=cfg.data.graph.common_orbital_types,
        source=source,
    )


def _check_process(cfg: TrainConfig, source: Path | None) -> None:
    train = cfg.process.train
    loader = train.dataloader
    if loader.train_size == 0 and not loader.dataset_split_json.strip():
        raise ConfigError(
            "process.train.dataloader.train_size",
            "= 0 leaves nothing to train on; allowed: an integer >= 1 (or set dataset_split_json)",
            source=source,
        )
    continued = train.continued
    if continued.enable and not continued.previous_output_dir.strip():
        raise ConfigError(
            "process.train.continued.previous_output_dir",
            "is required when process.train.continued.enable = true; "
            "expected the previous run folder (with deepx.log and model/)",
            source=source,
        )


def check_train_config(cfg: TrainConfig) -> None:
    """Checks between keys (contradictions, options not built yet); ConfigError on the first failure."""
    source = cfg.source
    check_system(cfg.system, source)
    _check_graph(cfg, source)
    _check_model(cfg, source)
    _check_process(cfg, source)


# ------------------------------------------------------------------------------------------- public


def parse_train_config(data: Mapping[str, Any], *, source: str | Path | None = None) -> TrainConfig:
    """Validate a training TOML mapping, fill defaults, resolve aliases; ConfigError on bad input."""
    source_path = Path(source) if source is not None else None
    cfg = parse_section(TrainConfig, data, source=source_path, extra={"source": source_path})
    check_train_config(cfg)
    return cfg


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training TOML file; ConfigError (also for unreadable or invalid TOML)."""
    return parse_train_config(read_toml(path), source=path)


def train_config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved configuration as a plain TOML mapping (every key, canonical values)."""
    return section_to_dict(cfg)


def dump_train_config(cfg: TrainConfig) -> str:
    """Resolved TOML text (defaults filled, aliases resolved) that loads back equal to ``cfg``."""
    origin = f" from {cfg.source}" if cfg.source is not None else ""
    header = f"hamflow: fully resolved training configuration{origin}"
    if cfg.process.train.scheduler.type == "warmup_exponential_decay":
        header += (
            f"\nwarmup_exponential_decay uses decay_rate = {WARMUP_EXPONENTIAL_DECAY_RATE} "
            "(hamflow's choice: DeepH-pack's template has no key for it): the scale halves every "
            "transition_steps steps"
        )
    return dump_toml(train_config_to_dict(cfg), header)


def with_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with ``{"data.inputs_dir": ..., ...}`` set, validated again as a whole."""
    return apply_overrides(cfg, overrides, parse_train_config, train_config_to_dict)


def compilation_cache_path(cfg: TrainConfig) -> Path | None:
    """The JAX persistent compilation cache folder of a run, or None when switched off ("none")."""
    from hamflow.config.compilation_cache import cache_folder

    return cache_folder(cfg.process.train.compilation_cache_dir, cfg.data.outputs_dir)


def radial_cutoff(gaussian_basis_rmax: float) -> float:
    """The networks' radial cutoff (Angstrom) for a ``model.advanced.gaussian_basis_rmax``: the key itself.

    The Gaussian radial basis spans [0, cutoff] and the message envelope falls to 0 there
    (:mod:`hamflow.nn.radial`); the network builders receive this length as ``rmax``.
    """
    return float(gaussian_basis_rmax)


def neighbour_cutoff(gaussian_basis_rmax: float) -> float:
    """The pair cutoff (Angstrom) of the neighbour search for a ``gaussian_basis_rmax``: the same length.

    Used where a structure has no overlap.h5 to list its atom pairs (Sap graphs, inference on new
    structures; :func:`hamflow.graph.neighbours.neighbour_edges`): with the key at about twice the
    largest orbital radius, every pair whose orbitals overlap (distance < r_i + r_j) lies inside it,
    and no pair the network could see is left out. A training Sap store records it as its
    ``neighbour_cutoff`` setting (the key's ``store=`` declaration); inference takes it from the model.
    """
    return radial_cutoff(gaussian_basis_rmax)


def latest_save_interval(cfg: TrainConfig) -> int:
    """Epoch interval of ``latest`` checkpoints: ``latest_interval``, or ``max_epoch`` when it is <= 0
    or larger than ``max_epoch`` (then only the last epoch is saved)."""
    interval = cfg.data.model_save.latest_interval
    max_epoch = cfg.process.train.max_epoch
    return interval if 1 <= interval <= max_epoch else max_epoch


# ------------------------------------------------------------------------------ roles of the keys


def train_key_roles() -> dict[str, KeySpec]:
    """{dotted key: its declaration} for every key of the training TOML declared with ``option``."""
    return key_roles(TrainConfig)


def resolved_keys(cfg: TrainConfig) -> dict[str, Any]:
    """{dotted key: value} of every key of the resolved configuration (the scheduler's included)."""
    return flatten_keys(train_config_to_dict(cfg))


def stage_keys(cfg: TrainConfig, stage: str) -> list[str]:
    """The dotted keys whose value changes the result of ``stage`` (of :data:`STAGES`), in TOML order.

    Derived from each key's ``stages`` (and ``store``) declaration; keys without one (the scheduler
    section's) affect training only. The Snakemake rules take these as their params.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    roles = train_key_roles()
    graph_type = cfg.data.graph.graph_type
    return [
        key
        for key in resolved_keys(cfg)
        if roles.get(key, DEFAULT_ROLES).affects(stage, graph_type=graph_type)
    ]


def resume_mutable_keys() -> tuple[str, ...]:
    """The dotted keys declared ``resume_ok``: they may change between a run and its resumption."""
    return tuple(key for key, spec in train_key_roles().items() if spec.resume_ok)


def resume_blocking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Sorted dotted keys whose value differs between two resolved TOML mappings, except the
    ``resume_ok`` ones: a non-empty list means checkpoints written under ``old`` cannot be resumed."""
    flat_old, flat_new = flatten_keys(old), flatten_keys(new)
    mutable = set(resume_mutable_keys())
    return [
        key
        for key in sorted(set(flat_old) | set(flat_new))
        if key not in mutable and flat_old.get(key) != flat_new.get(key)
    ]


def graph_store_settings(cfg: TrainConfig) -> dict[str, Any]:
    """{store name: value} of the keys declared with ``store`` that apply to ``cfg``'s graph type.

    E.g. ``{"graph_type": "H", "storage_type": "memory", "common_orbital_types": "", "dtype": "fp32",
    "on_bad_structure": "fail", "data_dir_depth": 0}``, plus ``"neighbour_cutoff"`` for Sap graphs
    (:func:`neighbour_cutoff` of ``gaussian_basis_rmax``). Other values are as in the TOML; the graph
    stage encodes them (e.g. ``dtype``) for its fingerprint.
    """
    graph_type = cfg.data.graph.graph_type
    values = resolved_keys(cfg)
    settings = {
        spec.store: values[key] for key, spec in train_key_roles().items() if spec.enters_store(graph_type)
    }
    if "neighbour_cutoff" in settings:
        settings["neighbour_cutoff"] = neighbour_cutoff(settings["neighbour_cutoff"])
    return settings
