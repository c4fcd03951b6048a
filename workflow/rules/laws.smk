# The IsoFLOP fits (Method 2 windowed, Method 3 by Huber and by variable projection, the noise
# floor, the compute saved, the leave-largest-out prediction: scalinglab.phases.isoflop_fit)
# and the checkpoint that plans each refinement round from the fit before it.


rule fit_isoflop_round:
    input:
        runs=isoflop.round_file("{round}", "runs.csv"),
        plans=isoflop_round_plans,
        spec="results/specs/study.json",
    output:
        isoflop.round_file("{round}", "fit.json"),
    log:
        "results/logs/fit_isoflop_round/{round}.log",
    benchmark:
        "results/benchmarks/fit_isoflop_round/{round}.tsv"
    wildcard_constraints:
        round=one_of(str(r) for r in range(ISOFLOP_ROUNDS)),
    # short, and it unlocks the next round's training: before any ready training job
    priority: FIRST
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop fit --runs {input.runs} --plans {input.plans}"
        " --config {input.spec} --out {output} > {log} 2>&1"


# the same fit over every round (and the predicted budgets, under `with_predicted`)
use rule fit_isoflop_round as fit_isoflop with:
    input:
        runs="results/metrics/runs.csv",
        plans=["results/study/plan.csv", *isoflop.round_plans(STUDY)],
        spec="results/specs/study.json",
    output:
        "results/fits/isoflop.json",
    log:
        "results/logs/fit_isoflop.log",
    benchmark:
        "results/benchmarks/fit_isoflop.tsv"


checkpoint plan_isoflop_round:
    input:
        unpack(isoflop.previous_round),
        spec="results/specs/study.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        plan=isoflop.round_file("{round}", "plan.csv"),
        # the spec of each series it plans: the round's training rules read them
        specs=directory(isoflop.round_specs_dir("{round}")),
    log:
        "results/logs/plan_isoflop_round/{round}.log",
    benchmark:
        "results/benchmarks/plan_isoflop_round/{round}.tsv"
    wildcard_constraints:
        round=one_of(str(r) for r in range(1, ISOFLOP_ROUNDS + 1)),
    # short, and it unlocks the next round's training: before any ready training job
    priority: FIRST
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab isoflop round-plan --config {input.spec} --fit {input.fit}"
        " --runs {input.runs} --meta {input.meta} --round {wildcards.round}"
        " --out {output.plan} --specs-dir {output.specs} > {log} 2>&1"
