# WSD with rewind-decay branches against cosine runs tuned to each budget, with decay-fraction
# and decay-shape ablations (scalinglab.phases.sweeps). Per size: one WSD series (stable run + a
# branch per budget x fraction x shape) and one cosine series (a run per budget, each trained
# from the initialisation by its decay job), both trained by the shared rules of train.smk.
from scalinglab.phases import group_named

WSD = group_named(TRAINING_GROUPS, "wsd")
COS = group_named(TRAINING_GROUPS, "cosine")


rule fit_wsd_vs_cosine:
    input:
        spec="results/specs/study.json",
        stable=WSD.stable_run_jsons,
        wsd=WSD.branch_run_jsons,
        cosine=COS.branch_run_jsons,
    output:
        fit="results/fits/wsd_vs_cosine.json",
        figure=report(
            "results/figures/wsd_vs_cosine.png",
            caption="../report/wsd_vs_cosine.rst",
            category="Schedules",
        ),
    log:
        "results/logs/fit_wsd_vs_cosine.log",
    benchmark:
        "results/benchmarks/fit_wsd_vs_cosine.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab wsd-vs-cosine fit --config {input.spec}"
        " --runs {input.stable} {input.wsd} {input.cosine} --out {output.fit}"
        " --figure {output.figure} > {log} 2>&1"
