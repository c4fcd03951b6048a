# The training rules, written once for every phase. A `{phase}` wildcard cannot serve: the stable
# rule's outputs are one checkpoint per branch label, the labels are each phase's own, and
# Snakemake must name every output before the job runs. So each TrainingGroup of the phase
# registry (scalinglab.phases) instantiates these two definitions under rule names of its own
# (`name:`), the wildcards constrained to its series and labels. With resources.branch_jobs:
# series, the branch definition is instead instantiated once per set of trained labels (its
# outputs must be named before the job runs too), and each job decays a series' branches; a
# refinement round's series are planned while the workflow runs, so its one rule names every
# label and its jobs write placeholders for the branches their plan leaves out.
from scalinglab.phases.base import TOKENS_DIR

for group in TRAINING_GROUPS:
    stable_job = JobResources.of(
        TRAINING_RESOURCES,
        group,
        series_branch_jobs=STUDY.resources.branch_jobs == "series",
    )
    branch_job = JobResources.of(TRAINING_RESOURCES, group, branch=True)
    threads = group.threads or STUDY.resources.gpus_per_run

    rule:
        name:
            f"train_stable_{group.name}"
        input:
            spec=group.spec_file("{series}"),
            # the plan only gates training (epoch check); its timestamp must not retrain anything
            plan=[ancient(group.plan)] if group.plan else [],
            train=f"{TOKENS_DIR}/train.bin",
            val=f"{TOKENS_DIR}/val.bin",
            meta=f"{TOKENS_DIR}/meta.json",
        output:
            metrics=f"{group.runs_dir}/{{series}}/stable/metrics.jsonl",
            run=f"{group.runs_dir}/{{series}}/stable/run.json",
            checkpoints=expand(
                f"{group.runs_dir}/{{{{series}}}}/stable/branch-{{label}}.pt",
                label=group.labels,
            ),
        log:
            f"results/logs/train_stable_{group.name}/{{series}}.log",
        benchmark:
            f"results/benchmarks/train_stable_{group.name}/{{series}}.tsv"
        wildcard_constraints:
            series=group.series_constraint,
        # longest first, counting the branches that wait for it (JobResources.priority)
        priority: stable_job.priority
        conda:
            "../envs/scalinglab.yaml"
        threads: threads
        resources:
            **stable_job.directive(),
        params:
            data_dir=subpath(input.meta, parent=True),
            out_dir=subpath(output.run, parent=True),
        shell:
            "python -m scalinglab train stable --spec {input.spec} --data-dir {params.data_dir}"
            " --out-dir {params.out_dir} --threads {threads}"
            " --processes {resources.processes} > {log} 2>&1"

    # resources.branch_jobs: series, one job decays a series' branches in turn. A rule per set
    # of trained labels, so that its outputs are exactly its series' branches
    batches = (
        group.branch_batches() if STUDY.resources.branch_jobs == "series" else []
    )
    for index, (labels, series_constraint, skip_untrained) in enumerate(batches):
        batch_job = JobResources.of(
            TRAINING_RESOURCES, group, branch=True, labels=labels
        )

        rule:
            name:
                f"decay_branches_{group.name}_{index}"
            input:
                spec=group.spec_file("{series}"),
                checkpoints=[
                    f"{group.runs_dir}/{{series}}/stable/branch-{label}.pt"
                    for label in labels
                ],
                train=f"{TOKENS_DIR}/train.bin",
                val=f"{TOKENS_DIR}/val.bin",
                meta=f"{TOKENS_DIR}/meta.json",
            output:
                metrics=[
                    f"{group.runs_dir}/{{series}}/{label}/metrics.jsonl"
                    for label in labels
                ],
                run=[
                    f"{group.runs_dir}/{{series}}/{label}/run.json" for label in labels
                ],
            log:
                f"results/logs/decay_branches_{group.name}/{{series}}.log",
            benchmark:
                f"results/benchmarks/decay_branches_{group.name}/{{series}}.tsv"
            wildcard_constraints:
                series=series_constraint,
            priority: batch_job.priority
            conda:
                "../envs/scalinglab.yaml"
            threads: threads
            resources:
                **batch_job.directive(),
            params:
                labels=labels,
                skip=" --skip-untrained" if skip_untrained else "",
                data_dir=subpath(input.meta, parent=True),
                out_dirs=lambda wildcards, output: [
                    os.path.dirname(path) for path in output.run
                ],
            shell:
                "python -m scalinglab train branch --spec {input.spec} --label {params.labels}"
                " --checkpoint {input.checkpoints} --data-dir {params.data_dir}"
                " --out-dir {params.out_dirs} --threads {threads}"
                " --processes {resources.processes}{params.skip} > {log} 2>&1"

    # the critical-batch runs are the measurement: their stable runs have no branch
    if group.decays and not batches:

        rule:
            name:
                f"decay_branch_{group.name}"
            input:
                spec=group.spec_file("{series}"),
                checkpoint=f"{group.runs_dir}/{{series}}/stable/branch-{{label}}.pt",
                train=f"{TOKENS_DIR}/train.bin",
                val=f"{TOKENS_DIR}/val.bin",
                meta=f"{TOKENS_DIR}/meta.json",
            output:
                metrics=f"{group.runs_dir}/{{series}}/{{label}}/metrics.jsonl",
                run=f"{group.runs_dir}/{{series}}/{{label}}/run.json",
            log:
                f"results/logs/decay_branch_{group.name}/{{series}}_{{label}}.log",
            benchmark:
                f"results/benchmarks/decay_branch_{group.name}/{{series}}_{{label}}.tsv"
            wildcard_constraints:
                series=group.series_constraint,
                label=one_of(group.labels),
            priority: branch_job.priority
            conda:
                "../envs/scalinglab.yaml"
            threads: threads
            resources:
                **branch_job.directive(),
            params:
                data_dir=subpath(input.meta, parent=True),
                out_dir=subpath(output.run, parent=True),
            shell:
                "python -m scalinglab train branch --spec {input.spec} --label {wildcards.label}"
                " --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
                " --out-dir {params.out_dir} --threads {threads}"
                " --processes {resources.processes} > {log} 2>&1"
