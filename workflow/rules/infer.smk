# After training: predict the held-out structures of the run (the test part of its split, or the
# validate part when there is no test part) with its best checkpoint (latest when best is not saved),
# compare with their DFT matrices, and plot (docs/inference.md):
#   results/infer/<run>/   hamflow infer:    dft/<sid>/hamiltonian_pred.h5, deepx.log
#   results/eval/<run>/    hamflow evaluate: metrics.json, per-structure/element/shell tables, bands
#   results/plots/<run>/   hamflow plot:     training curves, parity, element-pair MAE (in the report)


rule infer:
    input:
        checkpoint=getattr(rules.train.output, INFER_CHECKPOINT),
        split=f"{DATA}/dataset_split.json",
    output:
        directory(f"results/infer/{RUN}"),
    log:
        f"{LOGS}/infer.log",
    params:
        **INFER_SETTINGS,
        part=INFER_PART,
    shell:
        "hamflow infer {INFER_TOML} --run-dir {output} --split {input.split} --part {params.part}"
        " > {log} 2>&1"


rule evaluate:
    input:
        predictions=rules.infer.output[0],
        split=f"{DATA}/dataset_split.json",
    output:
        directory(f"results/eval/{RUN}"),
    log:
        f"{LOGS}/evaluate.log",
    threads: 1
    params:
        **EVALUATE_SETTINGS,
        dft=TRAIN_CFG.data.inputs_dir,
        depth=TRAIN_CFG.data.dft.data_dir_depth,
        target=TRAIN_CFG.model.target_type,
        gauge="--gauge" if TRAIN_CFG.model.advanced.standardize_gauge else "",
        part=INFER_PART,
    shell:
        "hamflow evaluate --dft {params.dft} --pred {input.predictions} --out {output}"
        " --depth {params.depth} --target {params.target} {params.gauge} --split {input.split}"
        " --part {params.part} --jobs {threads} > {log} 2>&1"


rule plot:
    input:
        metrics=rules.train.output.metrics,
        evaluation=rules.evaluate.output[0],
    output:
        report(
            directory(f"results/plots/{RUN}"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/plot.log",
    params:
        run_dir=lambda wildcards, input: Path(input.metrics).parent,
    shell:
        "hamflow plot {params.run_dir} {input.evaluation} --out {output} > {log} 2>&1"
