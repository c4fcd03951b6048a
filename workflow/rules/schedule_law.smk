# The loss under the LR schedule (scalinglab.phases.schedule_law): the Multi-Power Law fitted on
# each IsoFLOP series' stable run and branches, each branch checked by leaving it out. It trains
# nothing; the LR table comes from the specs (the trainer's schedule is a pure function of them).
from scalinglab.phases import schedule_law


rule fit_schedule_law:
    input:
        curves="results/metrics/curves.csv",
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
