"""The data-side sections of the training TOML: ``[system]`` and ``[data]`` (``[data.dft]``,
``[data.graph]``, ``[data.model_save]``), one ``option(...)`` per key with its doc, type, default,
allowed values and roles (hamflow.config.schema). Assembled into the whole TOML by
:class:`hamflow.config.train_config.TrainConfig`; lengths in Angstrom.
"""

from __future__ import annotations

import dataclasses

from hamflow.config.device import DEVICE_TYPES
from hamflow.config.logging_setup import LOG_LEVELS
from hamflow.config.precision import FLOAT_TYPES
from hamflow.config.schema import (
    REQUIRED,
    STAGES,
    at_least,
    file_name_ok,
    non_empty,
    option,
    section,
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
