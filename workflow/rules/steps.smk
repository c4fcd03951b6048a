# The analysis of every phase: each `Step` of the phase registry (Phase.steps in
# scalinglab.phases) is one `python -m scalinglab` command from its inputs to its outputs, so its
# rule is this one definition; what a step reads, writes and runs lives in its phase's module.
# Rules whose inputs a checkpoint decides (the refinement rounds, laws.smk) and the data
# preparation (data.smk) are written out.
for step in phases.steps(STUDY, TRAINING_GROUPS):

    rule:
        name:
            step.name
        input:
            **step.inputs,
        output:
            **step.outputs,
            **step.report_outputs(report),
        log:
            f"results/logs/{step.name}.log",
        benchmark:
            f"results/benchmarks/{step.name}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            **step.params,
        # an f-string, so that each rule's shell text is its own command (the text Snakemake's
        # code trigger compares); Snakemake fills in {input.x}, {output.x} and {params.x} when
        # the job runs
        shell:
            f"python -m scalinglab {step.command} > {{log}} 2>&1"
