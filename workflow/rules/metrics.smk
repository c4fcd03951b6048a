rule collect_metrics:
    input:
        stable=ISOFLOP.stable_run_jsons,
        branches=ISOFLOP.branch_run_jsons,
    output:
        runs="results/metrics/runs.csv",
        curves="results/metrics/curves.csv",
    log:
        "results/logs/collect_metrics.log",
    benchmark:
        "results/benchmarks/collect_metrics.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop collect --stable {input.stable}"
        " --branches {input.branches} --runs-out {output.runs}"
        " --curves-out {output.curves} > {log} 2>&1"
