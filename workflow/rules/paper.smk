# Paper figures: published results redrawn from vendored MIT data (src/scalinglab/data/paper/)
# and the cited table src/scalinglab/published_laws.yaml. One rule per figure; each is a plain
# call of `python -m scalinglab paper-figure NAME`.
#
# Epoch AI's Chinchilla points have no licence and are not shipped: the epoch_refit figure is a
# target only when config key `paper: {epoch_csv: PATH}` names the user's copy.

PAPER_FIGURES = [
    "results/figures/paper/cs336_isoflops.png",
    "results/figures/paper/porian_exponents.png",
    "results/figures/paper/published_laws.png",
    "results/figures/paper/published_hparams.png",
]

EPOCH_CSV = (config.get("paper") or {}).get("epoch_csv")
if EPOCH_CSV:
    PAPER_FIGURES.append("results/figures/paper/epoch_refit.png")


rule paper_cs336_isoflops:
    output:
        report(
            "results/figures/paper/cs336_isoflops.png",
            caption="../report/paper_cs336_isoflops.rst",
            category="Paper figures",
        ),
    log:
        "results/logs/paper/cs336_isoflops.log",
    benchmark:
        "results/benchmarks/paper/cs336_isoflops.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab paper-figure cs336_isoflops --out {output} > {log} 2>&1"


rule paper_porian_exponents:
    output:
        report(
            "results/figures/paper/porian_exponents.png",
            caption="../report/paper_porian_exponents.rst",
            category="Paper figures",
        ),
    log:
        "results/logs/paper/porian_exponents.log",
    benchmark:
        "results/benchmarks/paper/porian_exponents.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab paper-figure porian_exponents --out {output} > {log} 2>&1"


rule paper_published_laws:
    input:
        study_fit="results/fits/isoflop.json",
    output:
        report(
            "results/figures/paper/published_laws.png",
            caption="../report/paper_published_laws.rst",
            category="Paper figures",
        ),
    log:
        "results/logs/paper/published_laws.log",
    benchmark:
        "results/benchmarks/paper/published_laws.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab paper-figure published_laws --study-fit {input.study_fit}"
        " --out {output} > {log} 2>&1"


rule paper_published_hparams:
    output:
        report(
            "results/figures/paper/published_hparams.png",
            caption="../report/paper_published_hparams.rst",
            category="Paper figures",
        ),
    log:
        "results/logs/paper/published_hparams.log",
    benchmark:
        "results/benchmarks/paper/published_hparams.tsv"
    conda:
        "../envs/scalinglab.yaml"
    shell:
        "python -m scalinglab paper-figure published_hparams --out {output} > {log} 2>&1"


if EPOCH_CSV:

    rule paper_epoch_refit:
        input:
            data=EPOCH_CSV,
        output:
            report(
                "results/figures/paper/epoch_refit.png",
                caption="../report/paper_epoch_refit.rst",
                category="Paper figures",
            ),
        log:
            "results/logs/paper/epoch_refit.log",
        benchmark:
            "results/benchmarks/paper/epoch_refit.tsv"
        conda:
            "../envs/scalinglab.yaml"
        shell:
            "python -m scalinglab paper-figure epoch_refit --data {input.data}"
            " --out {output} > {log} 2>&1"
