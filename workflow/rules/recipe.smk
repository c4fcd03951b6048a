# The recipe and its check (scalinglab.phases.recipe): the compute-optimal fit with its loss law,
# the recipe at validation.compute_factor x the largest budget any fit used, and the validation
# run configured from it. The run's id and label are known before the recipe exists; its spec is
# written from the recipe by a job (validation_spec), and the shared rules of train.smk train it.
from scalinglab.phases import recipe
from scalinglab.phases import group_named

VALIDATION_SERIES, VALIDATION_LABEL = recipe.validation_ids(STUDY)
RECIPE = recipe.RecipeFiles(STUDY)


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
        "python -m scalinglab recipe fit --runs {input.runs} --config {input.spec}"
        " --out {output} > {log} 2>&1"


rule make_recipe:
    input:
        unpack(RECIPE.inputs),
    output:
        "results/recipe.json",
    log:
        "results/logs/make_recipe.log",
    benchmark:
        "results/benchmarks/make_recipe.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        fits="results/fits",
        compute=recipe.validation_compute(STUDY),
        hparams="fits" if STUDY.hparams.enabled else "config",
    shell:
        "python -m scalinglab recipe make --fits {params.fits} --compute {params.compute}"
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
    benchmark:
        "results/benchmarks/validation_spec.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab validation spec --config {input.spec} --recipe {input.recipe}"
        " --meta {input.meta} --out {output} > {log} 2>&1"


rule fit_validation:
    input:
        recipe="results/recipe.json",
        run=f"results/runs/validation/{VALIDATION_SERIES}/{VALIDATION_LABEL}/run.json",
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
    benchmark:
        "results/benchmarks/fit_validation.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab validation fit --recipe {input.recipe} --run {input.run}"
        " --fit {input.fit} --out {output.fit} --figure {output.figure} > {log} 2>&1"
