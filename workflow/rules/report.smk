rule plot_loss_curves:
    input:
        curves="results/metrics/curves.csv",
    output:
        report(
            "results/figures/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Training",
        ),
    log:
        "results/logs/plot_loss_curves.log",
    benchmark:
        "results/benchmarks/plot_loss_curves.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop plot loss-curves --curves {input.curves} --out {output}"
        " > {log} 2>&1"


# the two figures of the IsoFLOP fit: its profiles, and the laws N_opt(C), D_opt(C)
for figure in ("isoflop", "compute_optimal"):

    rule:
        name:
            f"plot_{figure}"
        input:
            runs="results/metrics/runs.csv",
            fit="results/fits/isoflop.json",
        output:
            report(
                f"results/figures/{figure}.png",
                caption=f"../report/{figure}.rst",
                category="Compute-optimal sizing",
            ),
        log:
            f"results/logs/plot_{figure}.log",
        benchmark:
            f"results/benchmarks/plot_{figure}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            figure=figure.replace("_", "-"),
        shell:
            "python -m scalinglab isoflop plot {params.figure} --runs {input.runs}"
            " --fit {input.fit} --out {output} > {log} 2>&1"
