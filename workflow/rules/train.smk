# Training: one job (a GPU job on a cluster) that trains in results/runs/<run>.partial/ and, once
# training has finished, moves the run to results/runs/<run>/.
#
# Why the detour (docs/workflow.md, "Time limits and resumption"): Snakemake deletes the declared
# outputs of a failed job, and deletes existing outputs again before it reruns a job. A training job
# cut off by its time limit (SIGTERM first: hamflow train saves a latest checkpoint and exits non-zero)
# must keep that checkpoint for the rerun. So the run is written where no rule declares an output;
# the next run of the workflow starts `hamflow train` on the same folder, which resumes from its
# newest checkpoint (or starts from scratch when the configuration changed). Only a finished run
# becomes the rule's outputs: best and latest checkpoints, deepx.log, metrics.csv, TRAINING_DONE.


rule train:
    input:
        graph=f"{DATA}/graph.h5",
        split=f"{DATA}/dataset_split.json",
        finetune=FINETUNE_INPUT,
    output:
        **TRAIN_OUTPUTS,
    log:
        f"{LOGS}/train.log",
    threads: TRAIN_THREADS
    params:
        **TRAIN_SETTINGS,
        finetune=FINETUNE_ARG,
        work=WORK_DIR,
        final=lambda wildcards, output: Path(output.log).parent,  # RUN_DIR
    shell:
        """
        hamflow train {RESOLVED_TOML} --run-dir {params.work} --graph {input.graph} \
            --split {input.split} {params.finetune} >{log} 2>&1
        # publish the finished run: replace what an earlier run left in {params.final}/
        shopt -s dotglob
        for entry in {params.work}/*; do
            rm -rf "{params.final}/${{entry##*/}}"
            mv "$entry" {params.final}/
        done
        rmdir {params.work}
        """
