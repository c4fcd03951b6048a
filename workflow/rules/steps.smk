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
        priority: step.priority
        conda:
            "../envs/scalinglab.yaml"
        params:
            **step.params,
            # the command as a param: Snakemake evaluates a rule's shell expression again when
            # the job runs, when `step` names the loop's last step (an f-string of step.command
            # here would run that step's command in every rule)
            command=step.command_line,
            # the command's text, a plain value: the params trigger reruns a step whose command
            # changed (the shell text, which the code trigger compares, is the same in every rule)
            command_text=step.command_text,
        shell:
            "python -m scalinglab {params.command} > {log} 2>&1"
