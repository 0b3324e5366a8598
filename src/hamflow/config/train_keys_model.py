"""The model and training sections of the training TOML: ``[model]`` (``[model.advanced]``) and
``[process.train]`` with its sub-tables (dataloader, optimizer, continued, drop, with_plugin; the
scheduler is hamflow.config.scheduler_config), one ``option(...)`` per key with its doc, type,
default, allowed values and roles (hamflow.config.schema). Assembled into the whole TOML by
:class:`hamflow.config.train_config.TrainConfig`; lengths in Angstrom, learning rates dimensionless.
"""

from __future__ import annotations

import dataclasses

from hamflow.config.scheduler_config import (
    SchedulerConfig,
    scheduler_config_from_section,
    scheduler_config_to_section,
)
from hamflow.config.schema import (
    REQUIRED,
    above,
    at_least,
    option,
    section,
)
from hamflow.config.train_keys_data import (
    NEWER_LOSS_TYPES,
    NEWER_NET_TYPES,
    NEWER_TARGET_TYPES,
    SPLIT_STAGES,
    SUPERVISED_LOSS_TYPES,
    TRAINABLE_GRAPH_TYPES,
    UNSUPERVISED_LOSS_TYPES,
)
from hamflow.graph.irreps import (
    NET_TYPE_ALIASES,
    NET_TYPES,
)


def _betas_ok(value: tuple[float, ...]) -> bool:
    return all(0.0 < beta < 1.0 for beta in value)


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
    spin_orbit: bool = option(
        True,
        doc="spinful data: the readout H0 (x) 1 + i T . sigma rotates spin with the orbitals and is "
        "time-reversal even (spin-orbit-coupled, non-magnetic data); false treats spin as invariant "
        "(uu, ud, du, dd four orbital blocks: collinear-spin data). No effect on spinless data",
        origin="hamflow",
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
        False,
        resume_ok=True,
        doc="compile every bucket's programs at start-up, in background threads (training starts with"
        " the first batch's program)",
    )
    compilation_cache_dir: str = option(
        "",
        allowed='"" (<outputs_dir>/.jax_cache), "none" (off) or a folder path',
        stages=(),
        resume_ok=True,
        doc=(
            "JAX's persistent compilation cache, so re-runs and resumed jobs skip most of the compile time;"
            " with ahead_of_time_compile its programs/ folder keeps the compiled programs instead, which a"
            " rerun with the same model, normaliser and shapes loads instead of tracing"
        ),
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
