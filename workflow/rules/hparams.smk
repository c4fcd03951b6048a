# Hyperparameter laws: the LR x batch sweep (DeepSeek LLM) and the critical batch against loss
# (MiniCPM), phases of scalinglab.phases.sweeps. Their runs train through the shared rules of
# train.smk; this file plans them and fits what they measured.
from scalinglab.phases import recipe
from scalinglab.phases import group_named

HP = group_named(TRAINING_GROUPS, "hparams")
CB = group_named(TRAINING_GROUPS, "critical_batch")


rule plan_hparams:
    input:
        spec="results/specs/study.json",
    output:
        "results/hparams/plan.csv",
    log:
        "results/logs/plan_hparams.log",
    benchmark:
        "results/benchmarks/plan_hparams.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab hparams plan --config {input.spec} --out {output} > {log} 2>&1"


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
        target=recipe.validation_compute(STUDY),
    shell:
        "python -m scalinglab hparams fit --runs {input.runs}"
        " --near-optimal {params.near_optimal} --target-compute {params.target}"
        " --out {output.fit} --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"


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
        "python -m scalinglab critical-batch fit --runs {input.runs} --losses {params.losses}"
        " --n-losses {params.n_losses} --out {output.fit} --figure {output.figure}"
        " > {log} 2>&1"
