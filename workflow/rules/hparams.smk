# Hyperparameter laws: the LR x batch sweep (DeepSeek LLM) and the critical batch against loss
# (MiniCPM). The run tables and ids come from scalinglab.hparams and scalinglab.critical_batch;
# every run trains through the same train-stable / decay-branch verbs as the IsoFLOP phase.
# HPARAM_TARGETS (this file, wsd_vs_cosine.smk and recipe.smk) goes into `rule all`.
from scalinglab import critical_batch, hparams, phase_runs, recipe

# the compute of the recipe and of the validation run (recipe.smk), known before any training
RECIPE_COMPUTE = recipe.validation_compute(STUDY)
HP = phase_runs.PhaseFiles.build(
    STUDY,
    hparams.plan(STUDY),
    hparams.series_spec,
    "results/runs/hparams",
    series_wildcard="hp",
    label_wildcard="hplabel",
)
CB = phase_runs.PhaseFiles.build(
    STUDY,
    critical_batch.plan(STUDY),
    critical_batch.series_spec,
    "results/runs/critical_batch",
    series_wildcard="cb",
)
HP_DIR = HP.runs_dir
CB_DIR = CB.runs_dir
HP_STABLE = training_resources(HP.spec)
HP_BRANCH = training_resources(HP.spec, label_wildcard=HP.label_wildcard)
CB_STABLE = training_resources(CB.spec)

HPARAM_TARGETS = ["results/fits/compute_optimal.json", "results/recipe.json"]
if STUDY.hparams.enabled or STUDY.critical_batch.enabled or STUDY.wsd_vs_cosine.enabled:
    HPARAM_TARGETS.append("results/hparams/plan.csv")
if STUDY.hparams.enabled:
    HPARAM_TARGETS += ["results/fits/hparams.json", "results/figures/hparams.png"]
if STUDY.critical_batch.enabled:
    HPARAM_TARGETS += [
        "results/fits/critical_batch.json",
        "results/figures/critical_batch.png",
    ]


rule plan_hparams:
    input:
        spec="results/specs/study.json",
    output:
        "results/hparams/plan.csv",
    log:
        "results/logs/plan_hparams.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab hparams-plan --config {input.spec} --out {output} > {log} 2>&1"


rule write_hparams_spec:
    output:
        "results/specs/hparams/{hp}.json",
    log:
        "results/logs/write_spec/hparams/{hp}.log",
    wildcard_constraints:
        hp=phase_runs.one_of(HP.series),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=HP.spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule train_stable_hparams:
    input:
        spec="results/specs/hparams/{hp}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{HP_DIR}/{{hp}}/stable/metrics.jsonl",
        run=f"{HP_DIR}/{{hp}}/stable/run.json",
        checkpoints=expand(
            f"{HP_DIR}/{{{{hp}}}}/stable/branch-{{label}}.pt", label=HP.labels
        ),
    log:
        "results/logs/train_stable_hparams/{hp}.log",
    benchmark:
        "results/benchmarks/train_stable_hparams/{hp}.tsv"
    wildcard_constraints:
        hp=phase_runs.one_of(HP.series),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=HP_STABLE.runtime,
        mem_mb=HP_STABLE.mem_mb,
        gpu=HP_STABLE.gpu,
        gpu_model=HP_STABLE.gpu_model,
        slurm_extra=HP_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule decay_branch_hparams:
    input:
        spec="results/specs/hparams/{hp}.json",
        checkpoint=f"{HP_DIR}/{{hp}}/stable/branch-{{hplabel}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{HP_DIR}/{{hp}}/{{hplabel}}/metrics.jsonl",
        run=f"{HP_DIR}/{{hp}}/{{hplabel}}/run.json",
    log:
        "results/logs/decay_branch_hparams/{hp}_{hplabel}.log",
    benchmark:
        "results/benchmarks/decay_branch_hparams/{hp}_{hplabel}.tsv"
    wildcard_constraints:
        hp=phase_runs.one_of(HP.series),
        hplabel=phase_runs.one_of(HP.labels),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=HP_BRANCH.runtime,
        mem_mb=HP_BRANCH.mem_mb,
        gpu=HP_BRANCH.gpu,
        gpu_model=HP_BRANCH.gpu_model,
        slurm_extra=HP_BRANCH.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {wildcards.hplabel}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule fit_hparams:
    input:
        runs=HP.branch_run_jsons,
    output:
        fit="results/fits/hparams.json",
        runs="results/hparams/runs.csv",
        figure=report(
            "results/figures/hparams.png",
            caption="../report/hparams.rst",
            category="Hyperparameter laws",
        ),
    log:
        "results/logs/fit_hparams.log",
    benchmark:
        "results/benchmarks/fit_hparams.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        near_optimal=STUDY.hparams.near_optimal,
        target=RECIPE_COMPUTE,
    shell:
        "python -m scalinglab hparams-fit --runs {input.runs}"
        " --near-optimal {params.near_optimal} --target-compute {params.target}"
        " --out {output.fit} --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"


rule write_critical_batch_spec:
    output:
        "results/specs/critical_batch/{cb}.json",
    log:
        "results/logs/write_spec/critical_batch/{cb}.log",
    wildcard_constraints:
        cb=phase_runs.one_of(CB.series),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=CB.spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule train_critical_batch:
    input:
        spec="results/specs/critical_batch/{cb}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{CB_DIR}/{{cb}}/stable/metrics.jsonl",
        run=f"{CB_DIR}/{{cb}}/stable/run.json",
    log:
        "results/logs/train_critical_batch/{cb}.log",
    benchmark:
        "results/benchmarks/train_critical_batch/{cb}.tsv"
    wildcard_constraints:
        cb=phase_runs.one_of(CB.series),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=CB_STABLE.runtime,
        mem_mb=CB_STABLE.mem_mb,
        gpu=CB_STABLE.gpu,
        gpu_model=CB_STABLE.gpu_model,
        slurm_extra=CB_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule fit_critical_batch:
    input:
        runs=CB.stable_run_jsons,
    output:
        fit="results/fits/critical_batch.json",
        figure=report(
            "results/figures/critical_batch.png",
            caption="../report/critical_batch.rst",
            category="Hyperparameter laws",
        ),
    log:
        "results/logs/fit_critical_batch.log",
    benchmark:
        "results/benchmarks/fit_critical_batch.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        losses=" ".join(map(str, STUDY.critical_batch.losses)),
        n_losses=STUDY.critical_batch.n_losses,
    shell:
        "python -m scalinglab critical-batch-fit --runs {input.runs} --losses {params.losses}"
        " --n-losses {params.n_losses} --out {output.fit} --figure {output.figure}"
        " > {log} 2>&1"
