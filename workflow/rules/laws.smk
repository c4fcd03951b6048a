rule fit_isoflop:
    input:
        "results/metrics/runs.csv",
    output:
        "results/fits/isoflop.json",
    log:
        "results/logs/fit_isoflop.log",
    benchmark:
        "results/benchmarks/fit_isoflop.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab fit isoflop --input {input} --out {output} > {log} 2>&1"
