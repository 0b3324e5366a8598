# Data stages: discovery (a checkpoint: the structures it finds decide the shards) and the parse
# stage (read and validate every structure, one job per shard). Both read the resolved train.toml
# (RESOLVED_TOML, common.smk) and rerun when one of their settings (params.settings) changes.


checkpoint discover:
    output:
        manifest=f"{DATA}/manifest.json",
        split=f"{DATA}/dataset_split.json",
    log:
        f"{LOGS}/discover.log",
    params:
        **DISCOVER_SETTINGS,
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
    shell:
        "hamflow discover {RESOLVED_TOML} --out {params.out_dir} > {log} 2>&1"


rule parse:
    input:
        manifest=f"{DATA}/manifest.json",
    output:
        report=f"{DATA}/parse/{{shard}}.json",
    log:
        f"{LOGS}/parse/{{shard}}.log",
    threads: 1
    params:
        **PARSE_SETTINGS,
        inputs_dir=TRAIN_CFG.data.inputs_dir,
        shard=shard_arg,
        quantities=PARSE_QUANTITIES,
        allow_bad="--allow-bad" if TRAIN_CFG.data.dft.on_bad_structure == "skip" else "",
    shell:
        "hamflow validate {params.inputs_dir} --manifest {input.manifest} --shard {params.shard}"
        " --report {output.report} --jobs {threads} {params.quantities} {params.allow_bad} > {log} 2>&1"
