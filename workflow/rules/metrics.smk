rule collect_metrics:
    input:
        stable=stable_run_jsons,
        branches=branch_run_jsons,
    output:
        runs="results/metrics/runs.csv",
        curves="results/metrics/curves.csv",
    log:
        "results/logs/collect_metrics.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab collect-metrics --stable {input.stable}"
        " --branches {input.branches} --runs-out {output.runs}"
        " --curves-out {output.curves} > {log} 2>&1"
