"""The logic behind the Snakemake workflow (``workflow/rules/common.smk``), as plain tested functions.

common.smk keeps the paths, wildcards and resources; it calls these to check ``config/config.yaml``
(YAML syntax, then its JSON schema), resolve the run's train.toml with its overrides, write the
resolved TOMLs every rule reads, and derive each rule's params (the TOML keys that stage depends on,
from the keys' own declarations: :func:`hamflow.config.train_config.stage_keys`). Every problem is a
Snakemake ``WorkflowError`` whose one line names the pipeline-config key, the value and what is
allowed. Sits at the top of the layers, beside the CLI: the rules call only ``hamflow`` commands.
"""

from __future__ import annotations

import hashlib
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError

from hamflow.atomic import atomic_write_text
from hamflow.config.infer_config import InferConfig, parse_infer_config
from hamflow.config.schema import toml_repr
from hamflow.config.train_config import (
    TrainConfig,
    load_train_config,
    resolved_keys,
    stage_keys,
    train_config_to_dict,
    with_overrides,
)
from hamflow.data.discover import read_manifest
from hamflow.errors import HamflowError
from hamflow.graph.structure_graph import required_quantities

#: The workflow stages whose params are TOML keys (infer and evaluate add their derived keys).
RULE_STAGES = ("discover", "parse", "graph", "train")


# ------------------------------------------------------------------------------ the pipeline config


def check_yaml_syntax(path: str | Path) -> None:
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
        problem = " ".join(str(error.problem or error.context or "not valid YAML").split())
        raise WorkflowError(f"{path}{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise WorkflowError(f"{path}: YAML syntax error: {' '.join(str(error).split())}") from None


def check_config(cfg: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise WorkflowError naming the first bad key of the pipeline config, its value and what is allowed."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if not errors:
        return
    error = errors[0]
    key = ".".join(str(part) for part in error.path) or "(top level)"
    allowed = schema.get("properties", {}).get(str(error.path[0]) if error.path else "", {})
    hint = allowed.get("description", "")
    value = f" = {error.instance!r}" if error.path else ""
    raise WorkflowError(
        f"pipeline config [{key}]{value}: {error.message}"
        + (f" (allowed: {' '.join(hint.split())})" if hint else "")
    )


def finetune_overrides(config: Mapping[str, Any]) -> dict[str, Any]:
    """train.toml keys implied by the fine-tune settings (the checkpoint kind to load)."""
    if not config["finetune_from"]:
        return {}
    return {"process.train.continued.load_model_type": config["finetune_checkpoint"]}


def resolve_train_config(config: Mapping[str, Any]) -> TrainConfig:
    """The run's TrainConfig: train_toml with train_overrides (and the fine-tune keys), validated."""
    try:
        cfg = load_train_config(config["train_toml"])
    except HamflowError as error:
        raise WorkflowError(f"pipeline config [train_toml]: {error}") from None
    overrides = {**config["train_overrides"], **finetune_overrides(config)}
    try:
        return with_overrides(cfg, overrides) if overrides else cfg
    except HamflowError as error:
        raise WorkflowError(f"pipeline config [train_overrides]: {error}") from None


def check_finetune_source(config: Mapping[str, Any], run: str, own_dirs: Iterable[str | Path]) -> None:
    """A fine-tune source must not be this run's own directory (the train rule would need itself)."""
    source = config["finetune_from"]
    if not source:
        return
    if Path(source).resolve() in {Path(d).resolve() for d in own_dirs}:
        raise WorkflowError(
            f"pipeline config [finetune_from] = {source!r}: is the directory of run {run!r} itself; "
            "fine-tune into a new run name (--config run=NEW finetune_from=...)"
        )


# --------------------------------------------------------------------------- files and rule params


def write_resolved_toml(text: str, stem: str, data_dir: str | Path) -> str:
    """Write a resolved TOML (``text``) to ``<data_dir>/<stem>-<digest>.toml``; return its path.

    Written when the workflow is loaded, not by a rule: a rule upstream of the discover checkpoint
    would hold back the whole DAG behind it whenever it reruns. The name holds a digest of the content,
    so a run with other settings (even a dry run) never rewrites a file that running jobs read.
    Rules read it through a global (RESOLVED_TOML, INFER_TOML), not through params or input: what
    reruns a stage is the change of one of its own settings (its params), not any change of the file.
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    path = Path(data_dir) / f"{stem}-{digest}.toml"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return str(path)


def setting_params(dotted_keys: Sequence[str], values: Mapping[str, Any]) -> dict[str, str]:
    """A rule's params for the given TOML keys: {"data__graph__graph_type": 'data.graph.graph_type="H"'}.

    One "key=value" param per key: Snakemake records a job's params as the set of their values, so
    each value names its key (two keys changing to each other's values are still a change), a stage
    reruns exactly when one of its own settings changes, and the rerun reason shows only those keys.
    ``values``: {dotted key: value}.
    """
    return {key.replace(".", "__"): f"{key}={toml_repr(values[key])}" for key in dotted_keys}


def stage_settings(cfg: TrainConfig) -> dict[str, dict[str, str]]:
    """{stage: its params} for discover, parse, graph and train: a stage reruns, with what follows,
    exactly when one of its own settings changes (the keys declared with that stage)."""
    values = resolved_keys(cfg)
    return {stage: setting_params(stage_keys(cfg, stage), values) for stage in RULE_STAGES}


def parse_quantities(cfg: TrainConfig) -> str:
    """The parse stage's ``--quantities`` argument: the matrix files the graph stage needs."""
    quantities = required_quantities(cfg.data.graph.graph_type)
    return f"--quantities {','.join(quantities)}" if quantities else ""


def all_cores(workflow: Any) -> int:
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


def graph_threads(cfg: TrainConfig, workflow: Any) -> int:
    """Graph jobs request data.graph.parallel_num CPUs (non-positive: :func:`all_cores`)."""
    parallel = cfg.data.graph.parallel_num
    return parallel if parallel > 0 else all_cores(workflow)


def shard_names(manifest: str | Path, shard_size: int) -> list[str]:
    """``K-of-N`` for every shard of the structures of ``manifest`` (``shard_size`` per shard)."""
    count = len(read_manifest(manifest).ids)
    shards = max(1, math.ceil(count / shard_size))
    return [f"{k}-of-{shards}" for k in range(shards)]


def shard_arg(wildcards: Any) -> str:
    """The ``--shard K/N`` argument of a stage command from the ``K-of-N`` wildcard."""
    return wildcards.shard.replace("-of-", "/")


def train_outputs(cfg: TrainConfig, run_dir: str | Path) -> dict[str, str]:
    """The train rule's outputs in the finished run ``run_dir``: the checkpoint folders the train.toml
    saves (best only when ``data.model_save.best``; latest always), deepx.log, metrics.csv and the
    TRAINING_DONE flag."""
    from snakemake.io import directory

    outputs = {}
    if cfg.data.model_save.best:
        outputs["best"] = directory(f"{run_dir}/model/params/best")
    outputs["latest"] = directory(f"{run_dir}/model/params/latest")
    outputs["log"] = f"{run_dir}/deepx.log"
    outputs["metrics"] = f"{run_dir}/metrics.csv"
    outputs["done"] = f"{run_dir}/TRAINING_DONE"
    return outputs


def finetune_input(config: Mapping[str, Any]) -> str | list:
    """The fine-tune source checkpoint (an input: a newer source reruns this run's training)."""
    if not config["finetune_from"]:
        return []
    return str(Path(config["finetune_from"]) / "model" / "params" / config["finetune_checkpoint"])


def finetune_arg(config: Mapping[str, Any]) -> str:
    """The train command's ``--finetune-from`` argument ("" without a fine-tune source)."""
    source = config["finetune_from"]
    return f"--finetune-from {shlex.quote(source)}" if source else ""


# ---------------------------------------------------------------- inference of the held-out part


def held_out_part(cfg: TrainConfig) -> str | None:
    """The split part to predict and evaluate: "test", else "validate", else None (nothing held out)."""
    loader = cfg.process.train.dataloader
    if loader.dataset_split_json or loader.test_size > 0:
        return "test"
    return "validate" if loader.validate_size > 0 else None


def infer_checkpoint(cfg: TrainConfig) -> str:
    """The checkpoint inference loads: best when it is saved, else latest."""
    return "best" if cfg.data.model_save.best else "latest"


def infer_config(cfg: TrainConfig, run_dir: str | Path) -> InferConfig:
    """The inference TOML of the run's held-out structures: the training data, system and model."""
    data, graph = cfg.data, cfg.data.graph
    resolved = train_config_to_dict(cfg)
    mapping = {
        "system": resolved["system"],
        "data": {
            "inputs_dir": data.inputs_dir,
            "outputs_dir": "results/infer",
            "dft": resolved["data"]["dft"],
            "graph": {
                "dataset_name": f"{graph.dataset_name}-INFER",
                # graphs from the overlap (its shape only when training used Sap)
                "graph_type": "Sap" if graph.graph_type == "Sap" else "S",
                "storage_type": graph.storage_type,
                "parallel_num": graph.parallel_num,
            },
        },
        "model": {"model_dir": f"{run_dir}/model", "load_model_type": infer_checkpoint(cfg)},
        "process": {"infer": {"dataloader": {"batch_size": cfg.process.train.dataloader.batch_size}}},
    }
    try:
        return parse_infer_config(mapping)
    except HamflowError as error:
        raise WorkflowError(f"inference settings derived from train_toml: {error}") from None


def infer_settings(
    cfg: TrainConfig, infer_cfg: InferConfig, part: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The params of the infer and evaluate rules: their TOML keys plus the derived inference keys."""
    values = {
        **resolved_keys(cfg),
        "infer.data.graph.graph_type": infer_cfg.data.graph.graph_type,
        "infer.model.load_model_type": infer_cfg.model.load_model_type,
        "infer.part": part,
    }
    infer = setting_params(
        stage_keys(cfg, "infer")
        + ["infer.data.graph.graph_type", "infer.model.load_model_type", "infer.part"],
        values,
    )
    evaluate = setting_params(stage_keys(cfg, "evaluate") + ["infer.part"], values)
    return infer, evaluate


def infer_targets(run: str, part: str | None) -> list[str]:
    """What `all` asks for after training: the figures (and evaluation), when something is held out."""
    if part is None:
        return []
    return [f"results/eval/{run}", f"results/plots/{run}"]
