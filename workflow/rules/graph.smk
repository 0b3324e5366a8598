# Graph stage: one job per shard (data.graph.parallel_num worker processes each), then one join into
# the graph store that training reads. A change of a graph setting reruns these jobs and training,
# not discovery or parsing.


rule graph_shard:
    input:
        manifest=f"{DATA}/manifest.json",
        report=f"{DATA}/parse/{{shard}}.json",
    output:
        f"{DATA}/graph/{{shard}}.h5",
    log:
        f"{LOGS}/graph/{{shard}}.log",
    threads: GRAPH_THREADS
    params:
        **GRAPH_SETTINGS,
        shard=shard_arg,
    shell:
        "hamflow graph {RESOLVED_TOML} --ids-from {input.manifest} --reports {input.report}"
        " --shard {params.shard} --set data.graph.parallel_num={threads} --out {output} > {log} 2>&1"


rule graph:
    input:
        lambda wildcards: expand(
            f"{DATA}/graph/{{shard}}.h5", shard=shard_names(wildcards)
        ),
    output:
        f"{DATA}/graph.h5",
    log:
        f"{LOGS}/graph.log",
    shell:
        "hamflow graph {RESOLVED_TOML} --join {input} --out {output} > {log} 2>&1"
