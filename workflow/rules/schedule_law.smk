# The loss under the LR schedule (scalinglab.phases.schedule_law): the Multi-Power Law fitted on
# each IsoFLOP series' stable run and branches, each branch checked by leaving it out. It trains
# nothing; the LR table comes from the specs (the trainer's schedule is a pure function of them).
# With isoflop.predicted_budgets, the fitted laws predict those budgets' branches for runs.csv.
from scalinglab.phases import schedule_law


rule fit_schedule_law:
    input:
        # the first grid's curves, the series fitted; not metrics/curves.csv, whose runs.csv
        # takes the predicted budgets from this fit
        curves=isoflop.round_file(0, "curves.csv"),
        specs=[ISOFLOP.spec_file(sid) for sid in ISOFLOP.series],
    output:
        fit=schedule_law.FIT,
        lr=schedule_law.LR_TABLE,
        figure=report(
            schedule_law.FIGURE,
            caption="../report/schedule_law.rst",
            category="Schedules",
        ),
    log:
        "results/logs/fit_schedule_law.log",
    benchmark:
        "results/benchmarks/fit_schedule_law.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab schedule-law fit --curves {input.curves} --specs {input.specs}"
        " --out {output.fit} --lr-out {output.lr} --figure {output.figure} > {log} 2>&1"


rule predict_budgets:
    input:
        fit=schedule_law.FIT,
        specs=[ISOFLOP.spec_file(sid) for sid in ISOFLOP.series],
        spec="results/specs/study.json",
    output:
        schedule_law.PREDICTED,
    log:
        "results/logs/predict_budgets.log",
    benchmark:
        "results/benchmarks/predict_budgets.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab schedule-law predict --fit {input.fit} --specs {input.specs}"
        " --config {input.spec} --out {output} > {log} 2>&1"
