# Configuration of the workflow: config/config.yaml checked against its schema, the train.toml resolved
# with the run's overrides, and the paths and per-stage settings every rule file uses.
#
# Paths (all relative to the working directory, the repository root by default):
#   results/data/<run>/train-<hash>.toml   the resolved train.toml every stage reads
#   results/data/<run>/infer-<hash>.toml   the inference TOML derived from it
#   results/data/<run>/manifest.json       discovered structure ids (the discover checkpoint)
#   results/data/<run>/dataset_split.json  train/validate/test ids
#   results/data/<run>/parse/K-of-N.json   validation report of shard K (0-based) of N
#   results/data/<run>/graph/K-of-N.h5     graph store of shard K
#   results/data/<run>/graph.h5            the joined graph store
#   results/runs/<run>.partial/            the training run while it is in progress (resumable)
#   results/runs/<run>/                    the finished run (DeepH-pack run-directory layout)
#   results/infer/<run>/, eval/<run>/, plots/<run>/   predictions, errors, figures (infer.smk)
#   results/logs/<run>/                    one log per job

import hashlib
import math
import shlex
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from hamflow.atomic import atomic_write_text
from hamflow.config.infer_config import dump_infer_config, parse_infer_config
from hamflow.config.schema import toml_repr
from hamflow.config.train_config import (
    dump_train_config,
    load_train_config,
    resolved_keys,
    stage_keys,
    train_config_to_dict,
    with_overrides,
)
from hamflow.data.discover import read_manifest
from hamflow.errors import HamflowError
from hamflow.graph.structure_graph import required_quantities

CONFIG_SCHEMA = Path(workflow.current_basedir) / ".." / "schemas" / "config.schema.yaml"
PIPELINE_CONFIG = "config/config.yaml"


def check_yaml_syntax(path):
    """Raise WorkflowError naming the file, line and column of a YAML syntax error (Snakemake's own
    message names neither); a missing file is left to the configfile directive."""
    try:
        text = Path(path).read_text()
    except OSError:
        return
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(
            str(error.problem or error.context or "not valid YAML").split()
        )
        raise WorkflowError(f"{path}{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise WorkflowError(
            f"{path}: YAML syntax error: {' '.join(str(error).split())}"
        ) from None


check_yaml_syntax(PIPELINE_CONFIG)


configfile: PIPELINE_CONFIG


def check_config(cfg, schema_path):
    """Raise WorkflowError naming the first bad key of the pipeline config, its value and what is allowed."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(
        Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path)
    )
    if not errors:
        return
    error = errors[0]
    key = ".".join(str(part) for part in error.path) or "(top level)"
    allowed = schema.get("properties", {}).get(
        str(error.path[0]) if error.path else "", {}
    )
    hint = allowed.get("description", "")
    value = f" = {error.instance!r}" if error.path else ""
    raise WorkflowError(
        f"pipeline config [{key}]{value}: {error.message}"
        + (f" (allowed: {' '.join(hint.split())})" if hint else "")
    )


check_config(config, CONFIG_SCHEMA)
validate(config, str(CONFIG_SCHEMA))  # fills the schema's defaults

RUN = config["run"]
# Paths of the configured run. No {run} wildcard: a workflow run builds one run (so another run's
# folder, a fine-tune source, is an input no rule makes), and Snakemake 9's --until does not follow a
# wildcard-carrying rule that aggregates checkpoint output.
DATA = f"results/data/{RUN}"
RUN_DIR = f"results/runs/{RUN}"
WORK_DIR = f"results/runs/{RUN}.partial"
LOGS = f"results/logs/{RUN}"


wildcard_constraints:
    shard=r"\d+-of-\d+",


def finetune_overrides():
    """train.toml keys implied by the fine-tune settings (the checkpoint kind to load)."""
    if not config["finetune_from"]:
        return {}
    return {"process.train.continued.load_model_type": config["finetune_checkpoint"]}


def resolve_train_config():
    """The run's TrainConfig: train_toml with train_overrides (and the fine-tune keys), validated."""
    try:
        cfg = load_train_config(config["train_toml"])
    except HamflowError as error:
        raise WorkflowError(f"pipeline config [train_toml]: {error}") from None
    overrides = {**config["train_overrides"], **finetune_overrides()}
    try:
        return with_overrides(cfg, overrides) if overrides else cfg
    except HamflowError as error:
        raise WorkflowError(f"pipeline config [train_overrides]: {error}") from None


TRAIN_CFG = resolve_train_config()


def check_finetune_source():
    """A fine-tune source must not be this run's own directory (the train rule would need itself)."""
    source = config["finetune_from"]
    if not source:
        return
    own = {
        Path(RUN_DIR).resolve(),
        Path(WORK_DIR).resolve(),
    }
    if Path(source).resolve() in own:
        raise WorkflowError(
            f"pipeline config [finetune_from] = {source!r}: is the directory of run {RUN!r} itself; "
            "fine-tune into a new run name (--config run=NEW finetune_from=...)"
        )


check_finetune_source()


RESOLVED = resolved_keys(TRAIN_CFG)


def setting_params(dotted_keys, values=None):
    """A rule's params for the given TOML keys: {"data__graph__graph_type": 'data.graph.graph_type="H"'}.

    One "key=value" param per key: Snakemake records a job's params as the set of their values, so
    each value names its key (two keys changing to each other's values are still a change), a stage
    reruns exactly when one of its own settings changes, and the rerun reason shows only those keys.
    ``values``: {dotted key: value} (default: the resolved train.toml).
    """
    values = RESOLVED if values is None else values
    return {
        key.replace(".", "__"): f"{key}={toml_repr(values[key])}" for key in dotted_keys
    }


def write_resolved_toml(text, stem):
    """Write a resolved TOML (``text``) to results/data/<run>/<stem>-<digest>.toml; return its path.

    Written when the workflow is loaded, not by a rule: a rule upstream of the discover checkpoint
    would hold back the whole DAG behind it whenever it reruns. The name holds a digest of the content,
    so a run with other settings (even a dry run) never rewrites a file that running jobs read.
    Rules read it through a global (RESOLVED_TOML, INFER_TOML), not through params or input: what
    reruns a stage is the change of one of its own settings (its params), not any change of the file.
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    path = Path(DATA) / f"{stem}-{digest}.toml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return str(path)


# The resolved train.toml: train_toml with train_overrides, every default filled.
RESOLVED_TOML = write_resolved_toml(dump_train_config(TRAIN_CFG), "train")

# The settings each stage depends on (its params): a stage reruns, with what follows, exactly when one
# of its own settings changes. Which keys those are is declared with each key in the training schema
# (option(stages=..., store=...) in hamflow.config.train_config).
DISCOVER_SETTINGS = setting_params(stage_keys(TRAIN_CFG, "discover"))
PARSE_SETTINGS = setting_params(stage_keys(TRAIN_CFG, "parse"))
GRAPH_SETTINGS = setting_params(stage_keys(TRAIN_CFG, "graph"))
TRAIN_SETTINGS = setting_params(stage_keys(TRAIN_CFG, "train"))

# The matrix files the parse stage requires: those the graph stage needs for this graph_type.
PARSE_QUANTITIES = (
    f"--quantities {','.join(required_quantities(TRAIN_CFG.data.graph.graph_type))}"
    if required_quantities(TRAIN_CFG.data.graph.graph_type)
    else ""
)


def all_cores():
    """Cores of a job that uses all it may: --cores.

    Locally that is the machine (profiles/local: cores: all). On a cluster --cores limits nothing
    else: it is the CPUs such a job requests (profiles/slurm: cores), and every job is started with
    the same value, so the threads a job was submitted with and those it runs with agree.
    """
    try:
        return workflow.cores
    except WorkflowError:
        raise WorkflowError(
            "--cores is not set: on a cluster it is the number of CPUs requested by the jobs that use "
            "all cores (graph jobs when data.graph.parallel_num <= 0, and training); profiles/slurm "
            "sets it (`cores:`), or give --cores N"
        ) from None


# Graph jobs request data.graph.parallel_num CPUs (non-positive: all_cores()); training all_cores().
GRAPH_THREADS = (
    TRAIN_CFG.data.graph.parallel_num
    if TRAIN_CFG.data.graph.parallel_num > 0
    else all_cores()
)
TRAIN_THREADS = all_cores()


def shard_names(wildcards):
    """``K-of-N`` for every shard of the discovered structures (read after the discover checkpoint)."""
    manifest = checkpoints.discover.get().output.manifest
    count = len(read_manifest(manifest).ids)
    shards = max(1, math.ceil(count / config["shard_size"]))
    return [f"{k}-of-{shards}" for k in range(shards)]


def shard_arg(wildcards):
    """The ``--shard K/N`` argument of a stage command from the ``K-of-N`` wildcard."""
    return wildcards.shard.replace("-of-", "/")


def train_outputs():
    """The train rule's outputs: the checkpoints the train.toml saves, the log, metrics, done flag."""
    outputs = {}
    if TRAIN_CFG.data.model_save.best:
        outputs["best"] = directory(f"{RUN_DIR}/model/params/best")
    outputs["latest"] = directory(
        f"{RUN_DIR}/model/params/latest"
    )  # always saved at the end
    outputs["log"] = f"{RUN_DIR}/deepx.log"
    outputs["metrics"] = f"{RUN_DIR}/metrics.csv"
    outputs["done"] = f"{RUN_DIR}/TRAINING_DONE"
    return outputs


def finetune_input(wildcards):
    """The fine-tune source checkpoint (an input: a newer source reruns this run's training)."""
    if not config["finetune_from"]:
        return []
    return str(
        Path(config["finetune_from"])
        / "model"
        / "params"
        / config["finetune_checkpoint"]
    )


def finetune_arg(wildcards):
    source = config["finetune_from"]
    return f"--finetune-from {shlex.quote(source)}" if source else ""


# ---- inference of the held-out structures (infer.smk)


def held_out_part():
    """The split part to predict and evaluate: "test", else "validate", else None (nothing held out)."""
    loader = TRAIN_CFG.process.train.dataloader
    if loader.dataset_split_json or loader.test_size > 0:
        return "test"
    return "validate" if loader.validate_size > 0 else None


INFER_PART = held_out_part()
INFER_CHECKPOINT = "best" if TRAIN_CFG.data.model_save.best else "latest"


def infer_config():
    """The inference TOML of the run's held-out structures: the training data, system and model."""
    data, graph = TRAIN_CFG.data, TRAIN_CFG.data.graph
    mapping = {
        "system": train_config_to_dict(TRAIN_CFG)["system"],
        "data": {
            "inputs_dir": data.inputs_dir,
            "outputs_dir": "results/infer",
            "dft": train_config_to_dict(TRAIN_CFG)["data"]["dft"],
            "graph": {
                "dataset_name": f"{graph.dataset_name}-INFER",
                # graphs from the overlap (its shape only when training used Sap)
                "graph_type": "Sap" if graph.graph_type == "Sap" else "S",
                "storage_type": graph.storage_type,
                "parallel_num": graph.parallel_num,
            },
        },
        "model": {"model_dir": f"{RUN_DIR}/model", "load_model_type": INFER_CHECKPOINT},
        "process": {
            "infer": {
                "dataloader": {
                    "batch_size": TRAIN_CFG.process.train.dataloader.batch_size
                }
            }
        },
    }
    try:
        return parse_infer_config(mapping)
    except HamflowError as error:
        raise WorkflowError(
            f"inference settings derived from train_toml: {error}"
        ) from None


INFER_CFG = infer_config()
INFER_TOML = write_resolved_toml(dump_infer_config(INFER_CFG), "infer")
INFER_VALUES = {
    **RESOLVED,
    "infer.data.graph.graph_type": INFER_CFG.data.graph.graph_type,
    "infer.model.load_model_type": INFER_CFG.model.load_model_type,
    "infer.part": INFER_PART,
}
INFER_SETTINGS = setting_params(
    stage_keys(TRAIN_CFG, "infer")
    + ["infer.data.graph.graph_type", "infer.model.load_model_type", "infer.part"],
    INFER_VALUES,
)
EVALUATE_SETTINGS = setting_params(
    stage_keys(TRAIN_CFG, "evaluate") + ["infer.part"], INFER_VALUES
)


def infer_targets():
    """What `all` asks for after training: the figures (and evaluation), when something is held out."""
    if INFER_PART is None:
        return []
    return [f"results/eval/{RUN}", f"results/plots/{RUN}"]
