# muP: the coordinate check and the learning-rate transfer phase. The run table and its ids come
# from scalinglab.lr_transfer; each run is trained by the same train-stable / decay-branch verbs
# as the IsoFLOP phase (one WSD branch per run).
from scalinglab import lr_transfer

LR_TRANSFER = lr_transfer.PhaseFiles(
    STUDY, lr_transfer.plan(STUDY), "results/runs/lr_transfer"
)
LR_TRANSFER_DIR = LR_TRANSFER.runs_dir
LR_TRANSFER_LABEL = LR_TRANSFER.label
LR_TRANSFER_STABLE = training_resources(LR_TRANSFER.spec)
LR_TRANSFER_BRANCH = training_resources(LR_TRANSFER.spec, label=LR_TRANSFER_LABEL)

MUP_TARGETS = [
    "results/muP/coord_check.csv",
    "results/muP/coord_check.json",
    "results/figures/coord_check.png",
]
if STUDY.lr_transfer.enabled:
    MUP_TARGETS += [
        "results/muP/lr_transfer_plan.csv",
        "results/fits/lr_transfer.json",
        "results/figures/lr_transfer.png",
    ]


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
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab lr-transfer-plan --config {input.spec} --out {output}"
        " > {log} 2>&1"


rule write_lr_transfer_spec:
    output:
        "results/specs/lr_transfer/{lrt}.json",
    log:
        "results/logs/write_spec/lr_transfer/{lrt}.log",
    wildcard_constraints:
        lrt=_one_of(LR_TRANSFER.runs),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=LR_TRANSFER.spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule train_stable_lr_transfer:
    input:
        spec="results/specs/lr_transfer/{lrt}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{LR_TRANSFER_DIR}/{{lrt}}/stable/metrics.jsonl",
        run=f"{LR_TRANSFER_DIR}/{{lrt}}/stable/run.json",
        checkpoint=f"{LR_TRANSFER_DIR}/{{lrt}}/stable/branch-{LR_TRANSFER_LABEL}.pt",
    log:
        "results/logs/train_stable_lr_transfer/{lrt}.log",
    benchmark:
        "results/benchmarks/train_stable_lr_transfer/{lrt}.tsv"
    wildcard_constraints:
        lrt=_one_of(LR_TRANSFER.runs),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=LR_TRANSFER_STABLE.runtime,
        mem_mb=LR_TRANSFER_STABLE.mem_mb,
        gpu=LR_TRANSFER_STABLE.gpu,
        gpu_model=LR_TRANSFER_STABLE.gpu_model,
        slurm_extra=LR_TRANSFER_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule decay_branch_lr_transfer:
    input:
        spec="results/specs/lr_transfer/{lrt}.json",
        checkpoint=f"{LR_TRANSFER_DIR}/{{lrt}}/stable/branch-{LR_TRANSFER_LABEL}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{LR_TRANSFER_DIR}/{{lrt}}/{LR_TRANSFER_LABEL}/metrics.jsonl",
        run=f"{LR_TRANSFER_DIR}/{{lrt}}/{LR_TRANSFER_LABEL}/run.json",
    log:
        "results/logs/decay_branch_lr_transfer/{lrt}.log",
    benchmark:
        "results/benchmarks/decay_branch_lr_transfer/{lrt}.tsv"
    wildcard_constraints:
        lrt=_one_of(LR_TRANSFER.runs),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=LR_TRANSFER_BRANCH.runtime,
        mem_mb=LR_TRANSFER_BRANCH.mem_mb,
        gpu=LR_TRANSFER_BRANCH.gpu,
        gpu_model=LR_TRANSFER_BRANCH.gpu_model,
        slurm_extra=LR_TRANSFER_BRANCH.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
        label=LR_TRANSFER_LABEL,
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {params.label}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule fit_lr_transfer:
    input:
        runs=LR_TRANSFER.run_jsons,
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
        "python -m scalinglab lr-transfer --runs {input.runs} --out {output.fit}"
        " --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"
