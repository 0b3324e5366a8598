"""The training TOML (DeepH-pack's train.toml, every key, plus hamflow's documented additions).

:func:`load_train_config` reads a file, :func:`parse_train_config` a ``tomllib`` mapping; both return
a :class:`TrainConfig`, a tree of frozen dataclasses whose attribute paths are the TOML paths
(``cfg.process.train.dataloader.batch_size``). Defaults are filled in, aliases resolved
(``net_type = "normal"`` -> ``"sparrow"``, ``"accurate"`` -> ``"eagle"``), and every bad input -
unknown key, wrong type, value outside the allowed set or range, contradiction between keys, or an
option not built yet - raises :class:`~hamflow.errors.ConfigError` whose message names the dotted key,
the bad value and what is allowed. :func:`dump_train_config` writes the resolved TOML back.

Units: lengths in Angstrom; learning rates are dimensionless. Each key's meaning is its ``doc=``;
``docs/config.md``'s key tables are rendered from these declarations (``scripts/config_table.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hamflow.config.device import DEVICE_TYPES, parse_device
from hamflow.config.logging_setup import LOG_LEVELS
from hamflow.config.precision import FLOAT_TYPES
from hamflow.config.scheduler_config import (
    WARMUP_EXPONENTIAL_DECAY_RATE,
    SchedulerConfig,
    scheduler_config_from_section,
    scheduler_config_to_section,
)
from hamflow.config.schema import (
    DEFAULT_ROLES,
    REQUIRED,
    STAGES,
    KeySpec,
    above,
    at_least,
    file_name_ok,
    flatten_keys,
    key_roles,
    non_empty,
    option,
    parse_section,
    section,
    section_to_dict,
    toml_repr,
)
from hamflow.config.toml_io import apply_overrides, dump_toml, read_toml
from hamflow.errors import ConfigError, NotAvailableError
from hamflow.graph.basis import parse_orbital_types
from hamflow.graph.irreps import (
    NET_TYPE_ALIASES,
    NET_TYPES,
    check_net_irreps,
    check_parity_rule,
    parse_net_irreps,
)

SUPERVISED_LOSS_TYPES = ("mae", "mse", "wmae", "huber")
UNSUPERVISED_LOSS_TYPES = ("ai2dft", "ai2dft_node", "hopad", "aims")
GRAPH_TYPES = ("H", "HS", "Rho", "Sap", "S")
# Values of DeepH-pack's newer template that hamflow recognises but does not build yet.
NEWER_GRAPH_TYPES = ("VrC", "SapVc", "FF", "IEP")
NEWER_NET_TYPES = ("fast", "eagleplus", "albatross", "owl", "petrel", "swift")
NEWER_TARGET_TYPES = ("VrC", "Vc", "FF", "IEP")
NEWER_LOSS_TYPES = ("emae", "mae_debug")
TRAINABLE_GRAPH_TYPES = {"H": ("H", "HS"), "Rho": ("Rho",)}
COMPILATION_CACHE_OFF = "none"
DEFAULT_COMPILATION_CACHE = ".jax_cache"
MAX_RANDOM_SEED = 2**32 - 1
#: Stages of the keys every stage reads (where the data are) and of those that choose the split.
ALL_STAGES = STAGES
SPLIT_STAGES = ("discover", "train")

_C = TypeVar("_C")


def _betas_ok(value: tuple[float, ...]) -> bool:
    return all(0.0 < beta < 1.0 for beta in value)


# ------------------------------------------------------------------------------------------- system


@dataclasses.dataclass(frozen=True, kw_only=True)
class SystemConfig:
    """[system]: device, precision, seed and logging of a run (shared by training and inference)."""

    note: str = option("Enjoy DeepH-pack! ;-)", doc="name of the project", stages=(), resume_ok=True)
    device: str = option(
        "gpu*8:0",
        allowed=f"<type>*<num>[:<ids>] with <type> in {', '.join(DEVICE_TYPES)}",
        resume_ok=True,
        doc='the accelerators to use, e.g. "gpu*8:0" or "cpu*4"; see [Devices](#devices)',
    )
    float_type: str = option(
        "fp32",
        choices=FLOAT_TYPES,
        stages=("graph", "train", "infer"),
        store="dtype",
        doc="precision of parameters, computation and stored graphs; see [Float types](#float-types)",
    )
    random_seed: int = option(
        137,
        check=lambda v: 0 <= v <= MAX_RANDOM_SEED,
        allowed=f"an integer from 0 to {MAX_RANDOM_SEED}",
        stages=("discover", "train"),
        doc="seeds the dataset split, the parameter initialisation and the shuffling",
    )
    log_level: str = option(
        "info",
        choices=tuple(LOG_LEVELS),
        stages=(),
        resume_ok=True,
        doc=(
            "lowest level of the records written to <run>/deepx.log and the console (DeepH-pack's"
            ' list omits "error", its description names it)'
        ),
    )
    jax_memory_preallocate: bool = option(
        True,
        stages=(),
        resume_ok=True,
        doc=(
            "pre-allocate 75 % of the accelerator memory (XLA_PYTHON_CLIENT_PREALLOCATE); false "
            "to debug memory use"
        ),
    )
    show_train_process_bar: bool = option(
        True,
        stages=(),
        resume_ok=True,
        doc=(
            "per-batch progress bar on stderr, shown only when stderr is a terminal (the epoch "
            "lines are logged either way)"
        ),
    )


# --------------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True, kw_only=True)
class DftConfig:
    """[data.dft]: how structures are laid out under ``inputs_dir/dft``."""

    data_dir_depth: int = option(
        0,
        check=at_least(0),
        allowed="an integer >= 0",
        stages=ALL_STAGES,
        store="data_dir_depth",
        doc="folder levels between dft/ and the structure folders (2: dft/<t1>/<t2>/<sid>/)",
    )
    on_bad_structure: str = option(
        "fail",
        choices=("fail", "skip"),
        stages=("parse", "graph", "train"),
        store="on_bad_structure",
        doc=(
            '"fail": stop at the first structure whose files are missing or inconsistent, naming '
            'the file and the reason; "skip": leave bad structures out and write a report of each'
            " skipped id and why"
        ),
        origin="hamflow",
    )
    # DeepH-pack's newer template: validate every structure (as `hamflow validate`) before the graphs.
    validation_check: bool = option(
        False,
        doc=(
            "true: before the graph stage, on every run, validate every structure folder under "
            "dft/ as `hamflow validate` does (on_bad_structure applies). With false the graph "
            "stage still validates the structures it builds graphs of"
        ),
        origin="newer",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GraphConfig:
    """[data.graph]: the graph store built from the DFT data."""

    dataset_name: str = option(
        "DATASET-DEMO",
        check=file_name_ok,
        allowed="a non-empty name without '/' (used in file names)",
        stages=("graph", "train"),
        doc="part of the graph file names graph/<dataset_name>.<graph_type>.<storage_type>.*",
    )
    graph_type: str = option(
        "H",
        choices=GRAPH_TYPES,
        unavailable=NEWER_GRAPH_TYPES,
        stages=("parse", "graph", "train"),
        store="graph_type",
        doc=(
            'which matrices the graphs carry; for training it must carry the target\'s labels: "H"'
            ' or "HS" for target_type = "H", "Rho" for "Rho" ("S" and "Sap" are inference-only)'
        ),
    )
    storage_type: str = option(
        "memory",
        choices=("memory", "disk"),
        stages=("graph", "train"),
        store="storage_type",
        resume_ok=True,
        doc='"memory": the store is read whole; "disk": read in chunks while training',
    )
    common_orbital_types: str = option(
        "",
        allowed='"" (union of the dataset) or e.g. "s2p2d1"',
        stages=("graph", "train"),
        store="common_orbital_types",
        doc=(
            'the common orbital basis of all elements; "": the union of the orbital shells in the'
            " dataset; else letters spdfghik each with a shell count"
        ),
    )
    parallel_num: int = option(
        -1,
        allowed="an integer (<= 0: as many as the machine has)",
        stages=(),
        resume_ok=True,
        doc="worker processes for graph building (more than the machine has: as many as it has)",
    )
    only_save_graph: bool = option(False, resume_ok=True, doc="build and save the graph store, then stop")
    # DeepH-pack's newer template: a sharded disk store (recognised; hamflow's store is one file,
    # built in shards with `hamflow graph --shard K/N` and joined; every training process reads it all).
    disk_shards_num: int = option(
        1,
        not_built=True,
        doc=(
            "hamflow's graph store is one file (built in shards with `hamflow graph --shard K/N`,"
            " then joined; every training process reads it whole)"
        ),
        origin="newer",
    )
    disk_shards_indices: tuple[int, ...] = option(
        (), kind="int_list", not_built=True, doc="see disk_shards_num", origin="newer"
    )
    # the disk store's in-memory buffer while training: HDF5's chunk cache, in MiB, over all its arrays;
    # a speed setting (the graphs read are the same), so no stage's result and no resume depends on it
    disk_mem_buffer_size: int = option(
        2048,
        check=at_least(1),
        allowed="an integer >= 1 (MiB)",
        stages=(),
        resume_ok=True,
        doc=(
            'HDF5 chunk cache, in MiB in all, while training reads a "disk" store (no effect on a'
            ' "memory" store); a speed setting only'
        ),
        origin="newer",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSaveConfig:
    """[data.model_save]: which checkpoints are kept."""

    best: bool = option(True, resume_ok=True, doc="keep the model with the lowest loss")
    latest: bool = option(True, resume_ok=True, doc="keep periodic snapshots")
    latest_interval: int = option(
        100,
        allowed="an integer (<= 0 or > max_epoch: only the last epoch)",
        resume_ok=True,
        doc="a snapshot every this many epochs",
    )
    latest_num: int = option(
        10, check=at_least(1), allowed="an integer >= 1", resume_ok=True, doc="number of snapshots kept"
    )
    # DeepH-pack's newer template: resumable checkpoints every N steps inside an epoch (-1: off).
    latest_cache_mid_step_interval: int = option(
        -1,
        allowed="an integer: N >= 1 saves a resumable checkpoint every N optimizer steps; <= 0 off",
        resume_ok=True,
        doc=(
            "N >= 1: a resumable checkpoint every N optimizer steps inside an epoch, so a killed "
            "run resumes at that step on the same loss curve "
            "([training](training.md#resuming-continuing-fine-tuning))"
        ),
        origin="newer",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """[data]: where inputs are read and run folders are written (paths as given, not resolved)."""

    inputs_dir: str = option(
        REQUIRED,
        kind="string",
        check=non_empty,
        allowed="a non-empty path",
        stages=ALL_STAGES,
        doc=(
            "folder holding dft/ (and graph/, written by hamflow); relative paths are from the "
            "directory the command runs in"
        ),
    )
    outputs_dir: str = option(
        REQUIRED,
        kind="string",
        check=non_empty,
        allowed="a non-empty path",
        stages=(),
        doc="parent of the timestamped run folders <%Y-%m-%d_%H-%M-%S>/",
    )
    dft: DftConfig = section(DftConfig)
    graph: GraphConfig = section(GraphConfig)
    model_save: ModelSaveConfig = section(ModelSaveConfig)


# -------------------------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdvancedConfig:
    """[model.advanced]: network size and symmetry."""

    # The one place that handles this key: the other modules receive the lengths resolved by
    # radial_cutoff() / neighbour_cutoff() below (inference through the saved ModelSpec, whose field
    # keeps the key's name so that every model.json written so far still loads).
    gaussian_basis_rmax: float = option(
        7.5,
        check=above(0.0),
        allowed="a number > 0 (Angstrom)",
        doc="cutoff radius of the Gaussian radial basis and of the smooth envelope that weights the "
        "messages; also the pair cutoff of the neighbour search for structures without overlap.h5 "
        "(Sap graphs, inference on new structures). DeepH-pack advises about twice the largest "
        "orbital cutoff radius",
        store="neighbour_cutoff",
        store_graph_types=("Sap",),
    )
    net_irreps: str = option(
        REQUIRED,
        kind="string",
        allowed='an e3nn Irreps string such as "64x0e+32x1o+16x2e", or "" (derived from the basis)',
        doc=(
            'the e3nn irreps of the features, with at least one 0e; "": derived from the common '
            "orbital basis. See [Checks between keys](#checks-between-keys) for which irreps can "
            "build the blocks"
        ),
    )
    num_blocks: int = option(
        3,
        check=at_least(1),
        allowed="an integer >= 1",
        doc="message-passing blocks (3 for solids, 4 for small molecules suggested)",
    )
    consider_parity: bool = option(
        True,
        doc="equivariance under inversion too; false allows even irreps only and must be false for eagle",
    )
    standardize_gauge: bool = option(
        False,
        stages=("train", "evaluate"),
        doc='learn up to the DFT energy zero; needs data.graph.graph_type = "HS"',
    )
    # DeepH-pack's newer template (albatross, petrel, universal models): recognised, not built yet.
    latent_irreps: str = option("", not_built=True, doc="newer networks' latent features", origin="newer")
    latent_edge_cutoff: float = option(
        100.0, not_built=True, doc="newer networks' latent edge cutoff (Angstrom)", origin="newer"
    )
    latent_scalar_dim: int = option(-1, not_built=True, doc="newer networks' latent scalars", origin="newer")
    num_heads: int = option(2, not_built=True, doc="attention heads of the newer networks", origin="newer")
    enable_bs3b_layer: bool = option(
        False, not_built=True, doc="the newer networks' bs3b layer", origin="newer"
    )
    bs3b_orbital_types: str = option("", not_built=True, doc="orbitals of the bs3b layer", origin="newer")
    vr_focus_size: int = option(256, not_built=True, doc="VrC targets' focus size", origin="newer")
    enable_element_moe: bool = option(
        False, not_built=True, doc="per-element mixture of experts", origin="newer"
    )
    moe_element_include: tuple[str, ...] = option(
        (), kind="string_list", not_built=True, doc="elements of the mixture of experts", origin="newer"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """[model]: network type, learning target and loss."""

    net_type: str = option(
        "sparrow",
        choices=NET_TYPES,
        aliases=NET_TYPE_ALIASES,
        unavailable=NEWER_NET_TYPES,
        doc=(
            'the network: sparrow ("normal": light, < 1M parameters) or eagle ("accurate": '
            "larger, even parity only); see [model](model.md)"
        ),
    )
    target_type: str = option(
        "H",
        choices=tuple(TRAINABLE_GRAPH_TYPES),
        unavailable=NEWER_TARGET_TYPES,
        stages=("train", "evaluate"),
        doc='what is learned: "H" the Hamiltonian, "Rho" the density matrix',
    )
    loss_type: str = option(
        "mse",
        choices=SUPERVISED_LOSS_TYPES + UNSUPERVISED_LOSS_TYPES,
        unavailable=NEWER_LOSS_TYPES,
        doc=(
            'the training loss; the unsupervised "ai2dft", "ai2dft_node", "hopad" and "aims" are '
            "accepted by the schema but not available yet"
        ),
    )
    advanced: AdvancedConfig = section(AdvancedConfig)


# ------------------------------------------------------------------------------------------ process


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataloaderConfig:
    """[process.train.dataloader]: batch size and the dataset split."""

    batch_size: int = option(1, check=at_least(1), allowed="an integer >= 1", doc="structures per batch")
    train_size: int = option(
        1,
        check=at_least(0),
        allowed="an integer >= 0",
        stages=SPLIT_STAGES,
        doc="structures in the training set (0 only together with dataset_split_json)",
    )
    validate_size: int = option(
        0,
        check=at_least(0),
        allowed="an integer >= 0",
        stages=SPLIT_STAGES,
        doc="structures in the validation set",
    )
    test_size: int = option(
        0, check=at_least(0), allowed="an integer >= 0", stages=SPLIT_STAGES, doc="structures in the test set"
    )
    dataset_split_json: str = option(
        "",
        allowed='"" (split by sizes and random_seed) or a JSON file path',
        stages=SPLIT_STAGES,
        doc=(
            '"": split by the three sizes and random_seed; else a JSON file {"train": [...], '
            '"validate": [...], "test": [...]} of structure ids'
        ),
    )
    only_use_train_loss: bool = option(
        False,
        doc=(
            "drive the learning-rate schedule by the train loss only (set it when the validation "
            "set is empty)"
        ),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """[process.train.optimizer]: optax optimizer and its hyper-parameters."""

    type: str = option("adamw", choices=("sgd", "adam", "adamw"), doc="the optimizer")
    init_learning_rate: float = option(
        2e-3,
        check=above(0.0),
        allowed="a number > 0",
        doc=(
            "learning rate of the DeepH-pack schedules, which multiply it by their scale (2E-3 "
            "for sparrow, 1E-3 for eagle suggested)"
        ),
    )
    clip_norm_factor: float = option(
        -1.0,
        check=lambda v: v != 0.0,
        allowed="a number > 0, or < 0 to switch clipping off",
        doc="clip the gradient's global norm to this value; negative: no clipping (0 is rejected)",
    )
    momentum: float = option(
        0.8, check=lambda v: 0.0 <= v < 1.0, allowed="a number in [0, 1)", doc="used by sgd only"
    )
    betas: tuple[float, float] = option(
        (0.9, 0.999),
        length=2,
        check=_betas_ok,
        allowed="a list of 2 numbers, each in (0, 1)",
        doc="used by adam and adamw",
    )
    weight: float = option(0.001, check=at_least(0.0), allowed="a number >= 0", doc="adamw weight decay")
    eps: float = option(1e-8, check=above(0.0), allowed="a number > 0", doc="used by adam and adamw")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DropConfig:
    """[process.train.drop] (DeepH-pack's newer template): dropout in the training step.

    ``dropout_rate``: probability of dropping each irrep channel of the backbone's node and edge
    features before the readout (hamflow.nn.dropout; evaluation and inference never drop). Absent
    (the 1.0.x train.toml has no such key): 0, no dropout, training as before; the newer template
    writes 0.1 explicitly, and a file that does gets 0.1. The other two keys are recognised, not built.
    """

    # roles: training only (the default stages) and resume_ok: the masks come from (seed, step), so a
    # resumed run at the same rate draws what the uninterrupted run would, and a changed rate applies
    # from the resumed step on. Run folders written before dropout was built recorded the template's
    # 0.1 (which then had no effect); with the key absent they resume at 0 instead of starting afresh.
    dropout_rate: float = option(
        0.0,
        check=lambda v: 0.0 <= v < 1.0,
        allowed="a number in [0, 1): 0 switches dropout off (the default when the key is absent)",
        resume_ok=True,
        doc=(
            "probability of dropping each irrep channel of the node and edge features before the "
            "readouts, in the training step only (evaluation and inference never drop). Absent: "
            "0, as DeepH-pack 1.0.x, which has no such key; the newer template writes 0.1. See "
            "[model](model.md#architecture)"
        ),
        origin="newer",
    )
    stochastic_depth: float = option(
        0.0, not_built=True, doc="stochastic depth of the newer networks", origin="newer"
    )
    proj_rate: float = option(
        0.0, not_built=True, doc="projection dropout of the newer networks", origin="newer"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PluginConfig:
    """[process.train.with_plugin] (DeepH-pack's newer template): external plugins; recognised, not built."""

    enable: bool = option(
        False, not_built=True, doc="external plugins (unsupervised training)", origin="newer"
    )
    plugin: str = option(
        "null",
        not_built=True,
        allowed='"null" ("unsupervised", "G_C2Vr" not built)',
        doc="the plugin",
        origin="newer",
    )
    env_path: str = option("", not_built=True, doc="the plugin's environment", origin="newer")
    script_path: str = option("", not_built=True, doc="the plugin's script", origin="newer")
    backend: str = option("null", not_built=True, doc="the plugin's backend", origin="newer")
    dump_intermediate: bool = option(
        False, not_built=True, doc="write the plugin's intermediate results", origin="newer"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContinuedConfig:
    """[process.train.continued]: resume or fine-tune from a previous run."""

    enable: bool = option(False, doc="continue or fine-tune from a previous run")
    new_training_data: bool = option(False, doc="the data differ from the previous run's (fine-tuning)")
    new_optimizer: bool = option(False, doc="start a fresh optimizer and schedule")
    previous_output_dir: str = option(
        "",
        allowed="the previous run folder (required when enable = true)",
        doc="the previous timestamped run folder (holding deepx.log and model/)",
    )
    load_model_type: str = option(
        "latest", choices=("best", "latest"), doc="which saved parameters to start from"
    )
    load_model_epoch: int = option(
        -1,
        accept_int_string=True,
        check=lambda v: v >= -1,
        allowed="an integer: -1 (the newest saved epoch) or a saved epoch >= 0",
        doc=(
            'for "latest": the saved epoch to start from (DeepH-pack documents the string "-1"; a'
            " string holding an integer is accepted)"
        ),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainProcessConfig:
    """[process.train]: the training loop."""

    max_epoch: int = option(
        10000, check=at_least(1), allowed="an integer >= 1", resume_ok=True, doc="epochs of training"
    )
    multi_way_jit_num: int = option(
        1,
        check=at_least(1),
        allowed="an integer >= 1",
        resume_ok=True,
        doc="padded shape buckets of the batches (one compilation each)",
    )
    ahead_of_time_compile: bool = option(
        False, resume_ok=True, doc="compile every bucket before the first step"
    )
    compilation_cache_dir: str = option(
        "",
        allowed='"" (<outputs_dir>/.jax_cache), "none" (off) or a folder path',
        stages=(),
        resume_ok=True,
        doc="JAX's persistent compilation cache, so re-runs and resumed jobs skip most of the compile time",
        origin="hamflow",
    )
    # hamflow addition: exponential moving average of the weights (validation, best/latest saves and
    # inference use the average; the optimizer keeps its own weights). 0 = off, DeepH-pack's behaviour.
    ema_decay: float = option(
        0.0,
        check=lambda v: 0.0 <= v < 1.0,
        allowed="a number in [0, 1): 0 switches the moving average off, e.g. 0.999 averages ~1000 steps",
        doc=(
            "exponential moving average of the weights, avg <- w avg + (1 - w) weights after "
            "every step with w = min(ema_decay, (1 + t) / (10 + t)); validation, the saved "
            "best/latest parameters and inference use the average. 0: off, DeepH-pack's "
            "behaviour. See [training](training.md#what-is-trained)"
        ),
        origin="hamflow",
    )
    dataloader: DataloaderConfig = section(DataloaderConfig)
    optimizer: OptimizerConfig = section(OptimizerConfig)
    scheduler: SchedulerConfig = section(
        parser=scheduler_config_from_section, dumper=scheduler_config_to_section
    )
    continued: ContinuedConfig = section(ContinuedConfig)
    drop: DropConfig = section(DropConfig)
    with_plugin: PluginConfig = section(PluginConfig)


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
    text = cfg.process.train.compilation_cache_dir.strip()
    if text == COMPILATION_CACHE_OFF:
        return None
    if not text:
        return Path(cfg.data.outputs_dir) / DEFAULT_COMPILATION_CACHE
    return Path(text)


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
