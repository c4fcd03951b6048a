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


# the two figures of the IsoFLOP fit: its profiles (and each budget's interval in words, which
# the caption includes), and the laws N_opt(C), D_opt(C) of Methods 2 and 3
rule plot_isoflop:
    input:
        runs="results/metrics/runs.csv",
        fit="results/fits/isoflop.json",
    output:
        figure=report(
            "results/figures/isoflop.png",
            caption="../report/isoflop.rst",
            category="Compute-optimal sizing",
        ),
        words="results/figures/isoflop_intervals.rst",
    log:
        "results/logs/plot_isoflop.log",
    benchmark:
        "results/benchmarks/plot_isoflop.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop plot isoflop --runs {input.runs} --fit {input.fit}"
        " --out {output.figure} --words-out {output.words} > {log} 2>&1"


rule plot_compute_optimal:
    input:
        fit="results/fits/isoflop.json",
    output:
        report(
            "results/figures/compute_optimal.png",
            caption="../report/compute_optimal.rst",
            category="Compute-optimal sizing",
        ),
    log:
        "results/logs/plot_compute_optimal.log",
    benchmark:
        "results/benchmarks/plot_compute_optimal.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop plot compute-optimal --fit {input.fit} --out {output}"
        " > {log} 2>&1"
