# Architecture variants (MoE on active parameters, linear attention) or parametrizations (SP
# against muP) compared by their scaling curves. The run table, its ids and every file name (from
# variants.name: results/fits/<name>.json, results/figures/<name>*.png, results/runs/<name>/) come
# from scalinglab.phases.variants; each series is trained by the same `train stable` / `train branch` verbs
# as the IsoFLOP phase, with WSD rewind branches (the shared rules of train.smk).
from scalinglab.phases import variants

VARIANTS = variants.PhaseFiles.of(STUDY)
VARIANTS_TABLES = VARIANTS.tables_dir
VARIANTS_LOGS = VARIANTS.logs_dir
VARIANTS_BENCHMARKS = VARIANTS.benchmarks_dir


rule plan_variants:
    input:
        spec="results/specs/study.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        f"{VARIANTS_TABLES}/plan.csv",
    log:
        f"{VARIANTS_LOGS}/plan_variants.log",
    benchmark:
        f"{VARIANTS_BENCHMARKS}/plan_variants.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants plan --config {input.spec} --meta {input.meta}"
        " --out {output} > {log} 2>&1"


rule collect_variant_metrics:
    input:
        stable=VARIANTS.stable_run_jsons,
        branches=VARIANTS.branch_run_jsons,
    output:
        runs=f"{VARIANTS_TABLES}/runs.csv",
        curves=f"{VARIANTS_TABLES}/curves.csv",
    log:
        f"{VARIANTS_LOGS}/collect_variant_metrics.log",
    benchmark:
        f"{VARIANTS_BENCHMARKS}/collect_variant_metrics.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants collect --stable {input.stable}"
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
        "python -m scalinglab variants fit --runs {input.runs} --out {output}"
        " --seed {params.seed} {params.reference} > {log} 2>&1"


# the frontier figure is <name>.png, the others <name>_<kind>.png (VARIANTS.figure)
for kind in ("envelope", "isoflop", "frontier"):

    rule:
        name:
            f"plot_variants_{kind}"
        input:
            runs=f"{VARIANTS_TABLES}/runs.csv",
            fit=VARIANTS.fit_json,
        output:
            report(
                VARIANTS.figure("" if kind == "frontier" else kind),
                caption=f"../report/variants_{kind}.rst",
                category=VARIANTS.category,
            ),
        log:
            f"{VARIANTS_LOGS}/plot_variants_{kind}.log",
        benchmark:
            f"{VARIANTS_BENCHMARKS}/plot_variants_{kind}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            kind=kind,
        shell:
            "python -m scalinglab variants plot {params.kind} --runs {input.runs}"
            " --fit {input.fit} --out {output} > {log} 2>&1"
