# muP: the coordinate check and the learning-rate transfer phases across width
# (scalinglab.phases.lr_transfer) and depth (scalinglab.phases.depth_transfer, muP against
# CompleteP). Their runs train through the shared rules of train.smk (one WSD branch per run).
from scalinglab.phases import group_named

LR_TRANSFER = group_named(TRAINING_GROUPS, "lr_transfer")
DEPTH_TRANSFER = group_named(TRAINING_GROUPS, "depth_transfer")


rule coord_check:
    input:
        spec="results/specs/study.json",
        train=f"{TOKENS_DIR}/train.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        csv="results/muP/coord_check.csv",
        verdict="results/muP/coord_check.json",
        figure=report(
            "results/figures/coord_check.png",
            caption="../report/coord_check.rst",
            category="muP",
        ),
    log:
        "results/logs/coord_check.log",
    benchmark:
        "results/benchmarks/coord_check.tsv"
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    params:
        data_dir=subpath(input.meta, parent=True),
    shell:
        "python -m scalinglab coord-check --config {input.spec}"
        " --data-dir {params.data_dir} --threads {threads} --csv-out {output.csv}"
        " --json-out {output.verdict} --figure-out {output.figure} > {log} 2>&1"


rule plan_lr_transfer:
    input:
        spec="results/specs/study.json",
    output:
        "results/muP/lr_transfer_plan.csv",
    log:
        "results/logs/plan_lr_transfer.log",
    benchmark:
        "results/benchmarks/plan_lr_transfer.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab lr-transfer plan --config {input.spec} --out {output}"
        " > {log} 2>&1"


rule fit_lr_transfer:
    input:
        runs=LR_TRANSFER.branch_run_jsons,
    output:
        fit="results/fits/lr_transfer.json",
        runs="results/muP/lr_transfer_runs.csv",
        figure=report(
            "results/figures/lr_transfer.png",
            caption="../report/lr_transfer.rst",
            category="muP",
        ),
    log:
        "results/logs/fit_lr_transfer.log",
    benchmark:
        "results/benchmarks/fit_lr_transfer.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab lr-transfer fit --runs {input.runs} --out {output.fit}"
        " --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"


rule plan_depth_transfer:
    input:
        spec="results/specs/study.json",
    output:
        "results/muP/depth_transfer_plan.csv",
    log:
        "results/logs/plan_depth_transfer.log",
    benchmark:
        "results/benchmarks/plan_depth_transfer.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab depth-transfer plan --config {input.spec} --out {output}"
        " > {log} 2>&1"


rule fit_depth_transfer:
    input:
        runs=DEPTH_TRANSFER.branch_run_jsons,
    output:
        fit=report(
            "results/fits/depth_transfer.json",
            caption="../report/depth_transfer_fit.rst",
            category="muP",
        ),
        runs="results/muP/depth_transfer_runs.csv",
        figure=report(
            "results/figures/depth_transfer.png",
            caption="../report/depth_transfer.rst",
            category="muP",
        ),
    log:
        "results/logs/fit_depth_transfer.log",
    benchmark:
        "results/benchmarks/fit_depth_transfer.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab depth-transfer fit --runs {input.runs} --out {output.fit}"
        " --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"
