# Downstream accuracy beyond loss (scalinglab.training.downstream, LLaMA 3's second step): every IsoFLOP
# decay branch scores itself on a multiple-choice task from val.bin when downstream.enabled, so
# runs.csv carries the accuracies; this rule fits the sigmoid from loss to accuracy that the
# recipe (recipe.smk) uses to predict the validation run's accuracy.
rule fit_downstream:
    input:
        runs="results/metrics/runs.csv",
    output:
        fit="results/fits/downstream.json",
        figure=report(
            "results/figures/downstream.png",
            caption="../report/downstream.rst",
            category="Downstream accuracy",
        ),
    log:
        "results/logs/fit_downstream.log",
    benchmark:
        "results/benchmarks/fit_downstream.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab downstream fit --runs {input.runs} --out {output.fit}"
        " --figure {output.figure} > {log} 2>&1"
