# hamflow: DeepH-format DFT data -> trained E(3)-equivariant Hamiltonian network (docs/workflow.md).
#
#   snakemake --profile profiles/local            this machine, every core
#   snakemake --profile profiles/slurm            a SLURM cluster (data on CPU nodes, training on a GPU)
#
# Stages: discover (checkpoint) -> parse (per shard) -> graph_shard (per shard)
#         -> graph (join) -> train; each one is a `hamflow <stage>` command.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/train.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        expand(rules.train.output, run=RUN),
