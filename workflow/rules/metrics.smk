# The IsoFLOP runs as tables: the first grid and each refinement round's checkpoint plan
# (scalinglab.phases.isoflop_rounds). Round k's tables feed the fit that plans round k + 1;
# results/metrics/ holds every round.


rule collect_isoflop_round:
    input:
        stable=isoflop_round_runs("stable"),
        branches=isoflop_round_runs("branches"),
        predicted=[],
    output:
        runs=isoflop.round_file("{round}", "runs.csv"),
        curves=isoflop.round_file("{round}", "curves.csv"),
    log:
        "results/logs/collect_isoflop_round/{round}.log",
    benchmark:
        "results/benchmarks/collect_isoflop_round/{round}.tsv"
    wildcard_constraints:
        # round 0 always: the schedule law fits the first grid's curves
        round=one_of(str(r) for r in range(max(ISOFLOP_ROUNDS, 1))),
    # short, and it unlocks the next round's training: before any ready training job
    priority: FIRST
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop collect --stable {input.stable}"
        " --branches {input.branches} --runs-out {output.runs}"
        " --curves-out {output.curves} --predicted {input.predicted} > {log} 2>&1"


# every round, and the budgets that train nothing (isoflop.predicted_budgets) from the schedule law
use rule collect_isoflop_round as collect_metrics with:
    input:
        stable=isoflop_all_runs("stable"),
        branches=isoflop_all_runs("branches"),
        predicted=PREDICTED_RUNS,
    output:
        runs="results/metrics/runs.csv",
        curves="results/metrics/curves.csv",
    log:
        "results/logs/collect_metrics.log",
    benchmark:
        "results/benchmarks/collect_metrics.tsv"
