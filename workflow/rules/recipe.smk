# The recipe and its check (scalinglab.recipe): the compute-optimal fit with its loss law, the
# recipe at RECIPE_COMPUTE (validation.compute_factor x the largest budget any fit used), and the
# validation run configured from it. The run's id and label are known before the recipe exists;
# its spec is written from the recipe by a job, so the shape is chosen when the fits are in.
VALIDATION_SERIES, VALIDATION_LABEL = recipe.validation_ids(STUDY)
VALIDATION_DIR = f"results/runs/validation/{VALIDATION_SERIES}"
RECIPE = recipe.RecipeFiles(STUDY)
# the validation run's spec is written by a job (validation_spec): its resources read that file
VALIDATION_STABLE = training_resources()
VALIDATION_BRANCH = training_resources(label=VALIDATION_LABEL)

if STUDY.validation.enabled:
    HPARAM_TARGETS += [
        "results/fits/validation.json",
        "results/figures/prediction.png",
    ]


rule fit_compute_optimal:
    input:
        runs="results/metrics/runs.csv",
        spec="results/specs/study.json",
    output:
        "results/fits/compute_optimal.json",
    log:
        "results/logs/fit_compute_optimal.log",
    benchmark:
        "results/benchmarks/fit_compute_optimal.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab fit-compute-optimal --runs {input.runs} --config {input.spec}"
        " --out {output} > {log} 2>&1"


rule make_recipe:
    input:
        unpack(RECIPE.inputs),
    output:
        "results/recipe.json",
    log:
        "results/logs/make_recipe.log",
    conda:
        "../envs/scalinglab.yaml"
    params:
        fits="results/fits",
        compute=RECIPE_COMPUTE,
        hparams="fits" if STUDY.hparams.enabled else "config",
    shell:
        "python -m scalinglab plan --fits {params.fits} --compute {params.compute}"
        " --hparams {params.hparams} --out {output} > {log} 2>&1"


rule validation_spec:
    input:
        spec="results/specs/study.json",
        recipe="results/recipe.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        f"results/specs/validation/{VALIDATION_SERIES}.json",
    log:
        "results/logs/validation_spec.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab validation-spec --config {input.spec} --recipe {input.recipe}"
        " --meta {input.meta} --out {output} > {log} 2>&1"


rule train_stable_validation:
    input:
        spec=f"results/specs/validation/{VALIDATION_SERIES}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{VALIDATION_DIR}/stable/metrics.jsonl",
        run=f"{VALIDATION_DIR}/stable/run.json",
        checkpoint=f"{VALIDATION_DIR}/stable/branch-{VALIDATION_LABEL}.pt",
    log:
        "results/logs/train_stable_validation.log",
    benchmark:
        "results/benchmarks/train_stable_validation.tsv"
    conda:
        "../envs/scalinglab.yaml"
    # the last training job of the study: it can have both cores of a small machine
    threads: 2
    resources:
        runtime=VALIDATION_STABLE.runtime,
        mem_mb=VALIDATION_STABLE.mem_mb,
        gpu=VALIDATION_STABLE.gpu,
        gpu_model=VALIDATION_STABLE.gpu_model,
        slurm_extra=VALIDATION_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule decay_branch_validation:
    input:
        spec=f"results/specs/validation/{VALIDATION_SERIES}.json",
        checkpoint=f"{VALIDATION_DIR}/stable/branch-{VALIDATION_LABEL}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{VALIDATION_DIR}/{VALIDATION_LABEL}/metrics.jsonl",
        run=f"{VALIDATION_DIR}/{VALIDATION_LABEL}/run.json",
    log:
        "results/logs/decay_branch_validation.log",
    benchmark:
        "results/benchmarks/decay_branch_validation.tsv"
    conda:
        "../envs/scalinglab.yaml"
    threads: 2
    resources:
        runtime=VALIDATION_BRANCH.runtime,
        mem_mb=VALIDATION_BRANCH.mem_mb,
        gpu=VALIDATION_BRANCH.gpu,
        gpu_model=VALIDATION_BRANCH.gpu_model,
        slurm_extra=VALIDATION_BRANCH.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
        label=VALIDATION_LABEL,
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {params.label}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule fit_validation:
    input:
        recipe="results/recipe.json",
        run=f"{VALIDATION_DIR}/{VALIDATION_LABEL}/run.json",
        fit="results/fits/compute_optimal.json",
    output:
        fit="results/fits/validation.json",
        figure=report(
            "results/figures/prediction.png",
            caption="../report/prediction.rst",
            category="Recipe",
        ),
    log:
        "results/logs/fit_validation.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab validation-fit --recipe {input.recipe} --run {input.run}"
        " --fit {input.fit} --out {output.fit} --figure {output.figure} > {log} 2>&1"
