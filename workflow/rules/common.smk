# Configuration of the workflow: paths, wildcards and resources. The logic (config/config.yaml checked
# against its schema, the train.toml resolved with the run's overrides, each rule's params) is
# hamflow.workflow_support, tested in tests/workflow/test_workflow_support.py.
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

from pathlib import Path

from snakemake.utils import validate

from hamflow import workflow_support as support
from hamflow.config.infer_config import dump_infer_config
from hamflow.config.train_config import dump_train_config

CONFIG_SCHEMA = Path(workflow.current_basedir) / ".." / "schemas" / "config.schema.yaml"
PIPELINE_CONFIG = "config/config.yaml"

support.check_yaml_syntax(PIPELINE_CONFIG)


configfile: PIPELINE_CONFIG


support.check_config(config, CONFIG_SCHEMA)
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


TRAIN_CFG = support.resolve_train_config(config)
support.check_finetune_source(config, RUN, [RUN_DIR, WORK_DIR])

# The resolved train.toml (train_toml with train_overrides, every default filled) and each stage's
# settings (its params: a stage reruns, with what follows, exactly when one of its own keys changes).
RESOLVED_TOML = support.write_resolved_toml(dump_train_config(TRAIN_CFG), "train", DATA)
SETTINGS = support.stage_settings(TRAIN_CFG)
DISCOVER_SETTINGS = SETTINGS["discover"]
PARSE_SETTINGS = SETTINGS["parse"]
GRAPH_SETTINGS = SETTINGS["graph"]
TRAIN_SETTINGS = SETTINGS["train"]
PARSE_QUANTITIES = support.parse_quantities(TRAIN_CFG)

# Resources: graph jobs request data.graph.parallel_num CPUs (non-positive: --cores), training --cores.
GRAPH_THREADS = support.graph_threads(TRAIN_CFG, workflow)
TRAIN_THREADS = support.all_cores(workflow)

shard_arg = support.shard_arg


def shard_names(wildcards):
    """``K-of-N`` for every shard of the discovered structures (read after the discover checkpoint)."""
    manifest = checkpoints.discover.get().output.manifest
    return support.shard_names(manifest, config["shard_size"])


# The train rule's outputs (the finished run), and the fine-tune source checkpoint: an input, so a
# newer source checkpoint retrains this run.
TRAIN_OUTPUTS = support.train_outputs(TRAIN_CFG, RUN_DIR)
FINETUNE_INPUT = support.finetune_input(config)
FINETUNE_ARG = support.finetune_arg(config)


# ---- inference of the held-out structures (infer.smk), and what `all` asks for after training
INFER_PART = support.held_out_part(TRAIN_CFG)
INFER_CHECKPOINT = support.infer_checkpoint(TRAIN_CFG)
INFER_CFG = support.infer_config(TRAIN_CFG, RUN_DIR)
INFER_TOML = support.write_resolved_toml(dump_infer_config(INFER_CFG), "infer", DATA)
INFER_SETTINGS, EVALUATE_SETTINGS = support.infer_settings(
    TRAIN_CFG, INFER_CFG, INFER_PART
)

INFER_TARGETS = support.infer_targets(RUN, INFER_PART)
