# Architecture variants compared by their scaling curves (MoE on active parameters, linear
# attention). The run table and its ids come from scalinglab.variants; each series is trained by
# the same train-stable / decay-branch verbs as the IsoFLOP phase, with WSD rewind branches.
from scalinglab import variants

VARIANTS = variants.PhaseFiles(STUDY, variants.plan(STUDY), "results/runs/variants")
VARIANTS_DIR = VARIANTS.runs_dir
VARIANTS_LABELS = VARIANTS.labels
VARIANT_STABLE = training_resources(VARIANTS.spec, data_parallel=True)
VARIANT_BRANCH = training_resources(
    VARIANTS.spec, label_wildcard="vlabel", data_parallel=True
)

VARIANT_TARGETS = []
if STUDY.variants.enabled:
    VARIANT_TARGETS += [
        "results/variants/plan.csv",
        "results/variants/runs.csv",
        "results/fits/variants.json",
        "results/figures/variants_envelope.png",
        "results/figures/variants_isoflop.png",
    ]


rule plan_variants:
    input:
        spec="results/specs/study.json",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        "results/variants/plan.csv",
    log:
        "results/logs/plan_variants.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plan --config {input.spec} --meta {input.meta}"
        " --out {output} > {log} 2>&1"


rule write_variant_spec:
    output:
        "results/specs/variants/{vseries}.json",
    log:
        "results/logs/write_spec/variants/{vseries}.log",
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
        spec="results/specs/variants/{vseries}.json",
        # the plan only gates training (epoch check); its timestamp must not retrain anything
        plan=ancient("results/variants/plan.csv"),
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
        "results/logs/train_stable_variant/{vseries}.log",
    benchmark:
        "results/benchmarks/train_stable_variant/{vseries}.tsv"
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
        spec="results/specs/variants/{vseries}.json",
        checkpoint=f"{VARIANTS_DIR}/{{vseries}}/stable/branch-{{vlabel}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{VARIANTS_DIR}/{{vseries}}/{{vlabel}}/metrics.jsonl",
        run=f"{VARIANTS_DIR}/{{vseries}}/{{vlabel}}/run.json",
    log:
        "results/logs/decay_branch_variant/{vseries}_{vlabel}.log",
    benchmark:
        "results/benchmarks/decay_branch_variant/{vseries}_{vlabel}.tsv"
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
        runs="results/variants/runs.csv",
        curves="results/variants/curves.csv",
    log:
        "results/logs/collect_variant_metrics.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-collect --stable {input.stable}"
        " --branches {input.branches} --runs-out {output.runs}"
        " --curves-out {output.curves} > {log} 2>&1"


rule fit_variants:
    input:
        runs="results/variants/runs.csv",
    output:
        "results/fits/variants.json",
    log:
        "results/logs/fit_variants.log",
    benchmark:
        "results/benchmarks/fit_variants.tsv"
    conda:
        "../envs/scalinglab.yaml"
    params:
        seed=STUDY.seed,
    shell:
        "python -m scalinglab variants-fit --runs {input.runs} --out {output}"
        " --seed {params.seed} > {log} 2>&1"


rule plot_variants_envelope:
    input:
        runs="results/variants/runs.csv",
        fit="results/fits/variants.json",
    output:
        report(
            "results/figures/variants_envelope.png",
            caption="../report/variants_envelope.rst",
            category="Architecture variants",
        ),
    log:
        "results/logs/plot_variants_envelope.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plot envelope --runs {input.runs} --fit {input.fit}"
        " --out {output} > {log} 2>&1"


rule plot_variants_isoflop:
    input:
        runs="results/variants/runs.csv",
        fit="results/fits/variants.json",
    output:
        report(
            "results/figures/variants_isoflop.png",
            caption="../report/variants_isoflop.rst",
            category="Architecture variants",
        ),
    log:
        "results/logs/plot_variants_isoflop.log",
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab variants-plot isoflop --runs {input.runs} --fit {input.fit}"
        " --out {output} > {log} 2>&1"
