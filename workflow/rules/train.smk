rule train_stable:
    input:
        spec="results/specs/series/{series}.json",
        # the plan only gates training (epoch check); its timestamp must not retrain anything
        plan=ancient("results/study/plan.csv"),
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{RUNS_DIR}/{{series}}/stable/metrics.jsonl",
        run=f"{RUNS_DIR}/{{series}}/stable/run.json",
        checkpoints=expand(
            f"{RUNS_DIR}/{{{{series}}}}/stable/branch-{{label}}.pt",
            label=ISOFLOP_LABELS,
        ),
    log:
        "results/logs/train_stable/{series}.log",
    benchmark:
        "results/benchmarks/train_stable/{series}.tsv"
    conda:
        "../envs/scalinglab.yaml"
    threads: train_threads
    resources:
        runtime=TRAIN_STABLE.runtime,
        mem_mb=TRAIN_STABLE.mem_mb,
        gpu=TRAIN_STABLE.gpu,
        gpu_model=TRAIN_STABLE.gpu_model,
        slurm_extra=TRAIN_STABLE.slurm_extra,
        processes=TRAIN_STABLE.processes,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} --processes {resources.processes} > {log} 2>&1"


rule decay_branch:
    input:
        spec="results/specs/series/{series}.json",
        checkpoint=f"{RUNS_DIR}/{{series}}/stable/branch-{{label}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{RUNS_DIR}/{{series}}/{{label}}/metrics.jsonl",
        run=f"{RUNS_DIR}/{{series}}/{{label}}/run.json",
    log:
        "results/logs/decay_branch/{series}_{label}.log",
    benchmark:
        "results/benchmarks/decay_branch/{series}_{label}.tsv"
    conda:
        "../envs/scalinglab.yaml"
    threads: train_threads
    resources:
        runtime=DECAY_BRANCH.runtime,
        mem_mb=DECAY_BRANCH.mem_mb,
        gpu=DECAY_BRANCH.gpu,
        gpu_model=DECAY_BRANCH.gpu_model,
        slurm_extra=DECAY_BRANCH.slurm_extra,
        processes=DECAY_BRANCH.processes,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {wildcards.label}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} --processes {resources.processes} > {log} 2>&1"
