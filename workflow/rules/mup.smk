# muP: the coordinate check and the learning-rate transfer phases across width
# (scalinglab.phases.lr_transfer) and depth (scalinglab.phases.depth_transfer, muP against
# CompleteP). Their runs train through the shared rules of train.smk (one WSD branch per run).
from scalinglab.phases import group_named


rule coord_check:
    input:
        spec="results/specs/study.json",
        train=f"{TOKENS_DIR}/train.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        csv="results/muP/coord_check.csv",
        verdict="results/muP/coord_check.json",
        figure=report(
            "results/figures/coord_check.png",
            caption="../report/coord_check.rst",
            category="muP",
        ),
    log:
        "results/logs/coord_check.log",
    benchmark:
        "results/benchmarks/coord_check.tsv"
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    params:
        data_dir=subpath(input.meta, parent=True),
    shell:
        "python -m scalinglab coord-check --config {input.spec}"
        " --data-dir {params.data_dir} --threads {threads} --csv-out {output.csv}"
        " --json-out {output.verdict} --figure-out {output.figure} > {log} 2>&1"


# the two transfer phases, width (lr_transfer) and depth (depth_transfer): the same plan and fit
# verbs on their own tables, so one definition each
for phase in ("lr_transfer", "depth_transfer"):

    rule:
        name:
            f"plan_{phase}"
        input:
            spec="results/specs/study.json",
        output:
            f"results/muP/{phase}_plan.csv",
        log:
            f"results/logs/plan_{phase}.log",
        benchmark:
            f"results/benchmarks/plan_{phase}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            verb=phase.replace("_", "-"),
        shell:
            "python -m scalinglab {params.verb} plan --config {input.spec} --out {output}"
            " > {log} 2>&1"

    rule:
        name:
            f"fit_{phase}"
        input:
            runs=group_named(TRAINING_GROUPS, phase).branch_run_jsons,
        output:
            fit=report(
                f"results/fits/{phase}.json",
                caption=f"../report/{phase}_fit.rst",
                category="muP",
            ),
            runs=f"results/muP/{phase}_runs.csv",
            figure=report(
                f"results/figures/{phase}.png",
                caption=f"../report/{phase}.rst",
                category="muP",
            ),
        log:
            f"results/logs/fit_{phase}.log",
        benchmark:
            f"results/benchmarks/fit_{phase}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            verb=phase.replace("_", "-"),
        shell:
            "python -m scalinglab {params.verb} fit --runs {input.runs} --out {output.fit}"
            " --runs-out {output.runs} --figure {output.figure} > {log} 2>&1"
