# Paper figures: published results redrawn from vendored MIT data (src/scalinglab/data/paper/)
# and the cited table src/scalinglab/published_laws.yaml. One rule per figure, from one
# definition; each is a plain call of `python -m scalinglab paper-figure NAME`.
#
# Epoch AI's Chinchilla points have no licence and are not shipped: the epoch_refit figure is a
# target only when config key `paper: {epoch_csv: PATH}` names the user's copy.
from scalinglab.plots import paper as paper_figures

PAPER_INPUTS = paper_figures.rule_inputs((config.get("paper") or {}).get("epoch_csv"))
PAPER_FIGURES = [f"results/figures/paper/{figure}.png" for figure in PAPER_INPUTS]

for figure, inputs in PAPER_INPUTS.items():

    rule:
        name:
            f"paper_{figure}"
        input:
            **inputs,
        output:
            report(
                f"results/figures/paper/{figure}.png",
                caption=f"../report/paper_{figure}.rst",
                category="Paper figures",
            ),
        log:
            f"results/logs/paper/{figure}.log",
        benchmark:
            f"results/benchmarks/paper/{figure}.tsv"
        conda:
            "../envs/scalinglab.yaml"
        params:
            figure=figure,
            options=paper_figures.option_text(inputs),
        shell:
            "python -m scalinglab paper-figure {params.figure} {params.options}"
            " --out {output} > {log} 2>&1"
