# muP's coordinate check: a few AdamW steps per width inside one job. The transfer phases across
# width and depth (scalinglab.phases.lr_sweep) train through train.smk; their plan and fit are
# steps (steps.smk).
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
