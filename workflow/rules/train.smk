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
        runtime=train_runtime,
        mem_mb=train_mem_mb,
        gpu=train_gpus,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "{TRAIN_LAUNCHER} train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


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
        runtime=train_runtime,
        mem_mb=train_mem_mb,
        gpu=train_gpus,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "{TRAIN_LAUNCHER} decay-branch --spec {input.spec} --label {wildcards.label}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
