# Architecture variants (MoE on active parameters, linear attention) or parametrizations (SP
# against muP) compared by their scaling curves. The run table, its ids and every file name (from
# variants.name: results/fits/<name>.json, results/figures/<name>*.png, results/runs/<name>/) come
# from scalinglab.variants; each series is trained by the same train-stable / decay-branch verbs
# as the IsoFLOP phase, with WSD rewind branches.
from scalinglab import variants

VARIANTS = variants.PhaseFiles.of(STUDY)
VARIANTS_DIR = VARIANTS.runs_dir
VARIANTS_TABLES = VARIANTS.tables_dir
VARIANTS_SPECS = VARIANTS.specs_dir
VARIANTS_LOGS = VARIANTS.logs_dir
VARIANTS_BENCHMARKS = VARIANTS.benchmarks_dir
VARIANTS_LABELS = VARIANTS.labels
VARIANT_STABLE = training_resources(VARIANTS.spec, data_parallel=True)
VARIANT_BRANCH = training_resources(
    VARIANTS.spec, label_wildcard="vlabel", data_parallel=True
)
VARIANT_TARGETS = VARIANTS.targets


rule plan_variants:
    input:
        spec="results/specs/study.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        f"{VARIANTS_TABLES}/plan.csv",
    log:
        f"{VARIANTS_LOGS}/plan_variants.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plan --config {input.spec} --meta {input.meta}"
        " --out {output} > {log} 2>&1"


rule write_variant_spec:
    output:
        f"{VARIANTS_SPECS}/{{vseries}}.json",
    log:
        f"{VARIANTS_LOGS}/write_spec/variants/{{vseries}}.log",
    wildcard_constraints:
        vseries=_one_of(VARIANTS.series),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=VARIANTS.spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule train_stable_variant:
    input:
        spec=f"{VARIANTS_SPECS}/{{vseries}}.json",
        # the plan only gates training (epoch check); its timestamp must not retrain anything
        plan=ancient(f"{VARIANTS_TABLES}/plan.csv"),
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{VARIANTS_DIR}/{{vseries}}/stable/metrics.jsonl",
        run=f"{VARIANTS_DIR}/{{vseries}}/stable/run.json",
        checkpoints=expand(
            f"{VARIANTS_DIR}/{{{{vseries}}}}/stable/branch-{{vlabel}}.pt",
            vlabel=VARIANTS_LABELS,
        ),
    log:
        f"{VARIANTS_LOGS}/train_stable_variant/{{vseries}}.log",
    benchmark:
        f"{VARIANTS_BENCHMARKS}/train_stable_variant/{{vseries}}.tsv"
    wildcard_constraints:
        vseries=_one_of(VARIANTS.series),
    conda:
        "../envs/scalinglab.yaml"
    threads: train_threads
    resources:
        runtime=VARIANT_STABLE.runtime,
        mem_mb=VARIANT_STABLE.mem_mb,
        gpu=VARIANT_STABLE.gpu,
        gpu_model=VARIANT_STABLE.gpu_model,
        slurm_extra=VARIANT_STABLE.slurm_extra,
        processes=VARIANT_STABLE.processes,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} --processes {resources.processes} > {log} 2>&1"


rule decay_branch_variant:
    input:
        spec=f"{VARIANTS_SPECS}/{{vseries}}.json",
        checkpoint=f"{VARIANTS_DIR}/{{vseries}}/stable/branch-{{vlabel}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{VARIANTS_DIR}/{{vseries}}/{{vlabel}}/metrics.jsonl",
        run=f"{VARIANTS_DIR}/{{vseries}}/{{vlabel}}/run.json",
    log:
        f"{VARIANTS_LOGS}/decay_branch_variant/{{vseries}}_{{vlabel}}.log",
    benchmark:
        f"{VARIANTS_BENCHMARKS}/decay_branch_variant/{{vseries}}_{{vlabel}}.tsv"
    wildcard_constraints:
        vseries=_one_of(VARIANTS.series),
        vlabel=_one_of(VARIANTS_LABELS),
    conda:
        "../envs/scalinglab.yaml"
    threads: train_threads
    resources:
        runtime=VARIANT_BRANCH.runtime,
        mem_mb=VARIANT_BRANCH.mem_mb,
        gpu=VARIANT_BRANCH.gpu,
        gpu_model=VARIANT_BRANCH.gpu_model,
        slurm_extra=VARIANT_BRANCH.slurm_extra,
        processes=VARIANT_BRANCH.processes,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {wildcards.vlabel}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} --processes {resources.processes} > {log} 2>&1"


rule collect_variant_metrics:
    input:
        stable=VARIANTS.stable_run_jsons,
        branches=VARIANTS.branch_run_jsons,
    output:
        runs=f"{VARIANTS_TABLES}/runs.csv",
        curves=f"{VARIANTS_TABLES}/curves.csv",
    log:
        f"{VARIANTS_LOGS}/collect_variant_metrics.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-collect --stable {input.stable}"
        " --branches {input.branches} --runs-out {output.runs}"
        " --curves-out {output.curves} > {log} 2>&1"


rule fit_variants:
    input:
        runs=f"{VARIANTS_TABLES}/runs.csv",
    output:
        VARIANTS.fit_json,
    log:
        f"{VARIANTS_LOGS}/fit_variants.log",
    benchmark:
        f"{VARIANTS_BENCHMARKS}/fit_variants.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        seed=STUDY.seed,
        reference=VARIANTS.reference_args,
    shell:
        "python -m scalinglab variants-fit --runs {input.runs} --out {output}"
        " --seed {params.seed} {params.reference} > {log} 2>&1"


rule plot_variants_envelope:
    input:
        runs=f"{VARIANTS_TABLES}/runs.csv",
        fit=VARIANTS.fit_json,
    output:
        report(
            VARIANTS.figure("envelope"),
            caption="../report/variants_envelope.rst",
            category=VARIANTS.category,
        ),
    log:
        f"{VARIANTS_LOGS}/plot_variants_envelope.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plot envelope --runs {input.runs} --fit {input.fit}"
        " --out {output} > {log} 2>&1"


rule plot_variants_isoflop:
    input:
        runs=f"{VARIANTS_TABLES}/runs.csv",
        fit=VARIANTS.fit_json,
    output:
        report(
            VARIANTS.figure("isoflop"),
            caption="../report/variants_isoflop.rst",
            category=VARIANTS.category,
        ),
    log:
        f"{VARIANTS_LOGS}/plot_variants_isoflop.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plot isoflop --runs {input.runs} --fit {input.fit}"
        " --out {output} > {log} 2>&1"


rule plot_variants_frontier:
    input:
        runs=f"{VARIANTS_TABLES}/runs.csv",
        fit=VARIANTS.fit_json,
    output:
        report(
            VARIANTS.figure(),
            caption="../report/variants_frontier.rst",
            category=VARIANTS.category,
        ),
    log:
        f"{VARIANTS_LOGS}/plot_variants_frontier.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plot frontier --runs {input.runs} --fit {input.fit}"
        " --out {output} > {log} 2>&1"
