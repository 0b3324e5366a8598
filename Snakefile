# hamflow: DeepH-format DFT data -> trained E(3)-equivariant Hamiltonian network (docs/workflow.md).
#
#   snakemake --profile profiles/local            this machine, every core
#   snakemake --profile profiles/slurm            a SLURM cluster (data on CPU nodes, training on a GPU)
#
# Stages: discover (checkpoint) -> parse (per shard) -> graph_shard (per shard) -> graph (join)
#         -> train -> infer -> evaluate -> plot; each one is a `hamflow <stage>` command.
#   snakemake --report report.html                 the figures of the run, with captions

from snakemake.utils import min_version

min_version("9.27")  # the snakemake floor of pyproject.toml (tests/test_packaging.py)


# config/config.yaml is loaded by workflow/rules/common.smk (which names the file and line of a YAML
# syntax error first), then checked against workflow/schemas/config.schema.yaml


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/graph.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        rules.train.output,
        infer_targets(),
