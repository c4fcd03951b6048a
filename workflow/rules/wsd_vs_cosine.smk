# WSD with rewind-decay branches against cosine runs tuned to each budget, with decay-fraction
# and decay-shape ablations (scalinglab.wsd_vs_cosine). Per size: one WSD series (stable run +
# a branch per budget x fraction x shape) and one cosine series (a run per budget, each trained
# from the initialisation by its decay job).
from scalinglab import wsd_vs_cosine

WVC = phase_runs.PhaseFiles.build(
    STUDY,
    wsd_vs_cosine.plan(STUDY),
    wsd_vs_cosine.series_spec,
    "results/runs/wsd_vs_cosine",
    series_wildcard="wvc",
)
WVC_DIR = WVC.runs_dir
WSD = WVC.where("kind", "wsd", series_wildcard="wsd", label_wildcard="wlabel")
COS = WVC.where("kind", "cosine", series_wildcard="cos", label_wildcard="clabel")
WSD_STABLE = training_resources(WSD.spec)
WSD_BRANCH = training_resources(WSD.spec, label_wildcard=WSD.label_wildcard)
COS_STABLE = training_resources(COS.spec)
COS_BRANCH = training_resources(COS.spec, label_wildcard=COS.label_wildcard)

if STUDY.wsd_vs_cosine.enabled:
    HPARAM_TARGETS += [
        "results/fits/wsd_vs_cosine.json",
        "results/figures/wsd_vs_cosine.png",
    ]


rule write_wsd_vs_cosine_spec:
    output:
        "results/specs/wsd_vs_cosine/{wvc}.json",
    log:
        "results/logs/write_spec/wsd_vs_cosine/{wvc}.log",
    wildcard_constraints:
        wvc=phase_runs.one_of(WVC.series),
    localrule: True
    conda:
        "../envs/scalinglab.yaml"
    params:
        spec=WVC.spec_json,
    shell:
        "python -m scalinglab write-spec --out {output:q} {params.spec:q} 2> {log:q}"


rule train_stable_wsd:
    input:
        spec="results/specs/wsd_vs_cosine/{wsd}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{WVC_DIR}/{{wsd}}/stable/metrics.jsonl",
        run=f"{WVC_DIR}/{{wsd}}/stable/run.json",
        checkpoints=expand(
            f"{WVC_DIR}/{{{{wsd}}}}/stable/branch-{{label}}.pt", label=WSD.labels
        ),
    log:
        "results/logs/train_stable_wsd/{wsd}.log",
    benchmark:
        "results/benchmarks/train_stable_wsd/{wsd}.tsv"
    wildcard_constraints:
        wsd=phase_runs.one_of(WSD.series),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=WSD_STABLE.runtime,
        mem_mb=WSD_STABLE.mem_mb,
        gpu=WSD_STABLE.gpu,
        gpu_model=WSD_STABLE.gpu_model,
        slurm_extra=WSD_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule decay_branch_wsd:
    input:
        spec="results/specs/wsd_vs_cosine/{wsd}.json",
        checkpoint=f"{WVC_DIR}/{{wsd}}/stable/branch-{{wlabel}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{WVC_DIR}/{{wsd}}/{{wlabel}}/metrics.jsonl",
        run=f"{WVC_DIR}/{{wsd}}/{{wlabel}}/run.json",
    log:
        "results/logs/decay_branch_wsd/{wsd}_{wlabel}.log",
    benchmark:
        "results/benchmarks/decay_branch_wsd/{wsd}_{wlabel}.tsv"
    wildcard_constraints:
        wsd=phase_runs.one_of(WSD.series),
        wlabel=phase_runs.one_of(WSD.labels),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=WSD_BRANCH.runtime,
        mem_mb=WSD_BRANCH.mem_mb,
        gpu=WSD_BRANCH.gpu,
        gpu_model=WSD_BRANCH.gpu_model,
        slurm_extra=WSD_BRANCH.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {wildcards.wlabel}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule train_stable_cosine:
    input:
        spec="results/specs/wsd_vs_cosine/{cos}.json",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{WVC_DIR}/{{cos}}/stable/metrics.jsonl",
        run=f"{WVC_DIR}/{{cos}}/stable/run.json",
        checkpoints=expand(
            f"{WVC_DIR}/{{{{cos}}}}/stable/branch-{{label}}.pt", label=COS.labels
        ),
    log:
        "results/logs/train_stable_cosine/{cos}.log",
    benchmark:
        "results/benchmarks/train_stable_cosine/{cos}.tsv"
    wildcard_constraints:
        cos=phase_runs.one_of(COS.series),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=COS_STABLE.runtime,
        mem_mb=COS_STABLE.mem_mb,
        gpu=COS_STABLE.gpu,
        gpu_model=COS_STABLE.gpu_model,
        slurm_extra=COS_STABLE.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab train-stable --spec {input.spec} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule decay_branch_cosine:
    input:
        spec="results/specs/wsd_vs_cosine/{cos}.json",
        checkpoint=f"{WVC_DIR}/{{cos}}/stable/branch-{{clabel}}.pt",
        train=f"{TOKENS_DIR}/train.bin",
        val=f"{TOKENS_DIR}/val.bin",
        meta=f"{TOKENS_DIR}/meta.json",
    output:
        metrics=f"{WVC_DIR}/{{cos}}/{{clabel}}/metrics.jsonl",
        run=f"{WVC_DIR}/{{cos}}/{{clabel}}/run.json",
    log:
        "results/logs/decay_branch_cosine/{cos}_{clabel}.log",
    benchmark:
        "results/benchmarks/decay_branch_cosine/{cos}_{clabel}.tsv"
    wildcard_constraints:
        cos=phase_runs.one_of(COS.series),
        clabel=phase_runs.one_of(COS.labels),
    conda:
        "../envs/scalinglab.yaml"
    threads: 1
    resources:
        runtime=COS_BRANCH.runtime,
        mem_mb=COS_BRANCH.mem_mb,
        gpu=COS_BRANCH.gpu,
        gpu_model=COS_BRANCH.gpu_model,
        slurm_extra=COS_BRANCH.slurm_extra,
    params:
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
    shell:
        "python -m scalinglab decay-branch --spec {input.spec} --label {wildcards.clabel}"
        " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


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
        "python -m scalinglab wsd-vs-cosine-fit --config {input.spec}"
        " --runs {input.stable} {input.wsd} {input.cosine} --out {output.fit}"
        " --figure {output.figure} > {log} 2>&1"
